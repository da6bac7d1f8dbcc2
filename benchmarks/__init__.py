"""Benchmark scripts: run each as `python benchmarks/<name>.py`; tests import them as modules."""
