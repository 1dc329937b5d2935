"""Scoring coupled runs against a coarse-grained truth (``mlbridge evaluate``)."""
