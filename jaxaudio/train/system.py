"""What an experiment is, as data: a ``System`` of plain callables and its ``Stage`` list.

Why a frozen dataclass of callables and not a base class: run, predict, export, the scaling
study, benchmarks and tests all read the same object, and none of them should need to know
how a system is trained or where its data lives. An experiment folder builds one ``System``
(``experiments/<name>/system.py: SYSTEM``); the trainer (``trainer.py``) runs its stages.

A training ``Stage`` names everything the trainer cannot guess: its steps, optimizer groups,
loss, batches, teacher spec and which earlier stage it starts from. A stage that does not
train (fitting a GMM, choosing fusion members, evaluating) is a ``Stage`` with ``run``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from jaxaudio.train.teachers import EmaDecay, FrozenModel

# loss(model, batch, rng, ema_teacher_or_None, step[, frozen={name: model}]) -> (loss, aux)
LossFn = Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class StageValidation:
    """A stage's own validation in place of the System's evaluators: PMAM's pre-training ranks
    its epochs by the masked pseudo-label BCE on the validation clips (lower is better), which
    the SED evaluators cannot score. ``evaluator()`` is built when the stage trains;
    ``forward(model, device batch) -> outputs`` is compiled like ``System.predict`` and reads
    ``keys`` (plus ``index``) of the evaluator's host batches; ``mode``: "max" or "min", which
    way the evaluator's primary metric is better."""

    evaluator: Callable[[], Any]
    forward: Callable[[Any, dict], dict]
    keys: tuple[str, ...]
    mode: str = "max"


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of a run; its folder is ``workdir/<name>``.

    Training stages: ``steps``, ``loss``, ``batches`` (a function returning this process's
    host batches, an iterator with get_state/set_state so a resume sees the same batches),
    ``batch_keys`` (what goes to the device; ``prepare`` may add keys on the host first),
    ``default_group`` / ``groups`` (``jaxaudio.train.optim`` groups: lr, weight decay,
    schedule per regex on the parameter path), ``clip_norm``, ``lr_group`` (the group whose lr
    is logged), ``ema`` (mean-teacher decay; None: no EMA teacher), ``frozen`` (named frozen
    models, each built by a function called once before training), ``init_from`` (the earlier
    stage whose final weights this one starts from), ``eval_every`` (validation every n steps;
    with it, the best checkpoint by the primary metric is kept), ``select`` ("last", or
    "best": the stage's weights, for the next stage, evaluation, predict and export, are that
    best checkpoint's, as the SED recipes select their epoch), ``masks`` (params -> 0/1 tree,
    for pruning), ``start_edit`` (edits the model in place once, when the stage starts from
    ``init_from``'s weights, student and teacher alike: e.g. folding LoRA adapters into the
    kernels), ``validation`` (a ``StageValidation`` used instead of the System's evaluators
    when the stage validates), ``model`` (builds the model this stage trains when it is not the
    System's: a distillation teacher of another architecture; stages that train it must not hand
    weights by ``init_from`` to one that trains another). Other stages: ``run(context) -> summary``.
    """

    name: str
    steps: int = 0
    loss: Optional[LossFn] = None
    batches: Optional[Callable[[], Iterator[dict]]] = None
    batch_keys: tuple[str, ...] = ()
    prepare: Optional[Callable[[dict], dict]] = None
    default_group: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    groups: Sequence[Mapping[str, Any]] = ()
    clip_norm: Optional[float] = None
    lr_group: Optional[str] = None
    ema: Optional[EmaDecay] = None
    frozen: Mapping[str, Callable[[], FrozenModel]] = dataclasses.field(default_factory=dict)
    init_from: Optional[str] = None
    eval_every: int = 0
    masks: Optional[Callable[[Any], Any]] = None
    select: str = "last"
    start_edit: Optional[Callable[[Any], Any]] = None
    validation: Optional[StageValidation] = None
    log_every: int = 50
    checkpoint_every: int = 500
    keep: int = 3
    run: Optional[Callable[["StageContext"], dict]] = None
    model: Optional[Callable[[], Any]] = None

    def __post_init__(self):
        from jaxaudio.errors import ConfigError

        if self.select not in ("last", "best"):
            raise ConfigError(f"stage {self.name}: select={self.select!r}; expected 'last' or 'best'")
        if self.select == "best" and not self.eval_every:
            raise ConfigError(f"stage {self.name}: select='best' needs eval_every (validation picks the best)")

    @property
    def trains(self) -> bool:
        return self.run is None

    @property
    def has_teacher(self) -> bool:
        return self.ema is not None


@dataclasses.dataclass(frozen=True)
class StageContext:
    """What a non-training stage may use: its folder, the mesh and the trained stages' models.

    ``model_of(stage_name or None)`` -> ``(graphdef, state, shardings)``: the final weights of
    a finished training stage, or a freshly initialised model (None). ``eval_step(graphdef,
    shardings, fn)`` compiles ``fn(model, device_batch)``; ``to_device(keys)`` turns a host
    batch into global device arrays of those keys.
    """

    workdir: str
    path: str
    mesh: Any
    model_of: Callable[[Optional[str]], tuple[Any, Any, Any]]
    eval_step: Callable[..., Callable]
    to_device: Callable[[Sequence[str]], Callable[[dict], dict]]

    def host_predictor(self, graphdef, shardings, forward: Callable, keys: Sequence[str], params,
                       model_state) -> Callable[[dict], dict]:
        """``forward(model, device_batch)`` with these weights, compiled once, as a host function:
        a numpy batch of ``keys`` and "index" in, numpy outputs and "index" out (what an evaluator
        or a scoring loop calls)."""
        import numpy as np

        step = self.eval_step(graphdef, shardings,
                              lambda model, batch: {**forward(model, batch), "index": batch["index"]})
        to_device = self.to_device((*keys, "index"))
        return lambda batch: {k: np.asarray(v) for k, v in step(params, model_state, to_device(batch)).items()}


@dataclasses.dataclass(frozen=True)
class System:
    """An experiment: the one object every entry point reads.

    get_config(preset) -> ConfigDict; build_model(config) -> nnx.Module;
    stages(config, workdir) -> [Stage] (cheap to build: data is read when a stage runs);
    evaluators(config) -> {split: Evaluator}, the ``config.eval.validation`` split used during
    training and for best-checkpoint selection, all of them for the final evaluation;
    predict(config) -> ``fn(model, device_batch) -> {output name: array}`` (the forward pass
    that evaluation, predict mode and export verification score);
    eval_keys: the batch keys ``predict`` reads (plus "index");
    finalize_config(config): fills in, before config.json is saved, what depends on the data
    (the SED systems' class list), so that the saved config alone rebuilds the model;
    inference_model(config, workdir, *, export) -> ``jaxaudio.export.InferenceModel`` from a
    trained workdir (``export=True``: the export form of the graph);
    predictor(config, workdir) -> what ``--mode=predict`` runs on a user's files;
    scaling_cases(preset) -> {name: () -> ``jaxaudio.scaling.Case``} (built only when asked for);
    start_weights: the ``config.model`` keys that name files a fresh model's weights come from (a
    PaSST checkpoint, another run's encoder); restoring a trained run ignores them, as its own
    checkpoint holds every weight and those files may have moved since.
    task: what the system's outputs mean ("sed": frame and clip event probabilities; "asd": one
    anomaly score per clip), for the tools and tests that read outputs beyond the evaluators.
    """

    name: str
    description: str
    get_config: Callable[[str], Any]
    presets: tuple[str, ...]
    build_model: Callable[[Any], Any]
    stages: Callable[[Any, str], list[Stage]]
    evaluators: Callable[[Any], dict]
    predict: Callable[[Any], Callable]
    final_stage: Callable[[Any], str]
    eval_keys: tuple[str, ...] = ("audio",)
    finalize_config: Optional[Callable[[Any], None]] = None
    inference_model: Optional[Callable[..., Any]] = None
    predictor: Optional[Callable[..., Any]] = None
    scaling_cases: Optional[Callable[[str], dict]] = None
    mesh_rules: Callable[[Any], Any] = lambda config: None
    start_weights: tuple[str, ...] = ()
    task: str = "sed"
