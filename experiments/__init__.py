"""Experiment wiring: one config per system (configs/) and one runner per system (systems/)."""
