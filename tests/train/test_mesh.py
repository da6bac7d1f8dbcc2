"""Mesh sizes, batch layout, sharding rules and the distributed-environment parsing."""
import jax
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxaudio.errors import ConfigError
from jaxaudio.train import distributed
from jaxaudio.train.mesh import batch_sharding, global_batch, make_mesh, process_batch_slice
from jaxaudio.train.sharding import (
    DEFAULT_RULES,
    create_sharded_state,
    param_shardings,
    path_to_str,
    spec_for,
    with_shardings,
)
from jaxaudio.train.state import create_train_state


@pytest.mark.parametrize(
    "sizes, shape",
    [((-1, 1, 1), (8, 1, 1)), ((2, -1, 1), (2, 4, 1)), ((1, 2, -1), (1, 2, 4)), ((2, 2, 2), (2, 2, 2))],
)
def test_make_mesh_fills_the_free_axis(sizes, shape):
    mesh = make_mesh(*sizes)
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert tuple(mesh.shape.values()) == shape
    assert mesh.devices.size == 8


@pytest.mark.parametrize(
    "sizes, words",
    [
        ((-1, 3, 1), ["mesh.fsdp=3", "8 devices"]),
        ((2, 2, 1), ["= 4", "8 devices", "-1"]),
        ((-1, -1, 1), ["only one"]),
        ((0, 1, 1), ["mesh.data"]),
    ],
)
def test_make_mesh_names_the_config_keys(sizes, words):
    with pytest.raises(ConfigError) as err:
        make_mesh(*sizes)
    for word in words:
        assert word in str(err.value)


def test_global_batch_splits_rows_over_data_and_fsdp():
    mesh = make_mesh(4, 2, 1)
    local = {"x": np.arange(16 * 3, dtype=np.float32).reshape(16, 3), "y": np.arange(16)}
    assert process_batch_slice(mesh, 16) == slice(0, 16)  # one process reads everything
    batch = global_batch(local, mesh)
    assert batch["x"].sharding == batch_sharding(mesh)
    np.testing.assert_array_equal(np.asarray(batch["x"]), local["x"])
    shard_rows = sorted(tuple(np.asarray(s.data)[:, 0]) for s in batch["x"].addressable_shards)
    assert shard_rows == [tuple(local["x"][i : i + 2, 0]) for i in range(0, 16, 2)]
    with pytest.raises(ConfigError, match="data.batch_size=12"):
        process_batch_slice(mesh, 12)


def test_spec_for_kinds():
    mesh = make_mesh(2, 2, 2)
    big = (256, 128)  # 32768 elements, above the 2**14 floor
    assert spec_for("replicate", big, mesh) == P()
    assert spec_for("fsdp", big, mesh) == P("fsdp")  # the largest dim
    assert spec_for("fsdp", (3, 64, 256), mesh) == P(None, None, "fsdp")
    assert spec_for("fsdp", (127, 129), mesh) == P()  # nothing divisible
    assert spec_for("fsdp", (64, 64), mesh) == P()  # 4096 < floor
    assert spec_for("fsdp", (64, 64), mesh, min_size=1024) == P("fsdp")
    assert spec_for("tensor_out", big, mesh) == P("fsdp", "tensor")
    assert spec_for("tensor_in", big, mesh) == P("tensor", "fsdp")
    assert spec_for("tensor_out", (8,), mesh) == P("tensor")  # column-parallel bias
    with pytest.raises(ConfigError, match="kind"):
        spec_for("rows", big, mesh)


class _Tiny(nnx.Module):
    def __init__(self, rngs):
        self.proj = nnx.Linear(64, 512, rngs=rngs)  # 32768 > floor
        self.norm = nnx.LayerNorm(512, rngs=rngs)
        self.head = nnx.Linear(512, 4, rngs=rngs)  # 2048 < floor


def test_rules_on_nnx_state_and_first_match_wins():
    mesh = make_mesh(1, 8, 1)
    _, params, _ = nnx.split(nnx.eval_shape(lambda: _Tiny(nnx.Rngs(0))), nnx.Param, ...)
    specs = {path_to_str(p): s.spec for p, s in jax.tree_util.tree_flatten_with_path(param_shardings(params, mesh))[0]}
    assert specs == {
        "head/bias": P(),
        "head/kernel": P(),
        "norm/bias": P(),
        "norm/scale": P(),
        "proj/bias": P(),
        "proj/kernel": P(None, "fsdp"),
    }
    rules = [(r"^proj/", "replicate")] + list(DEFAULT_RULES)
    specs = {path_to_str(p): s.spec
             for p, s in jax.tree_util.tree_flatten_with_path(param_shardings(params, mesh, rules))[0]}
    assert specs["proj/kernel"] == P()


def test_state_shardings_mirror_params_in_optimizer_state():
    mesh = make_mesh(2, 4, 1)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
    graphdef, state, shardings = create_sharded_state(lambda: _Tiny(nnx.Rngs(0)), tx, jax.random.key(0), mesh,
                                                      with_teacher=True)
    assert shardings.step.spec == P() and shardings.rng.spec == P()
    kernel_spec = shardings.params["proj"]["kernel"].spec
    assert kernel_spec == P(None, "fsdp")
    assert shardings.teacher["params"]["proj"]["kernel"].spec == kernel_spec
    opt = {path_to_str(p): s.spec for p, s in jax.tree_util.tree_flatten_with_path(shardings.opt_state)[0]}
    moments = [spec for path, spec in opt.items() if path.endswith("proj/kernel")]
    assert moments == [kernel_spec, kernel_spec]  # mu, nu
    assert all(spec == P() for path, spec in opt.items() if path.endswith("count"))
    # The sharded initialisation gives the same values as building the model eagerly.
    _, eager = create_train_state(_Tiny(nnx.Rngs(0)), tx, jax.random.key(0), with_teacher=True)
    np.testing.assert_array_equal(np.asarray(state.params["proj"]["kernel"]),
                                  np.asarray(eager.params["proj"]["kernel"]))
    assert state.params["proj"]["kernel"].sharding.spec == kernel_spec
    target = with_shardings(jax.eval_shape(lambda: eager), shardings)
    assert target.params["proj"]["kernel"].sharding.spec == kernel_spec


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, None),
        (
            {"JAXAUDIO_COORDINATOR": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"},
            {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3},
        ),
        (
            {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0",
             "JAX_LOCAL_DEVICE_IDS": "0,1"},
            {"coordinator_address": "h:1", "num_processes": 2, "process_id": 0, "local_device_ids": [0, 1]},
        ),
        ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "8"}, {}),
        ({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, None),
        ({"TPU_WORKER_HOSTNAMES": "a,b,c,d"}, {}),
        ({"TPU_WORKER_HOSTNAMES": "a"}, None),
        ({"JAXAUDIO_TPU_POD": "1"}, {}),
        ({"JAXAUDIO_TPU_POD": "1", "JAXAUDIO_DISTRIBUTED": "0"}, None),
    ],
)
def test_initialize_kwargs_from_env(env, expected):
    assert distributed.initialize_kwargs(env) == expected


@pytest.mark.parametrize(
    "env, word",
    [
        ({"JAXAUDIO_COORDINATOR": "h:1", "JAX_PROCESS_ID": "0"}, "JAX_NUM_PROCESSES"),
        ({"JAXAUDIO_COORDINATOR": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"}, "JAX_PROCESS_ID=2"),
        ({"JAXAUDIO_COORDINATOR": "h:1", "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"}, "JAX_NUM_PROCESSES='two'"),
    ],
)
def test_initialize_kwargs_errors_name_the_variable(env, word):
    with pytest.raises(ConfigError, match=word):
        distributed.initialize_kwargs(env)


def test_maybe_initialize_is_a_no_op_without_a_launcher(monkeypatch):
    for name in ("JAXAUDIO_COORDINATOR", "JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES",
                 "JAXAUDIO_TPU_POD"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.maybe_initialize() is False
    assert jax.process_count() == 1
