"""CineBridge worklist service."""
