"""SQL migrations of the tables the capture service owns (applied by cinebridge_common.db)."""
