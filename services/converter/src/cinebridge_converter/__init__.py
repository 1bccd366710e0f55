"""CineBridge converter service."""
