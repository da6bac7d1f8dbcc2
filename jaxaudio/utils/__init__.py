"""Helpers every layer may use: they import nothing of jaxaudio above ``errors``."""
