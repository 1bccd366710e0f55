"""SQL migrations of the tables the scp service owns (applied by cinebridge_common.db)."""
