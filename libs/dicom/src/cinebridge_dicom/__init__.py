"""DICOM networking for every CineBridge service: Upper Layer, association, DIMSE (PS3.7/8)."""
