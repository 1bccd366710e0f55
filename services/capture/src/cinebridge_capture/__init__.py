"""CineBridge capture service."""
