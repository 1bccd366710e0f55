"""Numbered SQL migrations of the CineBridge database (see cinebridge_common.db)."""
