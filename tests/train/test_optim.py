"""Optimizer groups, clipping and schedules against hand computations."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaudio.errors import ConfigError
from jaxaudio.train.optim import group_labels, make_lr_schedule, make_optimizer
from jaxaudio.train.schedules import linear_rampup, logistic_rampup, noam, sigmoid_rampup, warmup_exp_down
from jaxaudio.train.sharding import path_to_str

B1, B2, EPS = 0.9, 0.999, 1e-8


def _params():
    rng = np.random.default_rng(0)
    return {
        "encoder": {"w": rng.normal(size=(3, 4)).astype(np.float32)},
        "head": {"w": rng.normal(size=(4, 2)).astype(np.float32), "b": rng.normal(size=(2,)).astype(np.float32)},
        "other": {"w": rng.normal(size=(5,)).astype(np.float32)},
    }


def _grads(step):
    rng = np.random.default_rng(100 + step)
    scale = [3.0, 0.5, 8.0][step]  # the clip factor changes from step to step
    grads = {k: {n: (scale * rng.normal(size=v.shape)).astype(np.float32) for n, v in d.items()}
             for k, d in _params().items()}
    grads["encoder"]["w"] *= 1000.0  # frozen: must not enter the clipping norm
    return grads


SCHEDULE = {"kind": "warmup_exp_down", "warmup_steps": 2, "warmup_from": 0.1, "decay_start_step": 1, "exponent": -2.0}
GROUPS = [
    {"pattern": r"^encoder/", "lr": "frozen"},
    {"pattern": r"^head/", "lr": 0.1, "weight_decay": 0.0, "schedule": None},
]
DEFAULT = {"lr": 0.01, "weight_decay": 0.5, "schedule": SCHEDULE}
CLIP, TOTAL = 1.0, 3


def _scale(step):
    """warmup 0.1 -> 1 over 2 steps; exp(-2 phi^2) after step 1, phi over [1, 3]."""
    return [0.1, 0.1 + 0.9 * 0.5, math.exp(-2.0 * 0.25)][step]


def _reference(steps, clip=CLIP):
    """AdamW as written in the PyTorch docs, in numpy, with frozen params left out."""
    params = {k: {n: v.astype(np.float64) for n, v in d.items()} for k, d in _params().items()}
    m = {k: {n: np.zeros_like(v) for n, v in d.items()} for k, d in params.items() if k != "encoder"}
    v = {k: {n: np.zeros_like(x) for n, x in d.items()} for k, d in m.items()}
    for step in range(steps):
        grads = _grads(step)
        norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2))
                             for k, d in grads.items() if k != "encoder" for g in d.values()))
        factor = min(1.0, clip / norm) if clip else 1.0
        t = step + 1
        for group in m:
            lr, wd = (0.1, 0.0) if group == "head" else (0.01 * _scale(step), 0.5)
            for name in m[group]:
                g = grads[group][name] * factor
                p = params[group][name]
                p -= lr * wd * p
                m[group][name] = B1 * m[group][name] + (1 - B1) * g
                v[group][name] = B2 * v[group][name] + (1 - B2) * g * g
                m_hat, v_hat = m[group][name] / (1 - B1**t), v[group][name] / (1 - B2**t)
                p -= lr * m_hat / (np.sqrt(v_hat) + EPS)
    return params


def _optax_run(steps):
    tx = make_optimizer(GROUPS, DEFAULT, clip_norm=CLIP, total_steps=TOTAL)
    params = jax.tree.map(jnp.asarray, _params())
    state = tx.init(params)
    update = jax.jit(tx.update)
    all_updates = []
    for step in range(steps):
        updates, state = update(jax.tree.map(jnp.asarray, _grads(step)), state, params)
        all_updates.append(updates)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
    return params, state, all_updates


def test_adamw_groups_match_hand_computation():
    params, _, _ = _optax_run(3)
    expected = _reference(3)
    for group in ("head", "other"):
        for name, value in expected[group].items():
            np.testing.assert_allclose(np.asarray(params[group][name]), value, rtol=2e-5, atol=1e-6,
                                       err_msg=f"{group}/{name}")
    # The comparison can tell: without clipping the reference lands elsewhere.
    unclipped = _reference(3, clip=None)
    assert np.max(np.abs(unclipped["other"]["w"] - expected["other"]["w"])) > 1e-3


def test_frozen_group_gets_zero_updates_and_no_moments():
    params, state, updates = _optax_run(2)
    for u in updates:
        assert np.all(np.asarray(u["encoder"]["w"]) == 0.0)
    np.testing.assert_array_equal(np.asarray(params["encoder"]["w"]), _params()["encoder"]["w"])
    paths = [path_to_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
    assert not [p for p in paths if "encoder" in p]
    assert [p for p in paths if p.endswith("head/w")]  # the trained groups do keep moments


def test_group_labels_first_match_and_zero_lr_freezes():
    groups = [{"pattern": r"^head/b", "lr": 0}, {"pattern": r"^head/", "lr": 1e-3, "name": "head"}]
    labels = group_labels(_params(), groups, {"lr": 1e-4})
    assert labels == {"encoder": {"w": "default"}, "head": {"w": "head", "b": "frozen"}, "other": {"w": "default"}}


@pytest.mark.parametrize(
    "groups, default, clip, word",
    [
        ([{"lr": 1.0}], {"lr": 1.0}, None, "optim.groups[0]"),
        ([{"pattern": "(", "lr": 1.0}], {"lr": 1.0}, None, "not a valid regex"),
        ([], {}, None, "optim.default"),
        ([], {"lr": 1.0}, -1.0, "optim.clip_norm"),
        ([], {"lr": 1.0, "schedule": {"kind": "cosine"}}, None, "schedule.kind"),
    ],
)
def test_optimizer_config_errors(groups, default, clip, word):
    with pytest.raises(ConfigError) as err:
        make_optimizer(groups, default, clip, total_steps=10)
    assert word in str(err.value)


def test_warmup_exp_down_hand_values():
    schedule = warmup_exp_down(2.0, 20, warmup_steps=4, warmup_from=0.1, decay_start_step=10, exponent=-1.5)
    expected = {
        0: 2.0 * 0.1,
        2: 2.0 * (0.1 + 0.9 * 0.5),
        4: 2.0,
        10: 2.0,
        15: 2.0 * math.exp(-1.5 * 0.25),  # phi = 0.5
        20: 2.0 * math.exp(-1.5),  # phi = 1
        25: 2.0 * math.exp(-1.5),  # clipped
    }
    for step, value in expected.items():
        assert float(schedule(step)) == pytest.approx(value, rel=1e-6), step
    assert float(jax.jit(schedule)(jnp.int32(15))) == pytest.approx(1.374578558, rel=1e-6)
    assert float(make_lr_schedule(3.0, None, 10)(7)) == 3.0
    with pytest.raises(ConfigError, match="decay_start_step"):
        warmup_exp_down(1.0, 10, decay_start_step=10)


def test_noam_peaks_at_warmup():
    schedule = noam(1.0, warmup_steps=100)
    assert float(schedule(99)) == pytest.approx(1.0, rel=1e-6)  # s = 100
    assert float(schedule(0)) == pytest.approx(100**0.5 * 100**-1.5, rel=1e-6)
    assert float(schedule(399)) == pytest.approx(0.5, rel=1e-6)  # (400/100)^-0.5


def test_rampups_hand_values():
    assert float(sigmoid_rampup(0, 10)) == pytest.approx(math.exp(-5.0), rel=1e-6)
    assert float(sigmoid_rampup(5, 10)) == pytest.approx(math.exp(-1.25), rel=1e-6)
    assert float(sigmoid_rampup(12, 10)) == 1.0
    assert float(logistic_rampup(5, 10)) == pytest.approx(0.5, rel=1e-6)
    assert float(logistic_rampup(0, 10)) == pytest.approx(1.0 / (1.0 + math.exp(5.0)), rel=1e-6)
    assert float(linear_rampup(3, 12)) == 0.25
    assert float(linear_rampup(30, 12)) == 1.0
    assert float(sigmoid_rampup(3, 0)) == 1.0


def test_warmup_cosine_is_linear_then_half_cosine():
    s = make_lr_schedule(2.0, {"kind": "warmup_cosine", "warmup_steps": 10, "end_fraction": 0.1}, 110)
    assert float(s(0)) == 0.0 and abs(float(s(5)) - 1.0) < 1e-6 and abs(float(s(10)) - 2.0) < 1e-6
    # halfway through the decay: end + (peak - end) * (1 + cos(pi / 2)) / 2
    assert abs(float(s(60)) - (0.2 + 1.8 * 0.5)) < 1e-5
    assert abs(float(s(110)) - 0.2) < 1e-6
    with pytest.raises(ConfigError, match="warmup_steps"):
        make_lr_schedule(1.0, {"kind": "warmup_cosine", "warmup_steps": 200}, 100)
