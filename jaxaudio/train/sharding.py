"""Parameter shardings from regex rules on parameter paths.

A rule list maps a path such as ``layers/0/mlp/fc_in/kernel`` to a *kind* of layout, and
the kind is turned into a ``PartitionSpec`` using the array's shape and the mesh. So
data-parallel (fsdp=tensor=1), FSDP and tensor-parallel runs are config changes, and the
model code never mentions sharding.

Kinds:
  ``replicate``  the full array on every device.
  ``fsdp``       the largest dimension divisible by the ``fsdp`` axis size is split over it,
                 if the array has at least ``min_size`` elements (small arrays are cheaper
                 to replicate than to gather); else replicated.
  ``tensor_out`` the last (output) dimension is split over ``tensor`` (column-parallel:
                 attention q/k/v, MLP input layer); then ``fsdp`` on a remaining dimension.
  ``tensor_in``  the first (input) dimension is split over ``tensor`` (row-parallel:
                 attention output, MLP output layer); then ``fsdp`` on a remaining dimension.
The first matching rule wins (``re.search`` on the path); unmatched arrays get ``fsdp``.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxaudio.errors import ConfigError
from jaxaudio.train.state import TrainState

Rules = Sequence[tuple[str, str]]

DEFAULT_MIN_SIZE = 2**14

DEFAULT_RULES: list[tuple[str, str]] = [
    (r"(^|/)(query|key|value)/(kernel|bias)$", "tensor_out"),
    (r"(^|/)attention/out/kernel$", "tensor_in"),
    (r"(^|/)mlp/fc_in/(kernel|bias)$", "tensor_out"),
    (r"(^|/)mlp/fc_out/kernel$", "tensor_in"),
    (r"(^|/)(norm[^/]*|bn[^/]*|batch_norm[^/]*)/[^/]+$", "replicate"),
    # Recurrent weights are read at every time step: sharding them would gather them per step.
    (r"(^|/)(w_hh|b_hh)$", "replicate"),
    (r".*", "fsdp"),
]

KINDS = ("replicate", "fsdp", "tensor_in", "tensor_out")


def path_parts(path: tuple) -> list[str]:
    """A jax key path as plain strings: dict keys, attribute names and sequence indices."""
    parts = []
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            parts.append(key.name)
        elif isinstance(key, jax.tree_util.FlattenedIndexKey):
            parts.append(str(key.key))
        else:
            parts.append(str(key))
    return parts


def path_to_str(path: tuple) -> str:
    """``(DictKey('layers'), DictKey(0), ..., GetAttrKey('value'))`` -> ``'layers/0/...'``.

    The trailing ``.value`` that NNX variables add is dropped so that rules see the
    parameter's name, the same for params, optimizer moments and checkpoints.
    """
    parts = path_parts(path)
    while parts and parts[-1] in ("value", "raw_value"):
        parts.pop()
    return "/".join(parts)


def _fsdp_dim(shape: tuple[int, ...], taken: set[int], fsdp_size: int, min_size: int) -> int | None:
    """Largest free dimension divisible by the fsdp axis size, or None (replicate)."""
    size = 1
    for d in shape:
        size *= d
    if fsdp_size <= 1 or size < min_size:
        return None
    candidates = [i for i, d in enumerate(shape) if i not in taken and d % fsdp_size == 0]
    if not candidates:
        return None
    return max(candidates, key=lambda i: (shape[i], -i))


def spec_for(kind: str, shape: tuple[int, ...], mesh: Mesh, min_size: int = DEFAULT_MIN_SIZE) -> P:
    """The ``PartitionSpec`` of one array of ``shape`` laid out as ``kind`` on ``mesh``."""
    if kind not in KINDS:
        raise ConfigError(f"sharding rule kind {kind!r} is unknown; expected one of {KINDS}")
    axes: list[Any] = [None] * len(shape)
    if kind == "replicate" or not shape:
        return P()
    tensor_size = mesh.shape.get("tensor", 1)
    if kind in ("tensor_in", "tensor_out") and tensor_size > 1:
        dim = 0 if kind == "tensor_in" else len(shape) - 1
        if shape[dim] % tensor_size == 0:
            axes[dim] = "tensor"
    taken = {i for i, a in enumerate(axes) if a is not None}
    dim = _fsdp_dim(shape, taken, mesh.shape.get("fsdp", 1), min_size)
    if dim is not None:
        axes[dim] = "fsdp"
    while axes and axes[-1] is None:
        axes.pop()
    return P(*axes)


def resolve_rules(config_rules=(), model_rules=()) -> list[tuple[str, str]]:
    """The rule list of a run: ``config.sharding.rules`` first (the user's word wins), then
    the model's ``SHARDING_RULES``, then ``DEFAULT_RULES``. Each rule is checked here, so a
    bad kind or regex names the rule before anything is compiled."""
    rules = []
    for source, entries in (("config.sharding.rules", config_rules), ("SHARDING_RULES", model_rules)):
        for i, rule in enumerate(entries or ()):
            if len(rule) != 2:
                raise ConfigError(f"{source}[{i}]: expected (regex, kind), got {rule!r}")
            pattern, kind = rule
            if kind not in KINDS:
                raise ConfigError(f"{source}[{i}]: kind {kind!r} is unknown; expected one of {KINDS}")
            try:
                re.compile(pattern)
            except re.error as err:
                raise ConfigError(f"{source}[{i}]: {pattern!r} is not a valid regex ({err})") from None
            rules.append((str(pattern), str(kind)))
    return rules + list(DEFAULT_RULES)


def report_unused_rules(
    abstract_params, mesh: Mesh, rules: Rules, min_size: int = DEFAULT_MIN_SIZE, log=None
) -> list[str]:
    """Rules that cannot apply, each as a sentence (and logged): a regex that matches no
    parameter (or only parameters an earlier rule took), and a tensor rule on a mesh whose
    ``tensor`` axis divides none of the dimensions it would split."""
    paths = [path_to_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(abstract_params)[0]]
    shapes = [_shape(leaf) for leaf in jax.tree.leaves(abstract_params)]
    won: dict[int, list[int]] = {}
    for j, path in enumerate(paths):
        for i, (pattern, _) in enumerate(rules):
            if re.search(pattern, path):
                won.setdefault(i, []).append(j)
                break
    problems = []
    tensor = mesh.shape.get("tensor", 1)
    for i, (pattern, kind) in enumerate(rules):
        if pattern == ".*":
            continue
        hits = won.get(i, [])
        if not hits:
            if any(re.search(pattern, p) for p in paths):
                problems.append(f"sharding rule {pattern!r} -> {kind}: every parameter it matches is taken by an "
                                "earlier rule")
            elif (pattern, kind) not in DEFAULT_RULES:
                problems.append(f"sharding rule {pattern!r} -> {kind}: matches no parameter")
            continue
        if kind in ("tensor_in", "tensor_out") and tensor > 1:
            dim = (lambda s: 0) if kind == "tensor_in" else (lambda s: len(s) - 1)
            if not any(shapes[j] and shapes[j][dim(shapes[j])] % tensor == 0 for j in hits):
                problems.append(f"sharding rule {pattern!r} -> {kind}: the tensor axis ({tensor}) divides none of "
                                "the dimensions it would split; those parameters are not tensor-parallel")
    if log is not None:
        for line in problems:
            log(line)
    return problems


def kind_for(path: str, rules: Rules) -> str:
    """First rule whose regex matches ``path``; ``fsdp`` when none does."""
    for pattern, kind in rules:
        if re.search(pattern, path):
            return kind
    return "fsdp"


def _shape(leaf) -> tuple[int, ...]:
    return tuple(getattr(leaf, "shape", ()))


def param_shardings(abstract_params, mesh: Mesh, rules: Rules = DEFAULT_RULES, min_size: int = DEFAULT_MIN_SIZE):
    """Same-structure pytree of ``NamedSharding`` for ``abstract_params``.

    ``abstract_params`` may hold arrays or ``jax.ShapeDtypeStruct`` (e.g. from
    ``nnx.eval_shape``/``jax.eval_shape``); ``nnx.State`` works.
    """

    def one(path, leaf):
        kind = kind_for(path_to_str(path), rules)
        return NamedSharding(mesh, spec_for(kind, _shape(leaf), mesh, min_size))

    return jax.tree_util.tree_map_with_path(one, abstract_params)


def _mirror_shardings(tree, named: dict[tuple[str, ...], tuple[tuple[int, ...], NamedSharding]], mesh: Mesh):
    """Give each leaf of ``tree`` the sharding of the parameter whose path ends its own path.

    Optimizer states wrap parameter-shaped trees (Adam's mu/nu inside chains and
    partitions), so a leaf ``.../mu/layers/0/kernel`` takes the sharding of
    ``layers/0/kernel`` when the shapes agree. Anything else (step counts) is replicated.
    """
    by_length = sorted({len(k) for k in named}, reverse=True)

    def one(path, leaf):
        parts = tuple(p for p in path_to_str(path).split("/") if p)
        for length in by_length:
            if length > len(parts):
                continue
            hit = named.get(parts[len(parts) - length:])
            if hit is not None and hit[0] == _shape(leaf):
                return hit[1]
        return NamedSharding(mesh, P())

    return jax.tree_util.tree_map_with_path(one, tree)


def state_shardings(
    abstract_state: TrainState, mesh: Mesh, rules: Rules = DEFAULT_RULES, min_size: int = DEFAULT_MIN_SIZE
) -> TrainState:
    """A ``TrainState`` of shardings: params and model_state by rule, optimizer moments
    mirroring their parameter, teacher like the student, step and rng replicated."""
    params = param_shardings(abstract_state.params, mesh, rules, min_size)
    model_state = param_shardings(abstract_state.model_state, mesh, rules, min_size)

    named = {
        tuple(p for p in path_to_str(path).split("/") if p): (_shape(leaf), sharding)
        for (path, leaf), sharding in zip(
            jax.tree_util.tree_flatten_with_path(abstract_state.params)[0], jax.tree.leaves(params)
        )
    }
    opt_state = _mirror_shardings(abstract_state.opt_state, named, mesh)

    teacher = None
    if abstract_state.teacher is not None:
        teacher = {
            "params": param_shardings(abstract_state.teacher["params"], mesh, rules, min_size),
            "model_state": param_shardings(abstract_state.teacher["model_state"], mesh, rules, min_size),
        }
    masks = None
    if abstract_state.masks is not None:
        masks = param_shardings(abstract_state.masks, mesh, rules, min_size)
    replicated = NamedSharding(mesh, P())
    return TrainState(
        step=replicated,
        params=params,
        model_state=model_state,
        opt_state=opt_state,
        rng=replicated,
        teacher=teacher,
        masks=masks,
    )


def with_shardings(abstract_tree, shardings):
    """``ShapeDtypeStruct`` tree carrying shardings: the restore target orbax needs."""
    return jax.tree.map(
        lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
        abstract_tree,
        shardings,
    )


def _state_layout(model_fn, tx, rng, mesh, rules, min_size, with_teacher):
    """(init function, graphdef, abstract state, shardings) of a model's train state."""
    from jaxaudio.train.state import create_train_state

    def init():
        return create_train_state(model_fn(), tx, rng, with_teacher=with_teacher)

    graphdef, abstract_state = _eval_shape_with_graphdef(init)
    return init, graphdef, abstract_state, state_shardings(abstract_state, mesh, rules, min_size)


def create_sharded_state(
    model_fn: Callable[[], Any],
    tx,
    rng: jax.Array,
    mesh: Mesh,
    rules: Rules = DEFAULT_RULES,
    min_size: int = DEFAULT_MIN_SIZE,
    with_teacher: bool = False,
):
    """Build ``(graphdef, state, shardings)`` with every array created already sharded.

    The model is initialised inside a jit whose ``out_shardings`` are the rule shardings,
    so an FSDP-sized model never has to fit on one device. ``model_fn`` builds the model
    (with its own ``nnx.Rngs``); it is traced twice (shapes, then values).
    """
    init, graphdef, _, shardings = _state_layout(model_fn, tx, rng, mesh, rules, min_size, with_teacher)
    state = jax.jit(lambda: init()[1], out_shardings=shardings)()
    return graphdef, state, shardings


def abstract_sharded_state(
    model_fn: Callable[[], Any],
    tx,
    rng: jax.Array,
    mesh: Mesh,
    rules: Rules = DEFAULT_RULES,
    min_size: int = DEFAULT_MIN_SIZE,
    with_teacher: bool = False,
):
    """``create_sharded_state``'s state as ShapeDtypeStructs with shardings, computing nothing:
    the target layout for restoring a checkpoint written with another optimizer's state."""
    _, _, abstract_state, shardings = _state_layout(model_fn, tx, rng, mesh, rules, min_size, with_teacher)
    return with_shardings(abstract_state, shardings)


def _eval_shape_with_graphdef(init):
    """Shapes of the state without computing it, plus the (static) graphdef."""
    box = {}

    def shapes_only():
        graphdef, state = init()
        box["graphdef"] = graphdef
        return state

    abstract_state = jax.eval_shape(shapes_only)
    return box["graphdef"], abstract_state
