"""Data: the Source protocol and its batchers (source.py), ArrayRecord records/, task readers (sed/)."""
