"""Prediction on a user's own recordings with a trained model (files in, score tables out)."""
from jaxaudio.predict.sed import SEDPredictor, predict_files

__all__ = ["SEDPredictor", "predict_files"]
