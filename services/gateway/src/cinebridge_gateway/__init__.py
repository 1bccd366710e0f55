"""CineBridge gateway service."""
