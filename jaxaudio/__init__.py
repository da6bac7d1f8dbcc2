"""jaxaudio: audio deep-learning systems as pure-functional JAX/Flax NNX models."""

__version__ = "0.1.0"
