"""SQL migrations of the tables the converter service owns (applied by cinebridge_common.db)."""
