"""Bytes moved by collectives, read from a compiled program's optimized HLO text.

``compiled.as_text()`` is the per-device SPMD program after XLA's passes, so the collectives
in it are the ones that actually run (after combining, async conversion, loop placement).

Conventions (per device, per step):

* **Payload bytes** of one collective: the logical array it communicates, as seen by one
  device. ``all-reduce``: its result (= operand); ``all-gather``: its *result* (the gathered
  array); ``reduce-scatter``: its *operand* (= result x group size); ``all-to-all`` and
  ``collective-permute``: their result. Tuple-shaped (combined) ops sum their elements.
  The cost model turns payload bytes into wire time with per-algorithm factors.
* **Async pairs** ``all-gather-start``/``-done`` (also all-reduce, collective-permute):
  counted once, from the ``-done`` op, whose result is the plain result shape (the
  ``-start`` result is a tuple of operand and result buffers). Ops wrapped in
  ``async-start(..., calls=%c)`` are counted once inside ``%c``.
* **Loops**: an op in a ``while`` body runs once per iteration. The multiplier is the
  product of the ``known_trip_count`` XLA records in each enclosing ``while``'s
  ``backend_config``; where a loop has none, the op counts once and
  ``CollectiveOp.unknown_trip_count`` is set. Both branches of a ``conditional`` count
  (an upper bound).
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections import defaultdict
from typing import Iterable

KINDS = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")

DTYPE_BYTES = {
    "pred": 1, "s2": 1, "u2": 1, "s4": 1, "u4": 1, "s8": 1, "u8": 1,
    "s16": 2, "u16": 2, "f16": 2, "bf16": 2,
    "s32": 4, "u32": 4, "f32": 4, "tf32": 4,
    "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16,
    "f8e4m3fn": 1, "f8e5m2": 1, "f8e4m3": 1, "f8e4m3fnuz": 1, "f8e5m2fnuz": 1, "f8e4m3b11fnuz": 1,
    "f8e3m4": 1, "f8e8m0fnu": 1, "f4e2m1fn": 1,
}

_ARRAY = re.compile(r"\b([a-z][a-z0-9]*)\[([0-9,]*)\]")
_COMPUTATION = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->\s*.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s*(ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_CALLEES = re.compile(r"\b(calls|body|condition|to_apply|true_computation|false_computation)=%?([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_TRIP_COUNT = re.compile(r'"known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"?(\d+)')
_GROUPS_LIST = re.compile(r"replica_groups=\{(\{[\d,]*\}(?:,\s*\{[\d,]*\})*)\}")
_GROUPS_IOTA = re.compile(r"replica_groups=\[(\d+),(\d+)\]")
_GROUPS_MESH = re.compile(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}")
_PAIRS = re.compile(r"source_target_pairs=\{(.*?)\}\}")


@dataclasses.dataclass(frozen=True)
class CollectiveOp:
    """One collective instruction of the program.

    kind: one of ``KINDS``. name: the HLO instruction name. computation: where it sits.
    elements: payload bytes of each array of the (possibly tuple-shaped, combined) op, per
    execution (module docstring). count: executions per step (loop trip counts multiplied).
    group_size: devices per replica group (0 when not stated).
    unknown_trip_count: an enclosing loop had no known trip count (count is a lower bound).
    """

    kind: str
    name: str
    computation: str
    elements: tuple[int, ...]
    count: int
    group_size: int
    unknown_trip_count: bool = False

    @property
    def payload_bytes(self) -> int:
        return sum(self.elements)

    @property
    def total_bytes(self) -> int:
        return self.payload_bytes * self.count


def array_bytes(shape_text: str) -> list[int]:
    """Bytes of each array in an HLO shape string: ``(f32[2,3]{1,0}, bf16[4])`` -> [24, 8]."""
    sizes = []
    for dtype, dims in _ARRAY.findall(shape_text):
        if dtype not in DTYPE_BYTES:
            raise ValueError(f"HLO shape {shape_text!r}: element type {dtype!r} has no known size")
        count = math.prod(int(d) for d in dims.split(",") if d) if dims else 1
        sizes.append(count * DTYPE_BYTES[dtype])
    return sizes


def shape_bytes(shape_text: str) -> int:
    """Bytes of every array in an HLO shape string, tuples summed: ``(f32[2,3]{1,0}, bf16[4])`` -> 32."""
    return sum(array_bytes(shape_text))


def _split_type_and_rest(text: str) -> tuple[str, str]:
    """``'(f32[2], s32[]) all-reduce(...), ...'`` -> (shape text, ``'all-reduce(...), ...'``)."""
    text = text.strip()
    if text.startswith("("):
        depth = 0
        for i, ch in enumerate(text):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                return text[: i + 1], text[i + 1:].strip()
    head, _, rest = text.partition(" ")
    return head, rest.strip()


def group_size(attrs: str) -> int:
    """Devices per replica group, from any of XLA's three spellings; 0 if absent."""
    m = _GROUPS_MESH.search(attrs)
    if m:
        sizes = dict(re.findall(r"'([^']+)'\s*=\s*(\d+)", m.group(1)))
        named = re.findall(r"'([^']+)'", m.group(2))
        return math.prod(int(sizes[a]) for a in named if a in sizes) if named else 1
    m = _GROUPS_IOTA.search(attrs)
    if m:
        return int(m.group(2))
    m = _GROUPS_LIST.search(attrs)
    if m:
        first = m.group(1).split("}")[0].strip("{ ")
        return len([d for d in first.split(",") if d.strip()])
    if "collective-permute" in attrs:
        return 2 if _PAIRS.search(attrs) else 0
    return 0


@dataclasses.dataclass
class _Instruction:
    name: str
    shape: str
    opcode: str
    attrs: str


def _parse(text: str) -> tuple[dict[str, list[_Instruction]], str | None]:
    """Computations -> their instructions; plus the entry computation's name."""
    computations: dict[str, list[_Instruction]] = {}
    entry = None
    current = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("//") or stripped.startswith("HloModule"):
            continue
        if current is None:
            m = _COMPUTATION.match(stripped)
            if m:
                current = m.group(2)
                computations[current] = []
                if m.group(1):
                    entry = current
            continue
        if stripped == "}":
            current = None
            continue
        m = _INSTRUCTION.match(stripped)
        if not m:
            continue
        shape, rest = _split_type_and_rest(m.group(3))
        opcode = rest.split("(", 1)[0].strip()
        computations[current].append(_Instruction(m.group(2), shape, opcode, rest))
    return computations, entry


def _multiplicities(computations, entry) -> tuple[dict[str, int], set[str]]:
    """How many times each computation runs per step, and which sit under a loop of unknown length."""
    callers: dict[str, list[tuple[str, int, bool]]] = defaultdict(list)
    for caller, instructions in computations.items():
        for ins in instructions:
            if ins.opcode in ("async-update", "async-done"):
                continue  # the same wrapped computation as its async-start: count it once
            trip = 1
            unknown = False
            if ins.opcode == "while":
                m = _TRIP_COUNT.search(ins.attrs)
                trip, unknown = (int(m.group(1)), False) if m else (1, True)
            for role, callee in _CALLEES.findall(ins.attrs):
                times = trip if role in ("body", "condition") else 1
                callers[callee].append((caller, times, unknown and role == "body"))
            m = _BRANCHES.search(ins.attrs)
            if m:
                for callee in re.findall(r"%?([\w.\-]+)", m.group(1)):
                    callers[callee].append((caller, 1, False))

    memo: dict[str, tuple[int, bool]] = {}

    def resolve(name: str, stack=()) -> tuple[int, bool]:
        if name == entry or name not in callers:
            return (1 if name == entry else 0), False
        if name in memo:
            return memo[name]
        if name in stack:
            return 0, False
        total, unknown = 0, False
        for caller, times, loop_unknown in callers[name]:
            mult, caller_unknown = resolve(caller, stack + (name,))
            total += mult * times
            unknown |= caller_unknown or (loop_unknown and mult > 0)
        memo[name] = (total, unknown)
        return memo[name]

    counts, unknowns = {}, set()
    for name in computations:
        counts[name], unknown = resolve(name)
        if unknown:
            unknowns.add(name)
    if entry is None:  # a bare snippet without ENTRY: every computation runs once
        counts = {name: 1 for name in computations}
    return counts, unknowns


def _kind(opcode: str) -> tuple[str | None, bool]:
    """(collective kind, is the -start half of an async pair)."""
    for kind in KINDS:
        if opcode == kind or opcode == kind + "-done":
            return kind, False
        if opcode == kind + "-start":
            return kind, True
    return None, False


def parse_collectives(hlo_text: str) -> list[CollectiveOp]:
    """Every collective of the module with its payload bytes and executions per step."""
    computations, entry = _parse(hlo_text)
    counts, unknowns = _multiplicities(computations, entry)
    ops = []
    for comp, instructions in computations.items():
        starts = {ins.name: ins for ins in instructions if _kind(ins.opcode)[1]}
        for ins in instructions:
            kind, is_start = _kind(ins.opcode)
            if kind is None or is_start:
                continue
            attrs = ins.attrs
            if ins.opcode.endswith("-done"):
                operand = re.match(r"[\w\-]+\(\s*%?([\w.\-]+)", attrs)
                start = starts.get(operand.group(1)) if operand else None
                attrs = start.attrs if start is not None else attrs
            size = group_size(ins.opcode + " " + attrs)
            elements = array_bytes(ins.shape)
            if kind == "reduce-scatter":
                elements = [e * max(size, 1) for e in elements]
            ops.append(CollectiveOp(kind, ins.name, comp, tuple(elements), counts.get(comp, 1), size,
                                    comp in unknowns))
    return ops


def bytes_by_kind(ops: Iterable[CollectiveOp], min_element_bytes: int = 0) -> dict[str, int]:
    """Payload bytes per step for each kind.

    ``min_element_bytes`` leaves out arrays smaller than it (per array, so that a scalar
    loss reduction XLA's combiner merged into a gradient all-reduce is still left out).
    """
    totals = {kind: 0 for kind in KINDS}
    for op in ops:
        totals[op.kind] += op.count * sum(e for e in op.elements if e >= min_element_bytes)
    return totals
