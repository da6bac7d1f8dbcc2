"""The export form of an ASD system: one waveform clip -> an anomaly score for every machine-ID class.

Why every class: the trained model serves every machine it was trained on, and a deployed device
knows which machine it listens to. The exported model returns ``score_per_class`` (n_classes,),
labelled with the "<type>/<id>" class names (``Output.labels``, written into the export report),
and the device reads its own entry, as the System's ``predict`` scores a test clip with the
clip's own class. Larger is more anomalous; the decision thresholds per class are
``<workdir>/thresholds/thresholds.json`` (experiments/asd/thresholds.py).

Held-out clips are the labelled test clips; their score is ``score_per_class[clip's class]``
through the run's ``ASDEvaluator``, so the export report states AUC / pAUC of each exported
variant next to the JAX model's. Calibration clips (int8) are training normals.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from experiments.asd.data import ASDData, clip_samples
from jaxaudio.evaluators.asd import SCORE, ASDEvaluator
from jaxaudio.export.model import ANOMALY_SCORE, HeldOut, InferenceModel, Output, round_robin

SCORE_PER_CLASS = "score_per_class"
# The named scope of the score head (log-softmax over IDs, mean over segments) that int8 keeps in
# float: TFLite's int8 LOG_SOFTMAX has the fixed output scale 16/256, so every score would move in
# steps of 1/16 nat (GeCo's smoke run, 8 calibration clips: the int8 scores' mean error 0.044 -> 0.040 with
# the head in float, for one dequantize op).
SCORE_SCOPE = "asd_score"
# What the export report lists beside the primary metric (the overall keys of ASDEvaluator's metrics).
REPORT_METRICS = ("auc", "pauc", "pauc_raw")


def id_scores(id_logits):
    """``id_logits (batch, n_segments, n_classes)`` -> ``(batch, n_classes)``: for every class, the
    mean over segments of ``-log softmax(id_logits)`` (``models/geco.py: clip_score`` for each class
    at once), under ``SCORE_SCOPE``. The log-softmax is spelled out: ``jax.nn.log_softmax`` is a
    jitted helper, whose ops lose the enclosing name scope in the converted graph."""
    import jax
    import jax.numpy as jnp

    with jax.named_scope(SCORE_SCOPE):
        logits = jnp.asarray(id_logits, jnp.float32)
        shifted = logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
        log_p = shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=-1, keepdims=True))
        return -jnp.mean(log_p, axis=-2)


def held_out_order(class_ids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Positions of the labelled test clips of a known class, in the order the first ``k`` of them
    cover as many machine IDs with both labels as ``k`` allows: one normal and one anomaly of each
    class in turn, then the next pair of each class, and so on (a few held-out clips then give an
    AUC over several IDs instead of the normals of one ID)."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, (cid, label) in enumerate(zip(np.asarray(class_ids), np.asarray(labels))):
        if cid >= 0 and label in (0, 1):
            groups[(int(cid), int(label))].append(i)
    return round_robin(groups[key] for key in sorted(groups))


def picked_scores(score_per_class: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
    """``score_per_class (n, n_classes)``, ``class_ids (n,)`` -> each clip's own class's score ``(n,)``."""
    scores = np.asarray(score_per_class, np.float64)
    return scores[np.arange(len(scores)), np.asarray(class_ids, int)]


def score_held_out(evaluator: ASDEvaluator, outputs: dict, positions: np.ndarray, class_ids: np.ndarray,
                   labels: np.ndarray) -> dict:
    """The evaluator's metrics of the picked scores of the clips at ``positions`` (test-source
    positions). IDs with one label only among them (a few clips) have no AUC; they are left out,
    so the subset's AUC is the mean over the IDs it can score."""
    picked = picked_scores(outputs[SCORE_PER_CLASS], class_ids)
    both = {cid for cid in set(class_ids.tolist()) if {0, 1} <= set(labels[class_ids == cid].tolist())}
    keep = np.asarray([cid in both for cid in class_ids], bool)
    return evaluator.score_arrays({evaluator.output: picked[keep]}, positions[keep])


def inference_model(config, data: ASDData, *, name: str, fn, variables, source: str,
                    evaluator: ASDEvaluator | None = None, **options) -> InferenceModel:
    """``fn(variables, waveform (batch, clip_samples)) -> {SCORE_PER_CLASS: (batch, n_classes)}`` as
    an ``InferenceModel`` (``id_scores`` computes them from ID logits). ``evaluator``: the system's
    test evaluator (default: an ``ASDEvaluator`` on the test clips with ``config.eval``'s max_fpr and
    primary metric, as the systems build it). ``options`` go to ``InferenceModel``; ``float_scopes``
    defaults to ``(SCORE_SCOPE,)`` (a system that adds scopes lists it too), ``report_metrics`` to
    ``REPORT_METRICS``."""

    options.setdefault("float_scopes", (SCORE_SCOPE,))
    options.setdefault("report_metrics", REPORT_METRICS)
    if evaluator is None:
        evaluator = ASDEvaluator(lambda: data.source("test"), int(config.batch.eval), max_fpr=config.eval.max_fpr,
                                 primary_metric=config.eval.primary_metric, output=SCORE)

    def calibration(n: int) -> np.ndarray:
        subset = data.source("train")
        picks = np.linspace(0, len(subset) - 1, num=min(n, len(subset))).round().astype(int)
        return np.stack([subset[int(i)]["audio"] for i in picks]).astype(np.float32)

    def held_out(max_clips: int) -> HeldOut:
        subset = evaluator.source
        order = held_out_order(subset.class_ids, subset.labels)
        positions = order if max_clips <= 0 else order[:max_clips]
        waves = np.stack([subset[int(i)]["audio"] for i in positions]).astype(np.float32)
        ids = tuple(str(subset.files[int(i)].path) for i in positions)
        class_ids, labels = subset.class_ids[positions], subset.labels[positions]
        return HeldOut(waves, ids, lambda outputs: score_held_out(evaluator, outputs, positions, class_ids, labels))

    outputs = (Output(SCORE_PER_CLASS, ANOMALY_SCORE, tuple(data.classes)),)
    return InferenceModel(name=name, fn=fn, variables=variables, input_shape=(clip_samples(config.data),),
                          outputs=outputs, primary_metric=config.eval.primary_metric,
                          sample_rate=int(config.data.sample_rate), calibration=calibration, held_out=held_out,
                          source=source, **options)
