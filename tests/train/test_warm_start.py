"""warm_start: one submodule's weights from another run's finished stage (its best checkpoint),
with every name and shape checked, and errors that name the folder and the mismatch."""
from __future__ import annotations

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from jaxaudio.errors import CheckpointError, ConfigError
from jaxaudio.train import stages as stage_files
from jaxaudio.train.checkpoint import Checkpointer
from jaxaudio.train.state import create_train_state
from jaxaudio.train import warm_start
from jaxaudio.train.warm_start import load_submodule, selected_step


class Encoder(nnx.Module):
    def __init__(self, rngs, width=8):
        self.blocks = nnx.List([nnx.Linear(4, width, rngs=rngs), nnx.Linear(width, width, rngs=rngs)])
        self.norm = nnx.LayerNorm(width, rngs=rngs)


class Net(nnx.Module):
    def __init__(self, rngs, width=8):
        self.encoder = Encoder(rngs, width)
        self.head = nnx.Linear(width, 3, rngs=rngs)


def _finished_stage(path, nets_by_step, best):
    """A stage folder as the trainer leaves it: checkpoints of several steps, done.json naming the best."""
    with Checkpointer(path / "checkpoints", async_save=False) as ckpt:
        for step, net in nets_by_step.items():
            _, state = create_train_state(net, optax.adam(1e-3), jax.random.key(0))
            ckpt.save(step, state)
    stage_files.mark_done(str(path), {"best_checkpoint_step": best, "latest_checkpoint_step": max(nets_by_step)})


def _params(module):
    return jax.tree.map(np.asarray, nnx.state(module, nnx.Param).to_pure_dict())


def test_the_submodule_comes_from_the_best_checkpoint_and_nothing_else_changes(tmp_path):
    source = {10: Net(nnx.Rngs(1)), 20: Net(nnx.Rngs(2))}
    _finished_stage(tmp_path, source, best=10)
    assert selected_step(str(tmp_path)) == 10
    target = Net(nnx.Rngs(3))
    head_before = _params(target.head)
    load_submodule(target.encoder, str(tmp_path), ("encoder",))
    jax.tree.map(np.testing.assert_array_equal, _params(target.encoder), _params(source[10].encoder))
    jax.tree.map(np.testing.assert_array_equal, _params(target.head), head_before)
    with pytest.raises(AssertionError):   # and not the last checkpoint's
        jax.tree.map(np.testing.assert_array_equal, _params(target.encoder), _params(source[20].encoder))

    # The trainer builds models inside jit (for shapes and sharded init): loading must work there.
    def build(_):
        net = Net(nnx.Rngs(3))
        load_submodule(net.encoder, str(tmp_path), ("encoder",))
        return nnx.state(net.encoder, nnx.Param).to_pure_dict()

    warm_start._saved.cache_clear()   # read the files inside the trace, not from the cache
    traced = jax.jit(build)(0)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, traced), _params(source[10].encoder))


def test_mismatches_and_unfinished_stages_are_named(tmp_path):
    _finished_stage(tmp_path / "done", {5: Net(nnx.Rngs(1))}, best=5)
    wrong_width = r"done: params/encoder/blocks/0/bias: shape \(8,\) in the checkpoint, \(16,\) in this model"
    with pytest.raises(ConfigError, match=wrong_width):
        load_submodule(Net(nnx.Rngs(0), width=16).encoder, str(tmp_path / "done"), ("encoder",))
    with pytest.raises(ConfigError, match="params/decoder: no such parameters"):
        load_submodule(Net(nnx.Rngs(0)).encoder, str(tmp_path / "done"), ("decoder",))
    with pytest.raises(ConfigError, match="missing .*unexpected"):
        load_submodule(Net(nnx.Rngs(0)).head, str(tmp_path / "done"), ("encoder",))
    (tmp_path / "running").mkdir()
    with pytest.raises(CheckpointError, match="running: not a finished training stage"):
        load_submodule(Net(nnx.Rngs(0)).encoder, str(tmp_path / "running"), ("encoder",))
