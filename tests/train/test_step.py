"""The train step against closed forms: SGD on least squares, EMA teacher, BatchNorm stats."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxaudio.errors import NonFiniteLossError
from jaxaudio.train.mesh import batch_sharding, global_batch, make_mesh
from jaxaudio.train.sharding import state_shardings
from jaxaudio.train.state import create_train_state
from jaxaudio.train.step import check_finite, make_eval_step, make_train_step

LR = 0.1


class LinearBN(nnx.Module):
    def __init__(self, rngs):
        self.linear = nnx.Linear(3, 2, rngs=rngs)
        self.bn = nnx.BatchNorm(2, momentum=0.9, rngs=rngs)

    def __call__(self, x):
        return self.bn(self.linear(x))


def _data(step):
    rng = np.random.default_rng(step)
    return {"x": rng.normal(size=(8, 3)).astype(np.float32), "y": rng.normal(size=(8, 2)).astype(np.float32)}


def _setup(model, loss_fn, ema_decay, with_teacher=True):
    mesh = make_mesh(8, 1, 1)
    tx = optax.sgd(optax.linear_schedule(LR, 0.0, 4))
    graphdef, state = create_train_state(model, tx, jax.random.key(7), with_teacher=with_teacher)
    shardings = state_shardings(state, mesh)
    state = jax.device_put(state, shardings)
    step = make_train_step(
        graphdef,
        loss_fn,
        tx,
        state_shardings=shardings,
        batch_sharding=batch_sharding(mesh),
        ema_decay=ema_decay,
        learning_rate=optax.linear_schedule(LR, 0.0, 4),
    )
    return mesh, graphdef, state, shardings, step


def test_sgd_ema_rng_and_metrics_match_closed_form():
    traces = []

    def loss_fn(model, batch, rng, teacher, step):
        traces.append(1)
        pred = model.linear(batch["x"])
        loss = jnp.mean((pred - batch["y"]) ** 2)
        return loss, {"noise": jax.random.uniform(rng),
                      "teacher_gap": jnp.mean((teacher.linear(batch["x"]) - pred) ** 2)}

    model = LinearBN(nnx.Rngs(0))
    w, b = np.asarray(model.linear.kernel[...], np.float64), np.asarray(model.linear.bias[...], np.float64)
    mesh, _, state, _, step = _setup(model, loss_fn, ema_decay=0.6)
    tw, tb = w.copy(), b.copy()
    for s in range(3):
        data = _data(s)
        state, metrics = step(state, global_batch(data, mesh))
        x, y = data["x"].astype(np.float64), data["y"].astype(np.float64)
        residual = x @ w + b - y
        gw, gb = 2 * x.T @ residual / residual.size, 2 * residual.sum(0) / residual.size
        lr = LR * (1 - s / 4)
        assert float(metrics["loss"]) == pytest.approx(np.mean(residual**2), rel=1e-5)
        assert float(metrics["grad_norm"]) == pytest.approx(np.sqrt((gw**2).sum() + (gb**2).sum()), rel=1e-5)
        assert float(metrics["lr"]) == pytest.approx(lr, rel=1e-6)
        assert float(metrics["noise"]) == float(jax.random.uniform(jax.random.fold_in(jax.random.key(7), s)))
        w, b = w - lr * gw, b - lr * gb
        alpha = min(1 - 1 / (s + 1), 0.6)  # 0, 0.5, then capped at 0.6
        tw, tb = alpha * tw + (1 - alpha) * w, alpha * tb + (1 - alpha) * b
        np.testing.assert_allclose(np.asarray(state.params["linear"]["kernel"]), w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(state.teacher["params"]["linear"]["kernel"]), tw, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(state.teacher["params"]["linear"]["bias"]), tb, rtol=1e-5, atol=1e-6)
    assert int(state.step) == 3
    assert len(traces) == 1  # compiled once for three steps


def test_batchnorm_stats_follow_the_forward_pass_and_eval_uses_them():
    def loss_fn(model, batch, rng, teacher, step):
        teacher(batch["x"])  # the teacher's own statistics follow its own forward pass
        return jnp.mean((model(batch["x"]) - batch["y"]) ** 2), {}

    model = LinearBN(nnx.Rngs(0))
    w, b = np.asarray(model.linear.kernel[...]), np.asarray(model.linear.bias[...])
    mesh, graphdef, state, shardings, step = _setup(model, loss_fn, ema_decay=0.99)
    data = _data(0)
    state, _ = step(state, global_batch(data, mesh))
    h = data["x"].astype(np.float64) @ w + b  # BN input, from the params before the update
    mean, var = 0.1 * h.mean(0), 0.9 * 1.0 + 0.1 * h.var(0)  # momentum 0.9, biased batch variance
    for stats in (state.model_state["bn"], state.teacher["model_state"]["bn"]):
        np.testing.assert_allclose(np.asarray(stats["mean"]), mean, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(stats["var"]), var, rtol=1e-5)

    evaluate = make_eval_step(
        graphdef,
        lambda model, batch: model(batch["x"]),
        params_sharding=shardings.params,
        model_state_sharding=shardings.model_state,
        batch_sharding=batch_sharding(mesh),
    )
    test = _data(5)
    out = evaluate(state.params, state.model_state, global_batch(test, mesh))
    p = state.params
    h = test["x"] @ np.asarray(p["linear"]["kernel"]) + np.asarray(p["linear"]["bias"])
    expected = (h - mean) / np.sqrt(var + 1e-5) * np.asarray(p["bn"]["scale"]) + np.asarray(p["bn"]["bias"])
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-6)


def test_ahead_of_time_step_is_called_like_the_jit_step():
    """``step.lower(state, batch).compile()`` (scaling study, benchmarks/train_step.py) runs as
    ``(state, batch)`` and gives what the jit step gives; jax's analyses stay reachable."""
    def loss_fn(model, batch, rng, teacher, step):
        return jnp.mean((model(batch["x"]) - batch["y"]) ** 2), {}

    mesh, _, state, _, step = _setup(LinearBN(nnx.Rngs(0)), loss_fn, ema_decay=0.5)
    twin = _setup(LinearBN(nnx.Rngs(0)), loss_fn, ema_decay=0.5)[2]  # the same state; steps donate theirs
    batch = global_batch(_data(0), mesh)
    compiled = step.lower(state, batch).compile()
    assert "all-reduce" in compiled.as_text() and compiled.memory_analysis() is not None
    aot_state, aot_metrics = compiled(state, batch)
    jit_state, jit_metrics = step(twin, batch)
    assert float(aot_metrics["loss"]) == float(jit_metrics["loss"])
    for aot, jit in zip(jax.tree.leaves(aot_state.params), jax.tree.leaves(jit_state.params)):
        np.testing.assert_array_equal(np.asarray(aot), np.asarray(jit))


def test_teacher_requires_ema_decay():
    model = LinearBN(nnx.Rngs(0))
    with pytest.raises(ValueError, match="ema_decay"):
        _setup(model, lambda *a: (0.0, {}), ema_decay=None)


def test_check_finite_raises_with_the_step():
    check_finite({"loss": np.float32(0.5)}, 3)
    with pytest.raises(NonFiniteLossError) as err:
        check_finite({"loss": np.float32(np.nan), "grad_norm": np.float32(1.0)}, 17)
    assert err.value.step == 17 and np.isnan(err.value.value)
    assert "step 17" in str(err.value)
    with pytest.raises(NonFiniteLossError):
        check_finite({"loss": jnp.float32(jnp.inf)}, 2)
