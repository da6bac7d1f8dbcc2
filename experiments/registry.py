"""Experiment names -> their System. The only place a name becomes a System.

Adding a system: a folder ``experiments/<name>/`` with ``config.py`` and ``system.py``
(defining ``SYSTEM``), and one line here.
"""
from __future__ import annotations

import importlib

from jaxaudio.errors import ConfigError

SYSTEMS: dict[str, str] = {
    "pmam": "experiments.pmam.system:SYSTEM",
    "crnn": "experiments.crnn.system:SYSTEM",
    "matsed": "experiments.matsed.system:SYSTEM",
    "astsed": "experiments.astsed.system:SYSTEM",
    "geco": "experiments.geco.system:SYSTEM",
    "asd_ae": "experiments.asd_ae.system:SYSTEM",
    "rsic_kd": "experiments.rsic_kd.system:SYSTEM",
    "paraformer": "experiments.paraformer.system:SYSTEM",
    "ar_asr": "experiments.ar_asr.system:SYSTEM",
}
DEFAULT = "pmam"


def load(name: str):
    """The System registered as ``name``."""
    if name not in SYSTEMS:
        raise ConfigError(f"--exp: unknown experiment {name!r}; known experiments: {', '.join(sorted(SYSTEMS))}")
    module, _, attr = SYSTEMS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def load_config(name: str, preset: str):
    system = load(name)
    if preset not in system.presets:
        raise ConfigError(f"--preset: experiment {name!r} has no preset {preset!r}; presets: "
                          f"{', '.join(system.presets)}")
    return system.get_config(preset)
