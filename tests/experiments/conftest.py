"""Smoke-trained workdirs, shared by every experiment test module of a session (training is
the expensive part; each system trains once)."""
from __future__ import annotations

import os

import pytest

from experiments import registry
from jaxaudio.train import run_record
from jaxaudio.train.trainer import Trainer


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory):
    """Where the built-in smoke set is generated, once for every system (all run at 16 kHz)."""
    return str(tmp_path_factory.mktemp("smoke_data") / "desed_synth_smoke")


def smoke_config(name: str, data_dir: str):
    """The smoke preset with its built-in set under the session's folder: ``data_dir`` for the
    SED systems (one DESED set for all), a sibling folder per other task (its own layout)."""
    config = registry.load_config(name, "smoke")
    task = registry.load(name).task
    own = os.path.join(os.path.dirname(data_dir), f"{task}_synth_smoke")
    config.data.synth_dir = data_dir if task == "sed" else own
    return config


@pytest.fixture(scope="session")
def trained(smoke_data, tmp_path_factory):
    """``trained(name) -> (system, config, workdir, final metrics)``: the smoke preset trained
    once per session into a workdir that predict and export read like a user's."""
    done = {}

    def get(name):
        if name not in done:
            system = registry.load(name)
            config = smoke_config(name, smoke_data)
            workdir = str(tmp_path_factory.mktemp(f"{name}_smoke"))
            run_record.save(workdir, name, "smoke", config)
            final = Trainer(system, config, workdir).run()
            done[name] = (system, config, workdir, final)
        return done[name]

    return get
