"""data/synth."""
