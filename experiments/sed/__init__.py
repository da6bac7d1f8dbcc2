"""Wiring shared by the sound event detection systems (DESED-layout data, augmentation, outputs)."""
