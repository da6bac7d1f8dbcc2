"""Scaling studies: compile a train step over meshes, read its cost from the compiled HLO,
and predict step time on named accelerators. ``python -m jaxaudio.scaling --help``."""
