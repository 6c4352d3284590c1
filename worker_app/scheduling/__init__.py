"""Scheduled rescans of library roots: one scheduler per fleet (`soniquebay scheduler`, on the monitor host)."""
