"""CineBridge scp service."""
