"""benchmarks/train_step.py on tiny models, so the script does not rot (no timing assertions).

The memory part is checked against its closed form: on 8 simulated CPU devices the compiled
step's per-device argument bytes must equal replicated leaves + fsdp-split leaves / fsdp +
batch / (data*fsdp), counted by hand from the leaf shapes here.
"""
import dataclasses
import math

import jax
import numpy as np
import pytest

from benchmarks import train_step as bench
from experiments.registry import load_config
from jaxaudio.nn.vit import TINY
from jaxaudio.train.mesh import batch_sharding, make_mesh
from jaxaudio.train.sharding import state_shardings
from jaxaudio.train.step import make_train_step


# Big enough that the patch-embed kernel, MLP kernels and head pass the 2**14 fsdp size floor.
SMALL_VIT = dataclasses.replace(TINY, dim=64, mlp_ratio=4.0, depth=1, out_layer=None)


def test_fit_counts_makes_the_batch_divisible_by_the_shards():
    assert bench.fit_counts([8, 4, 8], 1) == [8, 4, 8]
    assert bench.fit_counts([8, 4, 8], 8) == [16, 8, 16]  # 20 -> 40
    assert bench.fit_counts([2], 8) == [8]
    assert bench.fit_counts([12, 12, 24], 8) == [12, 12, 24]


def test_crnn_tiny_step_lowers_with_the_system_wiring():
    """Tracing and lowering (no compile) catch drift in experiments/crnn/system.py's wiring."""
    case = bench.crnn_case("tiny", batch_scale=0.25, clip_seconds=1.0)
    b = load_config("crnn", "tiny").batch
    strong, weak, unlabeled = (max(1, round(n * 0.25)) for n in (b.strong, b.weak, b.unlabeled))
    assert case.examples == strong + weak + unlabeled and case.with_teacher
    assert case.batch["has_strong"].tolist() == [True] * strong + [False] * (weak + unlabeled)
    assert case.batch["has_weak"].tolist() == [False] * strong + [True] * weak + [False] * unlabeled
    mesh = make_mesh(devices=jax.devices()[:1])
    graphdef, abstract = bench.abstract_train_state(case)
    shardings = state_shardings(abstract, mesh)
    step = make_train_step(graphdef, case.loss_fn, case.tx, state_shardings=shardings,
                           batch_sharding=batch_sharding(mesh), ema_decay=case.ema_decay)
    new_state, metrics = jax.eval_shape(step, abstract, case.batch)
    assert metrics["loss"].shape == ()
    assert jax.tree.structure(new_state) == jax.tree.structure(abstract)


def test_vit_step_runs_and_reports():
    case = bench.vit_case(SMALL_VIT, batch_size=2, frames=120, n_classes=4, name="vit_small")
    mesh = make_mesh(devices=jax.devices()[:1])
    row = bench.time_case(case, mesh, repeats=2, warmup=1)
    assert row["loss_finite"] and row["batch"] == 2
    assert row["params"] == bench.count_params(bench.abstract_train_state(case)[1].params)
    assert len(row["step_times_s"]) == 2 and len(row["forward_times_s"]) == 2
    assert row["examples_per_s"] == pytest.approx(2 / row["median_step_s"])
    assert row["step_over_forward"] == pytest.approx(row["median_step_s"] / row["forward_median_s"])


@pytest.mark.slow
def test_crnn_tiny_step_runs_and_reports():
    case = bench.crnn_case("tiny", batch_scale=0.25, clip_seconds=1.0)
    row = bench.time_case(case, make_mesh(devices=jax.devices()[:1]), repeats=1, warmup=1)
    assert row["loss_finite"] and row["batch"] == 5
    assert len(row["step_times_s"]) == 1 and len(row["forward_times_s"]) == 1


def _hand_count(case, fsdp: int, shards: int) -> int:
    """Per-device bytes of the step's arguments, from the state's leaf shapes alone."""
    _, abstract = bench.abstract_train_state(case)
    total = 0
    for field in ("params", "model_state", "opt_state", "teacher"):
        for leaf in jax.tree.leaves(getattr(abstract, field)):
            nbytes = math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize
            divisible = any(d % fsdp == 0 for d in leaf.shape)
            split = fsdp > 1 and math.prod(leaf.shape) >= 2**14 and divisible
            total += nbytes // fsdp if split else nbytes
    total += 4 + 8  # step (int32) + rng key (two uint32 words)
    return total + sum(v.nbytes for v in case.batch.values()) // shards


def test_memory_matches_closed_form_and_fsdp_shrinks_arguments():
    case = bench.vit_case(SMALL_VIT, batch_size=8, frames=120, n_classes=4, name="vit_small")
    dp = bench.memory_case(case, data=8, fsdp=1)
    fsdp = bench.memory_case(case, data=1, fsdp=8)
    mixed = bench.memory_case(case, data=4, fsdp=2)
    for row, f in ((dp, 1), (fsdp, 8), (mixed, 2)):
        assert row["memory_analysis"] is not None
        assert row["expected_argument_bytes_per_device"] == _hand_count(case, f, 8)
        assert row["memory_analysis"]["argument_size"] == row["expected_argument_bytes_per_device"]
    assert dp["fsdp_sharded_state_bytes"] == 0 and 0 < fsdp["fsdp_sharded_fraction"] < 1
    dp_args = dp["memory_analysis"]["argument_size"]
    assert fsdp["memory_analysis"]["argument_size"] < mixed["memory_analysis"]["argument_size"] < dp_args
