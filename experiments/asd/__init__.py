"""Shared wiring of the anomalous sound detection systems (GeCo, its baselines)."""
