"""Registry of experiments: name -> config module and runner module.

A config module defines ``get_config(preset: str) -> ml_collections.ConfigDict``;
a runner module defines ``run(config, workdir) -> dict`` and returns the final metrics.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from jaxaudio.errors import ConfigError

# name -> (config module, runner module, one-line description)
EXPERIMENTS: dict[str, tuple[str, str, str]] = {}

DEFAULT_EXPERIMENT = None


def register(name: str, config_module: str, runner_module: str, description: str) -> None:
    EXPERIMENTS[name] = (config_module, runner_module, description)


def _lookup(name: str) -> tuple[str, str, str]:
    if name not in EXPERIMENTS:
        known = ", ".join(sorted(EXPERIMENTS)) or "(none registered)"
        raise ConfigError(f"--exp: unknown experiment {name!r}; known experiments: {known}")
    return EXPERIMENTS[name]


def load_config(name: str, preset: str):
    config_module, _, _ = _lookup(name)
    module = importlib.import_module(config_module)
    presets = getattr(module, "PRESETS", ("tiny", "paper"))
    if preset not in presets:
        raise ConfigError(
            f"--preset: experiment {name!r} has no preset {preset!r}; presets: {', '.join(presets)}"
        )
    return module.get_config(preset)


def load_runner(name: str) -> ModuleType:
    _, runner_module, _ = _lookup(name)
    return importlib.import_module(runner_module)


register("crnn", "experiments.configs.crnn", "experiments.systems.crnn",
         "DCASE task-4 CRNN baseline, mean teacher, PSDS evaluation")
register("pmam", "experiments.configs.pmam", "experiments.systems.pmam",
         "PMAM: GMM prototypes + masked audio model pre-training, mean-teacher fine-tuning, PSDS")
DEFAULT_EXPERIMENT = "pmam"
