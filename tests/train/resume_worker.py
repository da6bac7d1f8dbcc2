"""Subprocess used by test_resume.py: a tiny run that the test kills and restarts.

    python resume_worker.py train WORKDIR --total 40 --ckpt-every 10 --sleep 0.05
    python resume_worker.py save-loop DIRECTORY

``train``: a 2-layer MLP regression with Adam, noise drawn from the state's RNG each step,
batches from a stateful numpy generator whose state is checkpointed. Prints ``BATCH i`` as
each batch is drawn, writes ``final_params.npz`` and prints ``DONE`` at the end, or prints
``PREEMPTED <step>`` and exits with ``Preempted.exit_code`` on SIGTERM.

``save-loop``: saves a ~24 MB state again and again (step k holds arrays filled with k),
printing ``SAVED k`` once step k is committed, so the test can kill it mid-write.
"""
from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxaudio.train.checkpoint import Checkpointer
from jaxaudio.train.loop import LoopConfig, Preempted, train_loop
from jaxaudio.train.state import create_train_state, merge_model


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(8, 32, rngs=rngs)
        self.out = nnx.Linear(32, 1, rngs=rngs)

    def __call__(self, x):  # (batch, 8) -> (batch, 1)
        return self.out(jax.nn.gelu(self.hidden(x)))


class NumpyBatches:
    """Infinite regression batches from one numpy Generator; its bit state is the data state."""

    def __init__(self, seed: int, sleep: float = 0.0):
        self.generator = np.random.default_rng(seed)
        self.sleep = sleep
        self.drawn = 0
        self.true_w = np.linspace(-1.0, 1.0, 8).astype(np.float32)

    def __iter__(self):
        return self

    def __next__(self):
        if self.sleep:
            time.sleep(self.sleep)
        x = self.generator.standard_normal((16, 8)).astype(np.float32)
        y = (x @ self.true_w)[:, None] + 0.1 * self.generator.standard_normal((16, 1)).astype(np.float32)
        print(f"BATCH {self.drawn}", flush=True)
        self.drawn += 1
        return {"x": x, "y": y}

    def get_state(self) -> dict:
        return {"bit_generator": self.generator.bit_generator.state, "drawn": self.drawn}

    def set_state(self, state: dict) -> None:
        self.generator.bit_generator.state = state["bit_generator"]
        self.drawn = state["drawn"]


def build(seed: int):
    tx = optax.adam(1e-2)
    graphdef, state = create_train_state(MLP(nnx.Rngs(seed)), tx, jax.random.key(seed))

    @jax.jit
    def train_step(state, batch):
        noise_key = jax.random.fold_in(state.rng, state.step)
        x = batch["x"] + 0.01 * jax.random.normal(noise_key, batch["x"].shape)

        def loss_fn(params):
            model = merge_model(graphdef, params, state.model_state)
            return jnp.mean((model(x) - batch["y"]) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), {"loss": loss}

    return state, train_step


def run_train(args) -> int:
    state, train_step = build(args.seed)
    batches = NumpyBatches(args.seed, args.sleep)
    config = LoopConfig(total_steps=args.total, log_every=5, checkpoint_every=args.ckpt_every, keep=2)
    try:
        state, _ = train_loop(workdir=args.dir, state=state, train_step=train_step, batches=batches, config=config)
    except Preempted as stop:
        print(f"PREEMPTED {stop.step} drawn={batches.drawn}", flush=True)
        return stop.exit_code
    leaves = jax.tree_util.tree_flatten_with_path(state.params)[0]
    np.savez(f"{args.dir}/final_params.npz", **{jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves})
    print("DONE", flush=True)
    return 0


def run_save_loop(args) -> int:
    ckpt = Checkpointer(args.dir, keep=2, async_save=False)
    shapes = [(512, 1024)] * 12  # 12 x 2 MiB float32
    for step in range(1, 10_000):
        params = {f"w{i}": jnp.full(shape, float(step), jnp.float32) for i, shape in enumerate(shapes)}
        state = _plain_state(params, step)
        ckpt.save(step, state, data_state={"step": step})
        print(f"SAVED {step}", flush=True)
    return 0


def _plain_state(params, step):
    from jaxaudio.train.state import TrainState

    return TrainState(
        step=jnp.asarray(step, jnp.int32), params=params, model_state={}, opt_state={}, rng=jax.random.key(step)
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["train", "save-loop"])
    parser.add_argument("dir")
    parser.add_argument("--total", type=int, default=40)
    parser.add_argument("--ckpt-every", type=int, default=10)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    return run_train(args) if args.mode == "train" else run_save_loop(args)


if __name__ == "__main__":
    sys.exit(main())
