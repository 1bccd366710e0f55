"""SQL migrations of the tables the gateway service owns (applied by cinebridge_common.db)."""
