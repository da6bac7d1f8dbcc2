"""Runners: ``run(config, workdir) -> dict`` wires data, model, training and evaluation of one system."""
