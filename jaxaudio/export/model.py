"""What a system hands the exporter: a pure inputs -> named outputs function and its data.

Why a dataclass of plain callables: the exporter must not know which task a model solves, how it
was trained or where its data lives. The experiment's System builds an ``InferenceModel`` (its
``inference_model(config, workdir)``) and the exporter only calls what is here. Each output is
declared once, by name and kind (``Output``); the converter names the TFLite signature outputs
after those names, and verification compares them name by name.

Output kinds, and what verification reports for each:

  FRAME_PROBS    (batch, frames, classes) probabilities; ``frame_timestamps`` required.
  CLIP_PROBS     (batch, classes) multi-label probabilities (e.g. the weak head of a SED model).
  CLASS_PROBS    (batch, classes) single-label probabilities (a softmax).
  ANOMALY_SCORE  (batch,) or (batch, ...) float scores; larger is more anomalous. With ``labels``,
                 the last axis holds one score per label (e.g. per machine ID: a device reads its own).
  TOKEN_IDS      (batch, tokens) integer ids (a greedy decode); ``labels`` is the vocabulary.
  INTEGERS       (batch,) or (batch, ...) integers that are not token ids: counts, frame indices
                 (an ASR model's token count and fire frames).

Probability kinds get max/mean absolute error and the agreement of decisions at 0.5; scores
get the errors; token ids and integers get the exact-match rate. Nothing in this file imports TensorFlow.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Optional

import jax
import numpy as np

from jaxaudio.audio.features import FRONTEND_SCOPE
from jaxaudio.errors import ExportError

FRAME_PROBS, CLIP_PROBS, ANOMALY_SCORE, TOKEN_IDS, CLASS_PROBS, INTEGERS = (
    "frame_probs", "clip_probs", "anomaly_score", "token_ids", "class_probs", "integers")
KINDS = (FRAME_PROBS, CLIP_PROBS, ANOMALY_SCORE, TOKEN_IDS, CLASS_PROBS, INTEGERS)
PROBABILITY_KINDS = (FRAME_PROBS, CLIP_PROBS, CLASS_PROBS)  # compared by decisions at 0.5 too
FLOAT_KINDS = PROBABILITY_KINDS + (ANOMALY_SCORE,)
INTEGER_KINDS = (TOKEN_IDS, INTEGERS)  # compared by exact match
# Kinds whose last axis is one per label, so ``labels`` (when given) must match its size.
LABELLED_AXIS_KINDS = (FRAME_PROBS, CLIP_PROBS, CLASS_PROBS, ANOMALY_SCORE)
# Kinds whose arrays have a fixed rank: (batch, frames, classes) and (batch, classes).
RANKS = {FRAME_PROBS: 3, CLIP_PROBS: 2, CLASS_PROBS: 2, TOKEN_IDS: 2}

INPUT_NAME = "inputs"  # the TFLite signature's single input
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclasses.dataclass(frozen=True)
class Output:
    """One named output of ``InferenceModel.fn``.

    name: the key of ``fn``'s output dict and the name of the TFLite signature output
      (a Python identifier).
    kind: one of ``KINDS``.
    labels: class names (or the vocabulary for TOKEN_IDS), when the kind has them.
    frame_timestamps: (frames + 1,) frame boundaries in seconds, increasing; FRAME_PROBS only,
      and required there.
    """

    name: str
    kind: str
    labels: tuple[str, ...] = ()
    frame_timestamps: Optional[np.ndarray] = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ExportError(f"Output.name={self.name!r}: expected an identifier (letters, digits, '_'); it "
                              "names the TFLite signature output")
        if self.kind not in KINDS:
            raise ExportError(f"output {self.name!r}: unknown kind {self.kind!r}; known kinds: {', '.join(KINDS)}")
        object.__setattr__(self, "labels", tuple(self.labels))
        if self.kind == FRAME_PROBS:
            if self.frame_timestamps is None:
                raise ExportError(f"output {self.name!r} ({FRAME_PROBS}): frame_timestamps is required, the "
                                  "(frames + 1,) frame boundaries in seconds")
            stamps = np.asarray(self.frame_timestamps, np.float64)
            if stamps.ndim != 1 or stamps.size < 2 or not np.all(np.diff(stamps) > 0):
                raise ExportError(f"output {self.name!r}: frame_timestamps has shape {stamps.shape}; expected "
                                  "(frames + 1,) increasing boundaries in seconds")
            object.__setattr__(self, "frame_timestamps", stamps)
        elif self.frame_timestamps is not None:
            raise ExportError(f"output {self.name!r} ({self.kind}): frame_timestamps belongs to {FRAME_PROBS} "
                              "outputs only")

    @property
    def frames(self) -> Optional[int]:
        return None if self.frame_timestamps is None else int(self.frame_timestamps.size - 1)


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """Held-out examples and how the system scores predictions on them.

    inputs: (n, *input_shape) float32 waveforms (or images), the model's fixed input shape.
    ids: one id per row of ``inputs``.
    score: ``{output name: (n, ...) array, rows in the order of ids} -> {metric: value}``.
    """

    inputs: np.ndarray
    ids: tuple[str, ...]
    score: Callable[[dict[str, np.ndarray]], dict[str, float]]


def round_robin(groups) -> np.ndarray:
    """Positions taken from each group in turn (the first of every group, then the second, ...),
    so the first ``k`` held-out examples cover as many groups (classes, IDs) as ``k`` allows."""
    groups = [list(g) for g in groups]
    depth = max((len(g) for g in groups), default=0)
    return np.asarray([g[r] for r in range(depth) for g in groups if r < len(g)], np.int64)


@dataclasses.dataclass(frozen=True)
class InferenceModel:
    """A trained model ready to export.

    name: file stem of the exported models and the report's title.
    fn: pure ``fn(variables, inputs (batch, *input_shape) float32) -> {output name: array}``,
      front end included, inference mode (no dropout, no RNG), no ``lax.scan`` over long axes
      (use a loop the converter keeps as one WHILE, or unroll).
    variables: the pytree ``fn`` takes (e.g. a mean teacher's params and state).
    input_shape: one example's shape, e.g. ``(clip_samples,)``; the exported input is
      ``(1, *input_shape)`` float32, named ``INPUT_NAME``.
    outputs: the declared outputs; ``fn`` must return exactly these names.
    primary_metric: the key of ``HeldOut.score`` that the report compares across variants.
    higher_is_better: direction of ``primary_metric`` (False for error rates such as CER).
    report_metrics: further keys of ``HeldOut.score`` that the report lists next to the primary
      metric, for JAX and each variant (e.g. an ASD system's ``pauc``).
    sample_rate: Hz, for audio models (the report states it); None otherwise.
    calibration: ``n -> (n, *input_shape)`` float32 examples from the training data, for
      full-integer calibration; None if the system has none (then no ``int8``).
    held_out: ``max_examples (0 = all) -> HeldOut`` from validation data; None if none.
    frontend_scope: the ``jax.named_scope`` of the front-end ops, kept in float by ``int8``
      together with every op upstream of them; ``""``: no front end (e.g. an image model whose
      inputs are already features), nothing is pulled into float.
    float_scopes: further named scopes whose own ops ``int8`` keeps in float (their inputs are
      not pulled along), e.g. ``nn.activations.EXACT_GELU_SCOPE``.
    float_range_limit: ``int8`` also keeps in float every op that reads or writes a tensor whose
      calibrated range reaches beyond ``+-float_range_limit``, and the ops that produce that op's
      inputs; None (default): no such rule. Why: 8 bits over such a range round every ordinary
      value to one level. Padding masks make such tensors: attention logits filled with the
      lowest float32 on masked keys (``nn.attention``), whose int8 SELECT shares its one scale
      with the logits it reads (hence the producers), and ``1/sqrt(eps)`` of a LayerNorm over an
      all-zero padded row (1e6 at eps 1e-12).
    per_channel_dense: ``int8`` gives dense (fully connected) weights one scale per output
      channel; False: one per tensor. Convolutions stay per channel. Each per-channel scale and
      zero point costs 12 bytes, which for a Transformer of width 64 is an eighth of its int8 file.
    source: where the variables came from (workdir and step), for the report.
    references: models the deployment report sets this one against (a distilled student's
      teachers): each is exported as float32 only, verified and timed like the variants, and
      listed with its size, latency and primary metric on its own held-out examples.
    """

    name: str
    fn: Callable[[Any, jax.Array], dict[str, jax.Array]]
    variables: Any
    input_shape: tuple[int, ...]
    outputs: tuple[Output, ...]
    primary_metric: str
    sample_rate: Optional[int] = None
    calibration: Optional[Callable[[int], np.ndarray]] = None
    held_out: Optional[Callable[[int], HeldOut]] = None
    frontend_scope: str = FRONTEND_SCOPE
    float_scopes: tuple[str, ...] = ()
    float_range_limit: Optional[float] = None
    per_channel_dense: bool = True
    source: str = ""
    higher_is_better: bool = True
    report_metrics: tuple[str, ...] = ()
    references: tuple["InferenceModel", ...] = ()

    def __post_init__(self):
        if not self.name or not isinstance(self.name, str):
            raise ExportError(f"InferenceModel.name={self.name!r}: expected a non-empty file stem")
        shape = tuple(self.input_shape) if isinstance(self.input_shape, (tuple, list)) else None
        if not shape or not all(isinstance(n, (int, np.integer)) and n > 0 for n in shape):
            raise ExportError(f"{self.name}: input_shape={self.input_shape!r}; expected one example's shape as "
                              "positive ints, e.g. (clip_samples,)")
        object.__setattr__(self, "input_shape", tuple(int(n) for n in shape))
        outputs = tuple(self.outputs)
        if not outputs or not all(isinstance(o, Output) for o in outputs):
            raise ExportError(f"{self.name}: outputs={self.outputs!r}; expected a non-empty tuple of Output")
        names = [o.name for o in outputs]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ExportError(f"{self.name}: output name(s) {repeated} declared more than once")
        object.__setattr__(self, "outputs", outputs)
        object.__setattr__(self, "float_scopes", tuple(self.float_scopes))
        if self.float_range_limit is not None and not float(self.float_range_limit) > 0:
            raise ExportError(f"{self.name}: float_range_limit={self.float_range_limit!r}; expected a positive "
                              "magnitude or None")
        object.__setattr__(self, "report_metrics", tuple(self.report_metrics))
        object.__setattr__(self, "references", tuple(self.references))
        for ref in self.references:
            if not isinstance(ref, InferenceModel) or ref.primary_metric != self.primary_metric:
                raise ExportError(f"{self.name}: references must be InferenceModels scored by the same primary metric "
                                  f"{self.primary_metric!r}; got {getattr(ref, 'name', type(ref).__name__)!r}")
        if not self.primary_metric or not isinstance(self.primary_metric, str):
            raise ExportError(f"{self.name}: primary_metric={self.primary_metric!r}; expected the key of "
                              "HeldOut.score that the report compares")

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    def output(self, name: str) -> Output:
        for o in self.outputs:
            if o.name == name:
                return o
        raise ExportError(f"{self.name}: no output named {name!r}; declared: {', '.join(self.output_names)}")

    @property
    def n_params(self) -> int:
        return int(sum(np.prod(np.shape(x)) for x in jax.tree.leaves(self.variables)))

    def input_spec(self, batch: int = 1) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct((batch, *self.input_shape), np.float32)

    def check_outputs(self) -> dict[str, jax.ShapeDtypeStruct]:
        """Trace ``fn`` once (no compute) and check its outputs against the declared ones.

        Raises ExportError naming any missing or undeclared output, a wrong dtype (float for
        probabilities and scores, integer for token ids and integers), rank, frame count or label count.
        Returns ``{name: ShapeDtypeStruct}`` at batch 1.
        """
        try:
            shapes = jax.eval_shape(self.fn, self.variables, self.input_spec())
        except ExportError:
            raise
        except Exception as err:
            raise ExportError(f"{self.name}: fn(variables, inputs {(1, *self.input_shape)}) failed: "
                              f"{type(err).__name__}: {err}") from err
        if not isinstance(shapes, dict):
            raise ExportError(f"{self.name}: fn returned {type(shapes).__name__}; expected a dict "
                              f"{{output name: array}} with keys {', '.join(self.output_names)}")
        check_names(self, shapes.keys(), "fn's outputs")
        for out in self.outputs:
            got = shapes[out.name]
            where = f"{self.name}: output {out.name!r} ({out.kind})"
            floating = np.issubdtype(got.dtype, np.floating)
            if out.kind in FLOAT_KINDS and not floating:
                raise ExportError(f"{where} has dtype {got.dtype}; expected a float array")
            if out.kind in INTEGER_KINDS and not np.issubdtype(got.dtype, np.integer):
                raise ExportError(f"{where} has dtype {got.dtype}; expected integer ids")
            if got.ndim < 1 or got.shape[0] != 1:
                raise ExportError(f"{where} has shape {got.shape} for a batch of 1; expected the batch axis first")
            if out.kind in RANKS and got.ndim != RANKS[out.kind]:
                raise ExportError(f"{where} has shape {got.shape}; expected rank {RANKS[out.kind]}")
            if out.kind == FRAME_PROBS and got.shape[1] != out.frames:
                raise ExportError(f"{where} has {got.shape[1]} frames but frame_timestamps has {out.frames + 1} "
                                  f"boundaries; expected {got.shape[1] + 1}")
            if out.kind in LABELLED_AXIS_KINDS and out.labels and got.shape[-1] != len(out.labels):
                raise ExportError(f"{where} has {got.shape[-1]} classes but {len(out.labels)} labels")
        return {name: shapes[name] for name in self.output_names}

    def predict(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Reference outputs from JAX itself, one example at a time (the exported batch size)."""
        self.check_outputs()
        call = jax.jit(self.fn)
        outs = [call(self.variables, np.asarray(x, np.float32)[None]) for x in inputs]
        return {name: np.concatenate([np.asarray(o[name]) for o in outs]) for name in self.output_names}


def check_names(model: InferenceModel, found, where: str) -> None:
    """ExportError naming the declared outputs missing from ``found`` and the undeclared extras."""
    found = set(found)
    missing = [n for n in model.output_names if n not in found]
    extra = sorted(found - set(model.output_names))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing declared output(s) {', '.join(map(repr, missing))}")
        if extra:
            parts.append(f"undeclared output(s) {', '.join(map(repr, extra))}")
        raise ExportError(f"{model.name}: {where}: {'; '.join(parts)}; declared outputs: "
                          f"{', '.join(model.output_names)}")
