"""CineBridge common library: what every service shares (settings, bus, db, store, UIDs)."""

__version__ = "0.1.0"
