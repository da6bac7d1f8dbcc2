"""Make the shared generator `random_sed.py` importable by the metric tests.

A `tests` package that a dependency installs into site-packages shadows ours, so the helper
is put on the path by folder rather than imported as `tests.metrics.random_sed`.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
