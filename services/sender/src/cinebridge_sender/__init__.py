"""CineBridge sender service."""
