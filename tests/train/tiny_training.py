"""Small models, data and a training run shared by the sharding and multi-host tests.

Each example is a pure function of its global index, so any split of a batch over
processes can be checked against the single-process run. To cover another model (e.g.
``jaxaudio.models.crnn.CRNN`` once it lands) add an entry to ``MODEL_CASES``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.experimental import multihost_utils

from jaxaudio.nn.attention import TransformerEncoder
from jaxaudio.train.mesh import batch_sharding, global_batch, make_mesh, process_batch_slice
from jaxaudio.train.optim import make_optimizer
from jaxaudio.train.sharding import create_sharded_state, path_to_str, state_shardings
from jaxaudio.train.state import create_train_state
from jaxaudio.train.step import make_train_step

TIME, MEL, CLASSES = 12, 16, 3
GLOBAL_BATCH = 16
TOTAL_STEPS = 5
MULTIHOST_MESH = (4, 2, 1)  # data x fsdp x tensor over 2 processes x 4 devices


def example(index: int) -> dict[str, np.ndarray]:
    """One example, determined by its global index only."""
    rng = np.random.default_rng(1000 + index)
    length = int(rng.integers(TIME // 2, TIME + 1))
    mask = np.arange(TIME) < length
    return {
        "features": rng.normal(size=(TIME, MEL)).astype(np.float32),
        "mask": mask,
        "frame_labels": (rng.random((TIME, CLASSES)) < 0.3).astype(np.float32),
        "clip_labels": (rng.random(CLASSES) < 0.5).astype(np.float32),
    }


def load_rows(indices) -> dict[str, np.ndarray]:
    items = [example(int(i)) for i in indices]
    return {key: np.stack([item[key] for item in items]) for key in items[0]}


class TransformerTagger(nnx.Module):
    """(batch, time, mel) -> (batch, time, classes) logits; MLP kernels (64x256) exceed the FSDP floor."""

    def __init__(self, rngs: nnx.Rngs):
        self.proj = nnx.Linear(MEL, 64, rngs=rngs)
        self.encoder = TransformerEncoder(1, 64, 4, 256, dropout=0.1, rngs=rngs)
        self.head = nnx.Linear(64, CLASSES, rngs=rngs)

    def __call__(self, x, mask, *, train: bool, rngs=None):
        return self.head(self.encoder(self.proj(x), mask, train=train, rngs=rngs))


def transformer_loss(model, batch, rng, teacher, step):
    """Masked frame BCE + mean-teacher consistency (exercises rng, teacher and EMA)."""
    mask = batch["mask"].astype(jnp.float32)[..., None]
    logits = model(batch["features"], batch["mask"], train=True, rngs=nnx.Rngs(dropout=rng))
    bce = optax.sigmoid_binary_cross_entropy(logits, batch["frame_labels"])
    bce = jnp.sum(bce * mask) / (jnp.sum(mask) * CLASSES)
    teacher_rngs = nnx.Rngs(dropout=jax.random.fold_in(rng, 1))
    teacher_probs = jax.nn.sigmoid(teacher(batch["features"], batch["mask"], train=True, rngs=teacher_rngs))
    consistency = (jnp.sum((jax.nn.sigmoid(logits) - jax.lax.stop_gradient(teacher_probs)) ** 2 * mask)
                   / (jnp.sum(mask) * CLASSES))
    return bce + 0.5 * consistency, {"bce": bce, "consistency": consistency}


class ConvBNTagger(nnx.Module):
    """Two conv+BatchNorm blocks, time pooling, dense head: clip logits (batch, classes)."""

    def __init__(self, rngs: nnx.Rngs):
        # No conv bias before BatchNorm: BN cancels it, so its gradient would be pure rounding noise.
        self.conv1 = nnx.Conv(1, 8, (3, 3), use_bias=False, rngs=rngs)
        self.bn1 = nnx.BatchNorm(8, momentum=0.9, rngs=rngs)
        self.conv2 = nnx.Conv(8, 16, (3, 3), use_bias=False, rngs=rngs)
        self.bn2 = nnx.BatchNorm(16, momentum=0.9, rngs=rngs)
        self.dense = nnx.Linear(MEL * 16, 64, rngs=rngs)
        self.head = nnx.Linear(64, CLASSES, rngs=rngs)

    def __call__(self, x):
        h = jax.nn.relu(self.bn1(self.conv1(x[..., None])))
        h = jax.nn.relu(self.bn2(self.conv2(h)))
        h = jnp.mean(h, axis=1).reshape(x.shape[0], -1)
        return self.head(jax.nn.relu(self.dense(h)))


def cnn_loss(model, batch, rng, teacher, step):
    logits = model(batch["features"])
    loss = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, batch["clip_labels"]))
    return loss, {}


@dataclass(frozen=True)
class ModelCase:
    make_model: Callable[[], nnx.Module]
    loss_fn: Callable
    with_teacher: bool
    fsdp_sharded: tuple[str, ...]  # parameter paths that the size floor must shard under FSDP


MODEL_CASES = {
    "transformer": ModelCase(
        lambda: TransformerTagger(nnx.Rngs(0)),
        transformer_loss,
        True,
        ("encoder/layers/0/mlp/fc_in/kernel", "encoder/layers/0/mlp/fc_out/kernel"),
    ),
    "cnn_bn": ModelCase(lambda: ConvBNTagger(nnx.Rngs(0)), cnn_loss, False, ("dense/kernel",)),
}


def _tiny_crnn():
    from jaxaudio.models.crnn import CRNN, CRNNConfig
    from jaxaudio.nn.cnn import CNNConfig

    cnn = CNNConfig(channels=(8, 16), pooling=((2, 4), (1, 4)), dropout=0.0)
    return CRNN(CRNNConfig(n_classes=CLASSES, cnn=cnn, rnn_hidden=16, rnn_layers=1, dropout=0.1), rngs=nnx.Rngs(0))


def crnn_loss(model, batch, rng, teacher, step):
    """Weak-label BCE on the student plus the weak-output consistency to the EMA teacher."""
    weak = jnp.clip(model(batch["features"], train=True, rngs=rng)["weak"], 1e-7, 1 - 1e-7)
    labels = batch["clip_labels"]
    bce = -jnp.mean(labels * jnp.log(weak) + (1 - labels) * jnp.log(1 - weak))
    teacher_weak = teacher(batch["features"], train=True, rngs=jax.random.fold_in(rng, 1))["weak"]
    consistency = jnp.mean((weak - jax.lax.stop_gradient(teacher_weak)) ** 2)
    return bce + consistency, {"bce": bce}


# Systems whose compile is too long for the default suite; tested under ``-m slow``.
SLOW_MODEL_CASES = {
    "crnn": ModelCase(_tiny_crnn, crnn_loss, True, ()),
}


def optimizer():
    """Two groups with different rates, weight decay, clipping and the exp-down schedule."""
    schedule = {"kind": "warmup_exp_down", "warmup_steps": 2, "decay_start_step": 3, "exponent": -1.0}
    return make_optimizer(
        groups=[{"pattern": r"^head/", "lr": 3e-3}],
        default={"lr": 1e-3, "weight_decay": 1e-2, "schedule": schedule},
        clip_norm=1.0,
        total_steps=TOTAL_STEPS,
    )


_CACHE: dict = {}


def run_cached(case_name: str, mesh_shape: tuple[int, int, int]):
    """``run`` on a mesh of all local devices (or one device for (1, 1, 1)), once per session."""
    key = (case_name, mesh_shape)
    if key not in _CACHE:
        devices = jax.devices()[:1] if mesh_shape == (1, 1, 1) else None
        _CACHE[key] = run(case_name, make_mesh(*mesh_shape, devices=devices), init="host")
    return _CACHE[key]


def _host_state(case_name: str):
    """Eagerly built (graphdef, numpy TrainState without rng), once per case.

    Building the model once and placing copies on each mesh keeps the test's compile
    count low; the multi-host worker uses the jit-sharded initialisation instead.
    """
    key = ("host_state", case_name)
    if key not in _CACHE:
        case = _case(case_name)
        graphdef, state = create_train_state(case.make_model(), optimizer(), seed_key(), with_teacher=case.with_teacher)
        _CACHE[key] = (graphdef, jax.device_get(state.replace(rng=None)))
    return _CACHE[key]


def seed_key():
    return jax.random.key(42)


def run(case_name: str, mesh, steps: int = TOTAL_STEPS, init: str = "jit"):
    """Train ``steps`` steps on ``mesh`` in float32 at highest matmul precision.

    Returns losses, params gathered to every process, the example indices this process
    read per step, the shardings and the final state.
    """
    with jax.default_matmul_precision("highest"):
        return _run(case_name, mesh, steps, init)


def _case(case_name: str) -> ModelCase:
    return MODEL_CASES[case_name] if case_name in MODEL_CASES else SLOW_MODEL_CASES[case_name]


def _run(case_name: str, mesh, steps: int, init: str):
    case = _case(case_name)
    tx = optimizer()
    traces = [0]

    def counted_loss(*args):
        traces[0] += 1  # runs once per trace of the step, never per executed step
        return case.loss_fn(*args)

    if init == "jit":
        graphdef, state, shardings = create_sharded_state(
            case.make_model, tx, seed_key(), mesh, with_teacher=case.with_teacher
        )
    else:
        graphdef, host_state = _host_state(case_name)
        host_state = host_state.replace(rng=seed_key())
        shardings = state_shardings(host_state, mesh)
        state = jax.device_put(host_state, shardings)
    step = make_train_step(
        graphdef,
        counted_loss,
        tx,
        state_shardings=shardings,
        batch_sharding=batch_sharding(mesh),
        ema_decay=0.9 if case.with_teacher else None,
    )
    rows = process_batch_slice(mesh, GLOBAL_BATCH)
    losses, read = [], []
    for s in range(steps):
        indices = s * GLOBAL_BATCH + np.arange(GLOBAL_BATCH)[rows]
        read.append(indices.tolist())
        state, metrics = step(state, global_batch(load_rows(indices), mesh))
        losses.append(metrics["loss"])
    losses = [float(np.asarray(loss)) for loss in losses]
    gathered = multihost_utils.process_allgather(state.params, tiled=True)
    params = {path_to_str(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(gathered)[0]}
    return {
        "losses": losses,
        "params": params,
        "traces": traces[0],
        "read": read,
        "shardings": shardings,
        "state": state,
    }
