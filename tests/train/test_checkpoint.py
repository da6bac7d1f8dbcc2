"""Checkpointer: exact round trips, retention (latest N + best), errors, cross-mesh restore."""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P, SingleDeviceSharding

from jaxaudio.errors import CheckpointError
from jaxaudio.train.checkpoint import Checkpointer, abstract_like
from jaxaudio.train.state import TrainState, create_train_state


class Net(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, width: int = 16):
        self.dense = nnx.Linear(8, width, rngs=rngs)
        self.norm = nnx.BatchNorm(width, rngs=rngs)
        self.blocks = nnx.List([nnx.Linear(width, width, rngs=rngs) for _ in range(2)])

    def __call__(self, x):  # (batch, 8) -> (batch, width)
        x = self.norm(self.dense(x))
        for block in self.blocks:
            x = block(x)
        return x


def _state(seed=0, width=16) -> TrainState:
    _, state = create_train_state(Net(nnx.Rngs(seed), width), optax.adam(1e-3), jax.random.key(seed), with_teacher=True)
    # Make every leaf distinct from its initial value so a restore of defaults would show.
    bump = jax.random.normal(jax.random.key(seed + 100), ())
    return state.replace(
        step=jnp.asarray(7, jnp.int32),
        opt_state=jax.tree.map(lambda x: x + 1 if jnp.issubdtype(x.dtype, jnp.floating) else x + 3, state.opt_state),
        model_state=jax.tree.map(lambda x: x + bump, state.model_state),
    )


def _assert_equal_trees(got, want):
    got_leaves, got_def = jax.tree_util.tree_flatten(got)
    want_leaves, want_def = jax.tree_util.tree_flatten(want)
    assert got_def == want_def
    for g, w in zip(got_leaves, want_leaves):
        if jnp.issubdtype(w.dtype, jax.dtypes.prng_key):
            assert g.dtype == w.dtype
            g, w = jax.random.key_data(g), jax.random.key_data(w)
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


def test_round_trip_is_exact_including_typed_key_teacher_and_data_state(tmp_path):
    state = _state()
    data_state = {"epoch": 2, "index": 123, "bit_generator": {"state": 2**100 + 7, "inc": 5}}
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.save(7, state, data_state=data_state)
        ckpt.wait()
        restored, got_data = ckpt.restore(abstract_like(state))
    _assert_equal_trees(restored, state)
    assert got_data == data_state
    # The restored RNG draws the same numbers as the original.
    assert jax.random.uniform(restored.rng) == jax.random.uniform(state.rng)


def test_bytes_data_state_and_absent_data_state(tmp_path):
    state = _state()
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        ckpt.save(1, state, data_state=b'{"grain": 1}\x00\xff')
        ckpt.save(2, state)
        assert ckpt.restore(abstract_like(state), step=1)[1] == b'{"grain": 1}\x00\xff'
        assert ckpt.restore(abstract_like(state))[1] is None


def test_saving_an_existing_step_is_skipped(tmp_path):
    state = _state()
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        assert ckpt.save(3, state)
        assert not ckpt.save(3, state.replace(step=jnp.asarray(99, jnp.int32)), force=True)
        assert int(ckpt.restore(abstract_like(state))[0].step) == 7


def test_keeps_latest_n_plus_best_by_metric(tmp_path):
    state = _state()
    accuracy = {2: 0.9, 4: 0.3, 6: 0.5}  # best at step 2, then it only gets worse
    with Checkpointer(tmp_path, keep=2, best_metric="acc", best_mode="max", async_save=False) as ckpt:
        for step in range(1, 8):
            metrics = {"acc": accuracy[step]} if step in accuracy else None
            ckpt.save(step, state, metrics=metrics)
        assert ckpt.all_steps() == [2, 6, 7]
        assert ckpt.best_step() == 2
        assert ckpt.metrics(2) == {"acc": 0.9}
    # A new manager on the same directory sees the same retention and ranking.
    with Checkpointer(tmp_path, keep=2, best_metric="acc", async_save=False) as again:
        again.save(8, state)
        assert again.all_steps() == [2, 7, 8]


def test_best_mode_min(tmp_path):
    state = _state()
    with Checkpointer(tmp_path, keep=1, best_metric="loss", best_mode="min", async_save=False) as ckpt:
        for step, loss in [(1, 3.0), (2, 1.0), (3, 2.0), (4, 5.0)]:
            ckpt.save(step, state, metrics={"loss": loss})
        assert ckpt.all_steps() == [2, 4]
        assert ckpt.best_step() == 2


def test_restore_from_empty_directory_names_it(tmp_path):
    with Checkpointer(tmp_path / "ckpts") as ckpt:
        with pytest.raises(CheckpointError, match=str(tmp_path / "ckpts")):
            ckpt.restore(abstract_like(_state()))
        with pytest.raises(CheckpointError, match="no checkpoint"):
            ckpt.restore(abstract_like(_state()), step=5)


def test_restore_into_a_different_model_names_the_keys(tmp_path):
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        ckpt.save(1, _state(width=16))
        with pytest.raises(CheckpointError) as info:
            ckpt.restore(abstract_like(_state(width=32)))
        assert "params/dense/kernel/value: saved (8, 16), expected (8, 32)" in str(info.value)
        assert str(tmp_path) in str(info.value)

        no_teacher = _state().replace(teacher=None)
        with pytest.raises(CheckpointError, match=r"not in the model: \['teacher/"):
            ckpt.restore(abstract_like(no_teacher))


def test_partially_written_step_is_ignored_and_cleaned(tmp_path):
    state = _state()
    with Checkpointer(tmp_path, async_save=False) as ckpt:
        ckpt.save(1, state)
    # What a write cut short looks like on a local disk: a tmp folder that never got renamed.
    torn = tmp_path / "2.orbax-checkpoint-tmp"
    (torn / "state").mkdir(parents=True)
    (torn / "state" / "garbage").write_bytes(b"\x00" * 100)
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.latest_step() == 1
        restored, _ = ckpt.restore(abstract_like(state))
    _assert_equal_trees(restored, state)
    assert not torn.exists()


def _placed(state, sharding_for):
    return jax.tree.map(lambda x: jax.device_put(x, sharding_for(x)), state)


def _eight_way(mesh):
    """Shard each array's first dimension over all 8 devices where it divides, else replicate."""

    def sharding_for(x):
        if x.ndim >= 1 and x.shape[0] % 8 == 0:
            return NamedSharding(mesh, P("data"))
        return NamedSharding(mesh, P())

    return sharding_for


def test_saved_on_8_devices_restores_on_1_and_back(tmp_path):
    assert jax.device_count() == 8
    mesh = jax.make_mesh((8,), ("data",))
    one = SingleDeviceSharding(jax.devices()[0])
    state = _state(width=16)
    sharded = _placed(state, _eight_way(mesh))
    kernel = sharded.params["blocks"][0]["kernel"].value
    assert len(kernel.sharding.device_set) == 8 and kernel.addressable_shards[0].data.shape == (2, 16)

    with Checkpointer(tmp_path / "from8", async_save=False) as ckpt:
        ckpt.save(1, sharded)
        single_abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one), state)
        restored, _ = ckpt.restore(single_abstract)
    _assert_equal_trees(restored, state)
    for leaf in jax.tree.leaves(restored):
        assert leaf.sharding.device_set == {jax.devices()[0]}

    with Checkpointer(tmp_path / "from1", async_save=False) as ckpt:
        ckpt.save(1, _placed(state, lambda x: one))
        restored, _ = ckpt.restore(abstract_like(sharded))
    _assert_equal_trees(restored, state)
    kernel = restored.params["blocks"][0]["kernel"].value
    assert kernel.sharding == NamedSharding(mesh, P("data"))
    assert len(kernel.sharding.device_set) == 8
    assert restored.rng.sharding == NamedSharding(mesh, P())


def test_weights_restore_even_when_the_optimizer_changed(tmp_path):
    """A later stage (or an exporter) reads only the weights: a checkpoint written with Adam
    restores into a layout whose optimizer is SGD with momentum, without its optimizer state."""
    from jaxaudio.train.checkpoint import WEIGHTS

    state = _state(seed=3)
    with Checkpointer(tmp_path / "ckpt", async_save=False) as ckpt:
        ckpt.save(5, state)
        _, other = create_train_state(Net(nnx.Rngs(9)), optax.sgd(0.1, momentum=0.9), jax.random.key(1),
                                      with_teacher=True)
        with pytest.raises(CheckpointError, match="does not match"):
            ckpt.restore(abstract_like(other))
        got, _ = ckpt.restore(abstract_like(other), only=WEIGHTS)
    assert got.opt_state is None and got.rng is None and int(got.step) == int(state.step)
    _assert_equal_trees(got.params, state.params)
    _assert_equal_trees(got.teacher, state.teacher)
