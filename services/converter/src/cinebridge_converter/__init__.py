"""CineBridge converter service: snapshots and recordings to DICOM Part 10 instances."""

__version__ = "0.1.0"
