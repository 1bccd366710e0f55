"""SQL migrations of the tables the sender service owns (applied by cinebridge_common.db)."""
