"""The one trainer on a toy regression System: stage hand-off, a run stage, a frozen teacher,
pruning masks, best-checkpoint selection and done markers."""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from jaxaudio.data.source import eval_batches, mixed_batches, padding_from_spec
from jaxaudio.train import stages as stage_files
from jaxaudio.train.checkpoint import Checkpointer
from jaxaudio.train.system import Stage, System
from jaxaudio.train.teachers import FrozenModel
from jaxaudio.train.trainer import Trainer, restore_final

DIM, OUT = 6, 2
TRUE_W = np.random.default_rng(1).standard_normal((DIM, OUT)).astype(np.float32)


class Pairs:
    """x -> y = x @ TRUE_W, a Source the batchers take."""

    def __init__(self, n=64, seed=0):
        self.x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
        self.y = self.x @ TRUE_W

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[int(i)], "y": self.y[int(i)], "index": np.int32(i)}

    def batch_spec(self):
        return {"x": ((DIM,), np.dtype(np.float32)), "y": ((OUT,), np.dtype(np.float32)),
                "index": ((), np.dtype(np.int32))}

    def padding_item(self):
        return padding_from_spec(self.batch_spec())


class Regressor(nnx.Module):
    def __init__(self, *, rngs):
        self.dense = nnx.Linear(DIM, OUT, rngs=rngs)

    def __call__(self, x, *, train: bool, rngs=None):
        return self.dense(x)


class NegMSE:
    """A toy evaluator: minus the mean squared error on held-out pairs (higher is better)."""

    primary_metric = "neg_mse"

    def __init__(self):
        self.source = Pairs(16, seed=5)
        self.calls = 0

    def run(self, predict, *, plot_dir=None, plot_prefix="", title=""):
        self.calls += 1
        errors = []
        for batch in eval_batches(self.source, 8):
            out = predict(batch)
            keep = out["index"] >= 0
            errors.append(((out["y"][keep] - self.source.y[out["index"][keep]]) ** 2).mean(-1))
        return {"neg_mse": -float(np.concatenate(errors).mean())}


def mse(model, batch, rng, teacher, step):
    err = jnp.mean((model(batch["x"], train=True) - batch["y"]) ** 2)
    return err, {"mse": err}


def config(**extra):
    c = ml_collections.ConfigDict({"seed": 0, "mesh": {"data": -1, "fsdp": 1, "tensor": 1},
                                   "eval": {"validation_split": "validation"}})
    c.update(extra)
    return c


def make_system(stage_list, evaluator=None, final="b"):
    evaluator = evaluator or NegMSE()
    return System(
        name="toy", description="toy regression", get_config=lambda preset: config(), presets=("smoke",),
        build_model=lambda cfg: Regressor(rngs=nnx.Rngs(cfg.seed)),
        stages=lambda cfg, workdir: stage_list, evaluators=lambda cfg: {"validation": evaluator},
        predict=lambda cfg: (lambda model, batch: {"y": model(batch["x"], train=False)}),
        final_stage=lambda cfg: final, eval_keys=("x",))


def batches():
    return mixed_batches([(Pairs(), 8)], seed=0)


def train_stage(name, steps=30, **kw):
    return Stage(name, steps=steps, loss=kw.pop("loss", mse), batches=batches, batch_keys=("x", "y"),
                 default_group={"lr": kw.pop("lr", 0.05)}, log_every=10, checkpoint_every=10, **kw)


def test_stages_hand_over_weights_and_finished_ones_are_skipped(tmp_path):
    seen = {}

    def fit_check(ctx):
        _, state, _ = ctx.model_of("a")
        seen["a"] = [np.asarray(x) for x in jax.tree.leaves(state.params)]
        return {"checked": True}

    stage_list = [train_stage("a"), Stage("check", run=fit_check), train_stage("b", init_from="a", lr=0.0)]
    system = make_system(stage_list)
    final = Trainer(system, config(), str(tmp_path)).run()
    # b has lr 0, so its weights are exactly a's: the hand-off went through the checkpoint
    _, state_b, _ = restore_final(system, config(), str(tmp_path))
    for got, want in zip(jax.tree.leaves(state_b.params), seen["a"]):
        np.testing.assert_array_equal(np.asarray(got), want)
    assert final["validation/student/neg_mse"] > -0.5  # a learned the map (untrained: about -DIM/...)
    for name in ("a", "check", "b", "evaluation"):
        assert stage_files.is_done(os.path.join(tmp_path, name))
    marker = os.path.join(tmp_path, "a", "done.json")
    before = os.path.getmtime(marker)
    Trainer(system, config(), str(tmp_path)).run()
    assert os.path.getmtime(marker) == before
    assert json.load(open(tmp_path / "metrics.json"))["final_eval"] == final


def test_frozen_teacher_is_read_under_stop_gradient_and_not_checkpointed(tmp_path):
    """Distil a frozen model that computes 2 * TRUE_W: the student learns the teacher's map,
    not the labels', the teacher is untouched, and the checkpoint holds only the student."""
    teacher_model = Regressor(rngs=nnx.Rngs(3))
    teacher_model.dense.kernel.value = jnp.asarray(2 * TRUE_W)
    teacher_model.dense.bias.value = jnp.zeros(OUT)
    frozen = FrozenModel.of(teacher_model)
    before = [np.asarray(x) for x in jax.tree.leaves(frozen.variables)]

    def distil(model, batch, rng, teacher, step, frozen):
        target = frozen["big"](batch["x"], train=False)
        err = jnp.mean((model(batch["x"], train=True) - target) ** 2)
        return err, {}

    stage = train_stage("b", steps=150, loss=distil, frozen={"big": lambda: frozen})
    system = make_system([stage])
    Trainer(system, config(), str(tmp_path)).run()
    _, state, _ = restore_final(system, config(), str(tmp_path))
    np.testing.assert_allclose(np.asarray(state.params["dense"]["kernel"].value), 2 * TRUE_W, atol=0.05)
    for got, want in zip(jax.tree.leaves(frozen.variables), before):
        np.testing.assert_array_equal(np.asarray(got), want)
    with Checkpointer(tmp_path / "b" / "checkpoints", async_save=False) as ckpt:
        tree = ckpt._manager.item_metadata(ckpt.latest_step())["state"]
        names = json.dumps(list(dict(getattr(tree, "tree", tree)).keys()))
    assert "big" not in names and "frozen" not in names


def test_masks_keep_pruned_weights_at_zero(tmp_path):
    def half_mask(params):
        return jax.tree.map(lambda p: (jnp.arange(p.size).reshape(p.shape) % 2).astype(p.dtype), params)

    system = make_system([train_stage("b", masks=half_mask)])
    Trainer(system, config(), str(tmp_path)).run()
    _, state, _ = restore_final(system, config(), str(tmp_path))
    kernel = np.asarray(state.params["dense"]["kernel"].value)
    assert np.all(kernel.reshape(-1)[::2] == 0.0)
    assert np.all(kernel.reshape(-1)[1::2] != 0.0)
    assert state.masks is not None


def test_best_checkpoint_is_kept_by_the_primary_metric(tmp_path):
    """Descend for 20 steps, then ascend: the best checkpoint (by neg_mse on validation) is
    from step 20, and it is kept beside the latest although keep=1."""
    def up_then_down(model, batch, rng, teacher, step):
        err = jnp.mean((model(batch["x"], train=True) - batch["y"]) ** 2)
        return jnp.where(step < 20, err, -err), {}

    evaluator = NegMSE()
    system = make_system([train_stage("b", steps=40, eval_every=10, keep=1, loss=up_then_down)], evaluator=evaluator)
    Trainer(system, config(), str(tmp_path)).run()
    assert evaluator.calls == 4 + 1  # 4 validations + the final evaluation
    with Checkpointer(tmp_path / "b" / "checkpoints", async_save=False, best_metric="student/neg_mse") as ckpt:
        steps = ckpt.all_steps()
        best = ckpt.best_step()
        best_score = ckpt.metrics(best)["student/neg_mse"]
    assert best == 20 and steps == [20, 40]
    evals = [json.loads(line) for line in open(tmp_path / "b" / "metrics.jsonl") if '"eval"' in line]
    assert best_score == max(e["student/neg_mse"] for e in evals)


def test_unknown_init_from_is_named(tmp_path):
    from jaxaudio.errors import ConfigError

    system = make_system([train_stage("b", init_from="nope")])
    with pytest.raises(ConfigError, match="no stage 'nope'"):
        Trainer(system, config(), str(tmp_path)).run()


def test_a_rerun_appends_its_invocation_and_keeps_the_training_time(tmp_path):
    """metrics.json keeps the time of the invocation that did the work; a rerun of the finished
    workdir is appended (it worked on nothing) instead of overwriting that time."""
    system = make_system([train_stage("a", steps=20), train_stage("b", init_from="a", steps=20)])
    Trainer(system, config(), str(tmp_path)).run()
    first = json.load(open(tmp_path / "metrics.json"))
    (work,) = first["invocations"]
    assert work["worked_on"] == ["a", "b", "evaluation"] and work["outcome"] == "finished"
    assert first["total_wall_seconds"] == work["seconds"] >= first["a"]["stage_seconds"] + first["b"]["stage_seconds"]

    Trainer(system, config(), str(tmp_path)).run()
    second = json.load(open(tmp_path / "metrics.json"))
    assert second["total_wall_seconds"] == first["total_wall_seconds"]
    assert second["invocations"][0] == work
    rerun = second["invocations"][1]
    assert rerun["worked_on"] == [] and rerun["outcome"] == "finished" and rerun["started"] >= work["started"]
    assert second["final_eval"] == first["final_eval"]


def test_a_stopped_invocation_is_recorded_and_counted(tmp_path):
    def fail(ctx):
        raise RuntimeError("disk full")

    system = make_system([train_stage("a", steps=20), Stage("boom", run=fail)], final="a")
    with pytest.raises(RuntimeError):
        Trainer(system, config(), str(tmp_path)).run()
    record = json.load(open(tmp_path / "metrics.json"))
    (stopped,) = record["invocations"]
    assert stopped["worked_on"] == ["a", "boom"] and stopped["outcome"] == "stopped: RuntimeError: disk full"
    assert record["total_wall_seconds"] == stopped["seconds"] > 0 and "final_eval" not in record


class Scripted(NegMSE):
    """NegMSE whose validation scores are scripted (then the true score for the final evaluation)."""

    def __init__(self, scores):
        super().__init__()
        self.scores = list(scores)

    def run(self, predict, **kw):
        true = super().run(predict, **kw)
        return {"neg_mse": self.scores.pop(0)} if self.scores else true


def test_a_stage_that_selects_its_best_checkpoint_hands_over_and_is_evaluated_from_it(tmp_path):
    """Validation at steps 10, 20, 30, 40 scores best at 20: with select="best" the next stage
    starts from step 20's weights and the final evaluation reads them, not step 40's."""
    evaluator = Scripted([-3.0, -1.0, -2.0, -4.0])
    stage_list = [train_stage("a", steps=40, eval_every=10, keep=1, select="best"),
                  train_stage("b", steps=1, lr=0.0, init_from="a")]
    system = make_system(stage_list, evaluator=evaluator, final="a")
    trainer = Trainer(system, config(), str(tmp_path))
    trainer.run()
    done = stage_files.read_done(os.path.join(tmp_path, "a"))
    assert done["best_checkpoint_step"] == 20
    with Checkpointer(tmp_path / "a" / "checkpoints", async_save=False) as ckpt:
        assert ckpt.all_steps() == [20, 40]  # the best is kept beside the latest (keep=1)
        at_20, _ = ckpt.restore(trainer.abstract_state(stage_list[0]), 20)
        at_40, _ = ckpt.restore(trainer.abstract_state(stage_list[0]), 40)
    _, selected, _ = trainer.model_of("a")
    _, handed, _ = trainer.model_of("b")  # lr 0 for one step: b's weights are what it started from
    for got_a, got_b, want, last in zip(*(jax.tree.leaves(s.params) for s in (selected, handed, at_20, at_40))):
        np.testing.assert_array_equal(np.asarray(got_a), np.asarray(want))
        np.testing.assert_array_equal(np.asarray(got_b), np.asarray(want))
        assert not np.array_equal(np.asarray(want), np.asarray(last))


def test_select_best_without_validation_is_refused():
    from jaxaudio.errors import ConfigError

    with pytest.raises(ConfigError, match="select='best' needs eval_every"):
        train_stage("a", select="best")
    with pytest.raises(ConfigError, match="select='first'"):
        train_stage("a", eval_every=5, select="first")


def test_start_edit_changes_student_and_teacher_once_at_the_hand_over(tmp_path):
    """A stage's ``start_edit`` runs on the weights it starts from (student and its new teacher), not later."""
    calls = []

    def double(model):
        calls.append(1)
        model.dense.kernel.value = 2.0 * model.dense.kernel.value

    stage_list = [train_stage("a", steps=10),
                  train_stage("b", steps=1, lr=0.0, init_from="a", ema=1.0, start_edit=double)]
    system = make_system(stage_list)
    Trainer(system, config(), str(tmp_path)).run()
    trainer = Trainer(system, config(), str(tmp_path))
    _, state_a, _ = trainer.model_of("a")
    _, state_b, _ = trainer.model_of("b")

    def kernel(params):
        return np.asarray(params["dense"]["kernel"].value)

    np.testing.assert_allclose(kernel(state_b.params), 2.0 * kernel(state_a.params), rtol=1e-6)
    np.testing.assert_allclose(kernel(state_b.teacher["params"]), 2.0 * kernel(state_a.params), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(state_b.params["dense"]["bias"].value),
                                  np.asarray(state_a.params["dense"]["bias"].value))
    assert calls   # traced inside jit
