"""Decision thresholds of an ASD system, chosen on its training normals: the ``thresholds`` stage.

An anomaly score says how unusual a clip is; ``--mode=predict`` also says normal or anomalous,
which needs a threshold per machine. No anomalous clip may be used to choose it (DCASE's rules:
the training folders hold normals only), so it is taken from the distribution of the training
normals' own scores, as the DCASE2021/2022 task-2 baselines do (y-kawagu/dcase2021_task2_baseline_ae
00_train.py: ``shape_hat, loc_hat, scale_hat = scipy.stats.gamma.fit(y_pred)`` on the training
files' scores; 01_test.py: ``scipy.stats.gamma.ppf(q=param["decision_threshold"], ...)`` with
``decision_threshold: 0.9`` in baseline.yaml, and a clip is anomalous when its score is above it;
the 2022 baseline, Kota-Dohi/dcase2022_task2_baseline_ae, keeps both). scipy is one of our core
dependencies (pyproject.toml; scikit-learn, which the tests use as a reference, requires it too).

The baselines train one model per machine type and fit one gamma per type. Our ID-classifier
systems (GeCo) train one model over every machine ID and score -log p(ID), whose scale differs
per ID, so the stage fits one gamma per machine-ID class (the one predict uses) and one per
machine type (over its IDs' clips; for reference, and for systems whose scores are comparable
within a type). A fit that fails, or scores that are not all positive and finite (the gamma's
support), fall back to the empirical quantile, with a warning in the log and in the file.

``<workdir>/thresholds/thresholds.json`` (written atomically by process 0)::

    {"quantile": 0.9, "model_stage": "extractor", "weights": "student", "step": 2000,
     "classes": {"fan/id_00": {"threshold", "method": "gamma" | "empirical", "gamma": {"a", "loc",
                 "scale"} | null, "count", "mean", "std"[, "warning"]}, ...},
     "machine_types": {"fan": {...}, ...}}

The stage runs after the final training stage and, like every stage, leaves ``done.json``: a
rerun skips it, and a run trained before the stage existed gets it (and only it) by running
training again in its workdir.
"""
from __future__ import annotations

import json
import math
import os
import warnings
from collections import defaultdict
from typing import Callable, Sequence

import jax
import numpy as np

from jaxaudio.errors import CheckpointError, ConfigError
from jaxaudio.evaluators.asd import SCORE, collect_clip_scores
from jaxaudio.io import paths
from jaxaudio.train import stages as stage_files
from jaxaudio.train.log import get_logger
from jaxaudio.train.system import Stage, StageContext

LOG = get_logger("jaxaudio.asd")

THRESHOLDS_STAGE = "thresholds"
THRESHOLDS_FILE = "thresholds.json"
DECISION_QUANTILE = 0.9   # the DCASE2021/2022 task-2 baselines' decision_threshold


def decision_threshold(scores: Sequence[float], quantile: float = DECISION_QUANTILE) -> dict:
    """The ``quantile`` of a gamma distribution fitted to ``scores`` (shape, loc and scale free, as
    ``scipy.stats.gamma.fit`` does by default and the DCASE baselines call it), with the count,
    mean and std of the scores. Falls back to the empirical quantile (``np.quantile``, linear
    interpolation) when a score is not positive or not finite, or the fit fails or gives a
    non-finite threshold; ``method`` says which, ``warning`` why."""
    import scipy.stats

    if not 0.0 < quantile < 1.0:
        raise ConfigError(f"decision quantile {quantile!r}: expected a value in (0, 1)")
    x = np.asarray(scores, np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("decision_threshold: no scores to fit")
    finite = x[np.isfinite(x)]
    out = {"count": int(x.size), "mean": float(np.mean(finite)) if finite.size else math.nan,
           "std": float(np.std(finite)) if finite.size else math.nan}
    problem = None
    if finite.size < x.size:
        problem = f"{x.size - finite.size} of {x.size} scores are not finite"
    elif np.any(x <= 0):
        problem = f"{int(np.sum(x <= 0))} of {x.size} scores are <= 0, outside a gamma distribution's support"
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)   # the optimiser's overflow probes
                a, loc, scale = scipy.stats.gamma.fit(x)
                threshold = float(scipy.stats.gamma(a, loc, scale).ppf(quantile))
            if not all(map(math.isfinite, (a, loc, scale, threshold))):
                raise ValueError(f"non-finite fit (a={a}, loc={loc}, scale={scale}, threshold={threshold})")
        except Exception as err:   # scipy's FitError, a degenerate sample (all scores equal), ...
            problem = f"the gamma fit failed ({type(err).__name__}: {err})"
        else:
            return {"threshold": threshold, "method": "gamma",
                    "gamma": {"a": float(a), "loc": float(loc), "scale": float(scale)}, **out}
    empirical = float(np.quantile(finite, quantile)) if finite.size else math.nan
    return {"threshold": empirical, "method": "empirical", "gamma": None, **out,
            "warning": f"{problem}; the empirical {quantile:g} quantile is used instead"}


def fit_thresholds(files: Sequence, scores: Sequence[float], quantile: float = DECISION_QUANTILE) -> dict:
    """``{"classes": {"<type>/<id>": fit}, "machine_types": {type: fit}}`` of ``decision_threshold``
    over the scores of each machine-ID class and each machine type; ``files`` are the ``ASDFile``s
    the scores belong to (the training normals), in the same order."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    if len(files) != len(scores):
        raise ValueError(f"fit_thresholds: {len(files)} files but {len(scores)} scores")
    by_class, by_type = defaultdict(list), defaultdict(list)
    for f, s in zip(files, scores):
        by_class[f.class_name].append(s)
        by_type[f.machine_type].append(s)
    out = {"classes": {}, "machine_types": {}}
    for key, groups in (("classes", by_class), ("machine_types", by_type)):
        for name in sorted(groups):
            fit = decision_threshold(groups[name], quantile)
            if "warning" in fit:
                LOG.warning("decision threshold of %s: %s", name, fit["warning"])
            out[key][name] = fit
    return out


def thresholds_path(workdir: str, stage: str = THRESHOLDS_STAGE) -> str:
    return os.path.join(workdir, stage, THRESHOLDS_FILE)


def thresholds_stage(config, data, predict: Callable, model_stage: str, keys: Sequence[str], *,
                     name: str = THRESHOLDS_STAGE, quantile: float = DECISION_QUANTILE,
                     who: str = "teacher") -> Stage:
    """The non-training stage that scores every training normal (``data.source("train")``) with
    ``model_stage``'s final weights through the System's ``predict(config) -> fn(model, device
    batch) -> {"score"}`` (built when the stage runs, compiled as evaluation compiles it, in
    ``config.batch.eval`` batches) and writes ``thresholds.json``. ``keys``: the batch keys
    ``predict`` reads (the System's eval_keys). ``who``: "teacher" when the stage has one, else
    the student, as ``batch_predictor`` (predict mode) chooses."""
    batch_size = int(config.batch.eval)

    def run(ctx: StageContext) -> dict:
        graphdef, state, shardings = ctx.model_of(model_stage)
        weights = "teacher" if who == "teacher" and state.teacher is not None else "student"
        params, model_state = ((state.teacher["params"], state.teacher["model_state"]) if weights == "teacher"
                               else (state.params, state.model_state))
        predict_host = ctx.host_predictor(graphdef, shardings, predict(config), keys, params, model_state)
        source = data.source("train")
        LOG.info("thresholds: scoring %d training normals with %s's %s", len(source), model_stage, weights)
        scores = collect_clip_scores(source, predict_host, batch_size, SCORE)
        fits = fit_thresholds(source.files, scores, quantile)
        record = {"what": f"decision thresholds: the {quantile:g} quantile of a gamma distribution fitted to the "
                          "training normals' anomaly scores (DCASE2021/2022 task-2 baselines); a clip is "
                          "anomalous when its score is above its class's threshold",
                  "quantile": quantile, "model_stage": model_stage, "weights": weights,
                  "step": int(np.asarray(jax.device_get(state.step))), "output": SCORE, **fits}
        path = paths.join(ctx.path, THRESHOLDS_FILE)
        stage_files.write_json(path, record)
        fallbacks = sorted(k for group in ("classes", "machine_types") for k, v in fits[group].items()
                           if v["method"] != "gamma")
        LOG.info("thresholds: %d classes, %d machine types -> %s%s", len(fits["classes"]),
                 len(fits["machine_types"]), path, f" (empirical for {fallbacks})" if fallbacks else "")
        return {"thresholds_json": path, "clips": len(source), "classes": len(fits["classes"]),
                "empirical_fallbacks": fallbacks}

    return Stage(name, run=run)


def load_thresholds(workdir: str, classes: Sequence[str], *, exp: str, preset: str | None = None,
                    stage: str = THRESHOLDS_STAGE) -> tuple[dict[str, float], dict, str]:
    """``({class: threshold}, the whole record, path)`` from a trained workdir's thresholds file;
    every class of ``classes`` must have one. A missing file is named with the command that
    makes it (``exp``, ``preset``: what the workdir was trained with)."""
    path = thresholds_path(workdir, stage)
    done = os.path.join(os.path.dirname(path), stage_files.DONE)
    rerun = (f"python experiments/run.py --exp={exp}{f' --preset={preset}' if preset else ''} --workdir={workdir}, "
             "with the --data_dir and --config options it was trained with")
    if not paths.exists(path):
        how = (f"delete {done} and run training again in this workdir ({rerun})" if paths.exists(done) else
               f"run training again in this workdir ({rerun}): finished stages are skipped, so only the "
               "thresholds are computed")
        raise CheckpointError(f"{path}: no decision thresholds (the run was trained before the {stage!r} stage "
                              f"existed, or has not reached it); to make them, {how}")
    try:
        record = json.loads(paths.read_text(path))
        table = {name: float(v["threshold"]) for name, v in record["classes"].items()}
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{path}: not a thresholds file ({type(err).__name__}: {err}); delete it and "
                              f"{done}, then run {rerun}, to make it again") from None
    missing = [c for c in classes if c not in table]
    if missing:
        raise CheckpointError(f"{path}: no threshold for the classes {missing} of this run (it holds "
                              f"{sorted(table)}); delete it and {done}, then run {rerun}, to make it again")
    return {c: table[c] for c in classes}, record, path
