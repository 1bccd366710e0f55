"""SQL migrations of the tables the worklist service owns (applied by cinebridge_common.db)."""
