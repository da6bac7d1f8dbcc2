"""DCASE task-4 CRNN baseline."""
