"""Evaluators: run a predict function over a data source, return ``{metric: value}`` + plots."""
