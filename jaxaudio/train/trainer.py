"""The one trainer: ``fit(system, stage, workdir, config)`` and ``run(system, config, workdir)``.

Why one: every system used to assemble mesh, state, jit step, loop, checkpoints, evaluation
and done markers by hand, and each copy drifted. Here a System only declares its stages; the
trainer owns

- the mesh (``config.mesh``) and parameter layouts (``config.sharding.rules``, then the
  defaults; a rule that cannot apply is logged),
- state creation, or the restore of the stage named by ``init_from`` (weights only),
- frozen models (loaded once, passed to the step, never checkpointed) and pruning masks,
- the jit step, the loop (resume, SIGTERM, non-finite checks), checkpoints (latest N plus
  the best by the primary validation metric when the stage evaluates),
- the final evaluation of student and teacher on every evaluator, and the done markers.

Weights flow between stages through checkpoints, so a run stopped anywhere resumes from the
stage and step it reached and a finished stage is never redone.
"""
from __future__ import annotations

import copy
import json
import os
import time
from datetime import datetime, timezone
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxaudio.errors import CheckpointError, ConfigError
from jaxaudio.io import paths
from jaxaudio.train import distributed, run_record, stages as stage_files
from jaxaudio.train.checkpoint import abstract_like
from jaxaudio.train.log import get_logger
from jaxaudio.train.loop import LoopConfig, train_loop
from jaxaudio.train.mesh import batch_sharding, global_batch, make_mesh, replicated
from jaxaudio.train.optim import make_lr_schedule, make_optimizer
from jaxaudio.train.sharding import abstract_sharded_state, create_sharded_state, report_unused_rules, resolve_rules
from jaxaudio.train.state import split_model
from jaxaudio.train.step import make_eval_step, make_train_step
from jaxaudio.train.system import Stage, StageContext, System
from jaxaudio.train.teachers import apply_masks

LOG = get_logger("jaxaudio.trainer")
EVALUATION = "evaluation"
RUN_SUMMARY = "metrics.json"


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def stage_optimizer(stage: Stage):
    """(tx, the lr schedule logged per step) of a training stage."""
    tx = make_optimizer(list(stage.groups), dict(stage.default_group), stage.clip_norm, stage.steps)
    logged = dict(stage.default_group)
    if stage.lr_group is not None:
        match = [g for g in stage.groups if g.get("name") == stage.lr_group]
        if not match:
            raise ConfigError(f"stage {stage.name}: lr_group {stage.lr_group!r} names no group")
        logged = {**logged, **match[0]}
    return tx, make_lr_schedule(logged.get("lr", 0.0), logged.get("schedule"), stage.steps)


class Trainer:
    """One run of a System: its config, workdir, mesh and stages by name."""

    def __init__(self, system: System, config, workdir: str, *, mesh=None):
        self.system, self.config, self.workdir = system, config, workdir
        self.mesh = mesh if mesh is not None else make_mesh(**config.mesh)
        self.bsharding = batch_sharding(self.mesh)
        self._stages: Optional[list[Stage]] = None
        sharding = config.get("sharding") or {}
        self.rules = resolve_rules(tuple(sharding.get("rules", ()) or ()), system.mesh_rules(config) or ())
        self._rules_checked = False

    # ----------------------------------------------------------------- stages
    @property
    def stages(self) -> list[Stage]:
        if self._stages is None:
            self._stages = list(self.system.stages(self.config, self.workdir))
            names = [s.name for s in self._stages]
            if len(set(names)) != len(names) or EVALUATION in names:
                raise ConfigError(f"{self.system.name}: stage names must be unique and not {EVALUATION!r}: {names}")
        return self._stages

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise ConfigError(f"{self.system.name}: no stage {name!r}; stages: {[s.name for s in self.stages]}")

    def path(self, name: str) -> str:
        return stage_files.stage_dir(self.workdir, name)

    # ------------------------------------------------------------------ state
    def optimizer(self, stage: Stage):
        return stage_optimizer(stage)

    def _model_fn(self, stage: Optional[Stage] = None):
        """The model ``stage`` trains: its own (``Stage.model``, a distillation teacher) or the System's."""
        if stage is not None and stage.model is not None:
            return stage.model
        return lambda: self.system.build_model(self.config)

    def _key(self):
        return jax.random.key(self.config.seed)

    def fresh_state(self, stage: Stage, tx):
        graphdef, state, shardings = create_sharded_state(self._model_fn(stage), tx, self._key(), self.mesh, self.rules,
                                                          with_teacher=stage.has_teacher)
        if not self._rules_checked:
            report_unused_rules(state.params, self.mesh, self.rules, log=LOG.warning)
            self._rules_checked = True
        if stage.masks is not None:
            masks = jax.jit(stage.masks, out_shardings=shardings.params)(state.params)
            shardings = shardings.replace(masks=shardings.params)
            state = state.replace(params=apply_masks(state.params, masks), masks=masks)
        return graphdef, state, shardings

    def continued_state(self, stage: Stage, tx):
        """(graphdef, state, shardings) of a stage that starts from ``stage.init_from``'s final
        weights: restored straight into this stage's layout, with a new optimizer state, step 0
        and the run's RNG. No fresh model is initialised (for a large model that init is a
        compile of its own), and the result equals a fresh state whose weights were replaced.
        """
        previous = self.stage(stage.init_from)
        abstract = self.abstract_state(stage, tx)
        shardings = jax.tree.map(lambda a: a.sharding, abstract)
        prev = self.restore_selected(previous, self.abstract_state(previous, tx))
        graphdef = split_model(self._nnx_eval_shape(stage))[0]
        fresh = abstract.replace(
            step=jax.device_put(jnp.zeros((), jnp.int32), shardings.step),
            opt_state=jax.jit(tx.init, out_shardings=shardings.opt_state)(prev.params),
            rng=jax.device_put(self._key(), shardings.rng),
            teacher=abstract.teacher, masks=None)  # a teacher placeholder: carry_weights fills it
        state = stage_files.carry_weights(fresh, prev,
                                          teacher_from_student=stage.has_teacher and not previous.has_teacher)
        if stage.start_edit is not None:
            state = _edited(stage.start_edit, graphdef, state, shardings)
        if stage.masks is not None and state.masks is None:
            masks = jax.jit(stage.masks, out_shardings=shardings.params)(state.params)
            state = state.replace(params=apply_masks(state.params, masks), masks=masks)
        elif stage.masks is None:
            state = state.replace(masks=None)
        return graphdef, state, shardings

    def abstract_state(self, stage: Stage, tx=None):
        tx = tx if tx is not None else self.optimizer(stage)[0]
        abstract = abstract_sharded_state(self._model_fn(stage), tx, self._key(), self.mesh, self.rules,
                                          with_teacher=stage.has_teacher)
        if stage.masks is not None:
            abstract = abstract.replace(masks=abstract.params)
        return abstract

    def model_of(self, name: Optional[str]):
        """(graphdef, state, shardings): the final weights of stage ``name``, or a fresh System model."""
        if name is None:
            stage = next((s for s in self.stages if s.trains and s.model is None), Stage("fresh", steps=1))
            return self.fresh_state(stage, self.optimizer(stage)[0])
        stage = self.stage(name)
        if not stage.trains:
            raise ConfigError(f"stage {name!r} does not train, so it has no model")
        graphdef = split_model(self._nnx_eval_shape(stage))[0]
        abstract = self.abstract_state(stage)
        state = self.restore_selected(stage, abstract)
        return graphdef, state, jax.tree.map(lambda a: a.sharding, abstract)

    def restore_selected(self, stage: Stage, abstract):
        """A finished stage's weights: its last checkpoint, or with ``select="best"`` the one its
        validation ranked best (``best_checkpoint_step`` in its done marker)."""
        path = os.path.join(self.workdir, stage.name)
        step = None
        if stage.select == "best" and stage_files.is_done(path):
            step = stage_files.read_done(path).get("best_checkpoint_step")
            if step is None:
                raise CheckpointError(f"{path}: stage {stage.name!r} selects its best checkpoint but its done marker "
                                      "names none (it never validated); delete done.json to rerun it")
            LOG.info("stage %s: best checkpoint, step %d", stage.name, step)
        return stage_files.restore_last(path, abstract, step=step)

    def _nnx_eval_shape(self, stage: Optional[Stage] = None):
        from flax import nnx

        return nnx.eval_shape(self._model_fn(stage))

    def to_device(self, keys: Sequence[str]):
        keys = tuple(keys)
        return lambda batch: global_batch({k: batch[k] for k in keys}, self.mesh)

    def eval_step(self, graphdef, shardings, fn):
        return make_eval_step(graphdef, fn, params_sharding=shardings.params,
                              model_state_sharding=shardings.model_state, batch_sharding=self.bsharding,
                              out_sharding=replicated(self.mesh))

    # ------------------------------------------------------------------- fit
    def fit(self, stage: Stage) -> dict:
        """Run ``stage`` unless it is done; its summary either way."""
        path = self.path(stage.name)
        if stage_files.is_done(path):
            return stage_files.read_done(path)
        started = time.time()
        if stage.run is not None:
            context = StageContext(workdir=self.workdir, path=path, mesh=self.mesh, model_of=self.model_of,
                                   eval_step=self.eval_step, to_device=self.to_device)
            summary = dict(stage.run(context))
        else:
            summary = self._train(stage, path)
        summary["stage_seconds"] = time.time() - started
        summary = _plain(summary)
        stage_files.mark_done(path, summary)
        run_record.mark_started(self.workdir)
        return summary

    def _train(self, stage: Stage, path: str) -> dict:
        if stage.loss is None or stage.batches is None or stage.steps < 1:
            raise ConfigError(f"stage {stage.name}: a training stage needs steps >= 1, a loss and batches")
        tx, lr_schedule = self.optimizer(stage)
        if stage.init_from is None:
            graphdef, state, shardings = self.fresh_state(stage, tx)
        else:
            graphdef, state, shardings = self.continued_state(stage, tx)
        frozen = {name: build() for name, build in stage.frozen.items()}
        train_step = make_train_step(graphdef, stage.loss, tx, state_shardings=shardings,
                                     batch_sharding=self.bsharding, ema_decay=stage.ema, learning_rate=lr_schedule,
                                     frozen=frozen)
        keys, prepare = stage.batch_keys, stage.prepare

        def to_device(batch):
            if prepare is not None:
                batch = prepare(batch)
            return global_batch({k: batch[k] for k in keys}, self.mesh)

        eval_fn, best, best_mode = None, None, "max"
        if stage.eval_every:
            if stage.validation is not None:   # the stage's own validation
                v = stage.validation
                evaluator, best_mode = v.evaluator(), v.mode
                predict = self.predict_step(graphdef, shardings, forward=v.forward, keys=v.keys)
            else:
                evaluator = self.system.evaluators(self.config)[self.config.eval.validation_split]
                best_mode = getattr(evaluator, "mode", "max")  # "min" for an error rate (ASR's CER)
                predict = self.predict_step(graphdef, shardings)
            best = f"{'teacher' if stage.has_teacher else 'student'}/{evaluator.primary_metric}"

            def eval_fn(state, step):
                return self.score(evaluator, predict, state)

        loop_cfg = LoopConfig(total_steps=stage.steps, log_every=stage.log_every, eval_every=stage.eval_every or None,
                              checkpoint_every=stage.checkpoint_every, keep=stage.keep, best_metric=best,
                              best_mode=best_mode)
        batches = stage.batches()
        run_record.mark_started(self.workdir)  # data and model are there: the workdir is worth keeping
        LOG.info("stage %s: %d steps", stage.name, stage.steps)
        _, summary = train_loop(workdir=path, state=state, train_step=train_step, batches=batches,
                                to_device=to_device, config=loop_cfg, eval_fn=eval_fn,
                                abstract_state=abstract_like(state), progress_desc=stage.name)
        return dict(summary)

    # -------------------------------------------------------------- evaluate
    def predict_step(self, graphdef, shardings, forward=None, keys=None):
        """``(params, model_state, host batch) -> {outputs..., index}`` on host, all rows.
        ``forward`` / ``keys``: the pass and its batch keys (default: the System's predict)."""
        forward = forward or self.system.predict(self.config)
        keys = self.system.eval_keys if keys is None else tuple(keys)
        step = self.eval_step(graphdef, shardings, lambda model, batch: {**forward(model, batch),
                                                                         "index": batch["index"]})
        to_device = self.to_device((*keys, "index"))

        def predict(params, model_state, batch):
            return {k: np.asarray(v) for k, v in step(params, model_state, to_device(batch)).items()}

        return predict

    @staticmethod
    def score(evaluator, predict, state, *, plot_dir=None, title="", prefix="") -> dict:
        """Student and (when there is one) teacher through ``evaluator``: ``{who/metric: value}``."""
        results = {}
        members = [("student", state.params, state.model_state)]
        if state.teacher is not None:
            members.append(("teacher", state.teacher["params"], state.teacher["model_state"]))
        for who, params, model_state in members:
            metrics = evaluator.run(lambda batch: predict(params, model_state, batch),
                                    plot_dir=plot_dir, plot_prefix=f"{prefix}{who}", title=f"{title} {who}".strip())
            results.update({f"{who}/{k}": v for k, v in metrics.items()})
        return results

    def evaluate(self) -> dict:
        """Every evaluator on the final stage's student and teacher (``evaluation/``)."""
        final = self.system.final_stage(self.config)
        path = self.path(EVALUATION)

        def work():
            graphdef, state, shardings = self.model_of(final)
            predict = self.predict_step(graphdef, shardings)
            results = {}
            for split, evaluator in self.system.evaluators(self.config).items():
                LOG.info("evaluating %s on %s", final, split)
                metrics = self.score(evaluator, predict, state, plot_dir=path, prefix=f"{split}_",
                                     title=self.system.name.upper())
                results.update({f"{split}/{k}": v for k, v in metrics.items()})
            return _plain(results)

        return stage_files.run_once(path, work)

    def run(self) -> dict:
        """Every stage in order, then the final evaluation.

        ``metrics.json`` holds every stage's summary, the final metrics and ``invocations``:
        each call of this (when, the stages it worked on, seconds, how it ended) appended to
        the earlier ones, so rerunning a finished workdir keeps the time of the runs that did
        the work (``total_wall_seconds`` sums the invocations that worked on something).
        """
        started, when = time.time(), datetime.now(timezone.utc).isoformat(timespec="seconds")
        record_path = paths.join(self.workdir, RUN_SUMMARY)
        invocations = _earlier_invocations(record_path)
        summary, worked_on, outcome = {}, [], "stopped"
        try:
            for stage in self.stages:
                if not stage_files.is_done(paths.join(self.workdir, stage.name)):
                    worked_on.append(stage.name)
                summary[stage.name] = self.fit(stage)
            if not stage_files.is_done(paths.join(self.workdir, EVALUATION)):
                worked_on.append(EVALUATION)
            final = self.evaluate()
            summary["final_eval"] = final
            outcome = "finished"
        except BaseException as err:
            outcome = f"stopped: {type(err).__name__}: {err}"[:500]
            raise
        finally:
            invocations.append({"started": when, "seconds": round(time.time() - started, 3),
                                "worked_on": worked_on, "outcome": outcome})
            summary["invocations"] = invocations
            summary["total_wall_seconds"] = sum(i["seconds"] for i in invocations if i["worked_on"])
            stage_files.write_json(record_path, _plain(summary))
        for key in sorted(final):
            LOG.info("%s: %.4f", key, final[key])
        return final


def _earlier_invocations(record_path: str) -> list[dict]:
    """The invocations an existing ``metrics.json`` recorded (one for a record written before
    they were kept); none for a new run or an unreadable record."""
    if not paths.exists(record_path):
        return []
    try:
        record = json.loads(paths.read_text(record_path))
    except (ValueError, UnicodeDecodeError):
        LOG.warning("%s: unreadable, so earlier invocations are not carried over", record_path)
        return []
    if isinstance(record.get("invocations"), list):
        return list(record["invocations"])
    if "total_wall_seconds" in record:
        return [{"started": None, "seconds": record["total_wall_seconds"], "worked_on": ["(not recorded)"],
                 "outcome": "finished"}]
    return []


def batch_predictor(system: System, config, workdir: str, *, who: str = "teacher", mesh=None):
    """``predict_batch(inputs (batch, ...), **other keys) -> {output name: array}`` with the final
    stage's ``who`` ("teacher" if the run has one, else the student), through the same compiled
    forward pass as the run's own evaluation; plus a description of the weights. ``inputs`` is
    the batch's ``eval_keys[0]``; the other keys the System's predict reads (``eval_keys[1:]``,
    e.g. an ASD system's ``class_id``) are passed by name, one row per input."""
    config = without_start_weights(system, config)
    trainer = Trainer(system, config, workdir, mesh=mesh)
    graphdef, state, shardings = restore_final(system, config, workdir, mesh=trainer.mesh)
    if who == "teacher" and state.teacher is not None:
        params, model_state = state.teacher["params"], state.teacher["model_state"]
    else:
        who, params, model_state = "student", state.params, state.model_state
    predict = trainer.predict_step(graphdef, shardings)
    key, needed = system.eval_keys[0], tuple(system.eval_keys[1:])

    def predict_batch(inputs: np.ndarray, **others) -> dict[str, np.ndarray]:
        missing = [k for k in needed if k not in others]
        if missing:
            raise ValueError(f"{system.name}: predict_batch needs the batch keys {missing} too (System.eval_keys)")
        batch = {key: np.asarray(inputs), **{k: np.asarray(v) for k, v in others.items()},
                 "index": np.arange(len(inputs), dtype=np.int32)}
        return {k: v for k, v in predict(params, model_state, batch).items() if k != "index"}

    step = int(np.asarray(jax.device_get(state.step)))
    return predict_batch, f"{os.path.abspath(workdir)} ({system.final_stage(config)} {who}, step {step})"


def fit(system: System, stage: Stage, workdir: str, config, *, mesh=None) -> dict:
    """Run one stage of ``system`` in ``workdir`` (see ``Trainer.fit``)."""
    return Trainer(system, config, workdir, mesh=mesh).fit(stage)


def run(system: System, config, workdir: str, *, mesh=None) -> dict:
    """Run every stage of ``system`` and its final evaluation; returns the final metrics."""
    distributed.maybe_initialize()
    paths.makedirs(workdir)
    return Trainer(system, config, workdir, mesh=mesh).run()


def without_start_weights(system: System, config):
    """``config`` with ``system.start_weights`` cleared: the model is built only to be restored."""
    if not any(config.model.get(k) for k in system.start_weights):
        return config
    config = copy.deepcopy(config)
    for key in system.start_weights:
        config.model[key] = ""
    return config


def restore_final(system: System, config, workdir: str, *, mesh=None) -> tuple[Any, Any, Any]:
    """(graphdef, state, shardings) of a finished run's final training stage, for export and
    predict; a run that has not finished it is named with the command that finishes it."""
    config = without_start_weights(system, config)
    trainer = Trainer(system, config, workdir, mesh=mesh)
    final = system.final_stage(config)
    path = os.path.join(workdir, final)
    if not stage_files.is_done(path):
        raise CheckpointError(f"{path}: stage {final!r} has not finished, so there is no trained model; run "
                              f"experiments/run.py --exp={system.name} --workdir={workdir} first")
    return trainer.model_of(final)


def _edited(edit, graphdef, state, shardings):
    """``state`` with ``edit(model)`` applied to the student's and the teacher's parameters."""
    from flax import nnx

    def apply(params, model_state):
        model = nnx.merge(graphdef, params, model_state)
        edit(model)
        return nnx.state(model, nnx.Param)

    edit_params = jax.jit(apply, out_shardings=shardings.params)
    state = state.replace(params=edit_params(state.params, state.model_state))
    if state.teacher is not None:
        teacher = dict(state.teacher)
        teacher["params"] = edit_params(teacher["params"], teacher["model_state"])
        state = state.replace(teacher=teacher)
    return state
