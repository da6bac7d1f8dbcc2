"""Imports point down (DESIGN.md, "Data flows one way" and "Layout").

Every module under ``jaxaudio/`` is read with ``ast`` (nothing is imported): ``import x``,
``from x import y`` (relative ones resolved, those inside functions included) and
``importlib.import_module("...")`` / ``__import__("...")`` with a literal name. An import of a
layer that the tables below forbid fails the test with the file, the line and the rule.
"""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Iterator, Optional

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "jaxaudio"

# Packages beside jaxaudio that build on it: no jaxaudio module imports them.
OUTSIDE = {"experiments", "benchmarks", "tests"}

# The layers: the first folder (or module) under jaxaudio/, as DESIGN.md's "Layout" names them.
LAYERS = {"errors", "utils", "io", "audio", "data", "nn", "models", "objectives", "cluster", "train", "evaluators",
          "metrics", "compress", "convert", "export", "scaling", "predict"}

# layer -> the jaxaudio layers it must not import.
FORBIDDEN: dict[str, set[str]] = {
    "audio": {"data", "nn", "models", "objectives", "train", "evaluators", "export"},  # knows nothing of models
    "data": {"nn", "models", "objectives", "train", "evaluators", "export"},
    "nn": {"models", "train", "evaluators", "export", "scaling"},  # blocks: never models/ (nor what models may not)
    "models": {"train", "evaluators", "export", "scaling"},
    "objectives": {"train", "evaluators", "export"},
    "cluster": {"train", "evaluators", "export"},  # beside objectives
    # The trainer is handed evaluators as callables: it never imports them.
    "train": {"evaluators", "export", "scaling", "predict"},
    "metrics": {"nn", "models", "train", "evaluators", "export"},  # numpy on host
}

# The bottom layers: the only jaxaudio layers they may import (besides themselves).
ONLY: dict[str, set[str]] = {
    "errors": set(),
    "utils": {"errors"},
    "io": {"errors", "utils"},  # paths, on its way into utils/
}

# (file, forbidden layer) pairs tolerated while a port is under way; while an entry is here its
# violations are printed, not failed. Empty: jaxaudio imports no experiment and no upper layer.
KNOWN_UNTIL_PORTED: set[tuple[str, str]] = set()


@dataclasses.dataclass(frozen=True)
class Violation:
    file: str  # relative to the root that was checked, with "/"
    line: int
    target: str  # the imported module, or the file's problem
    layer: str  # the layer that may not be imported ("experiments", "models", ...)
    rule: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: imports {self.target}: {self.rule}"


def _module_name(rel: Path) -> tuple[str, bool]:
    """("jaxaudio.nn.cnn", is_package) for jaxaudio/nn/cnn.py; __init__.py names its package."""
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _resolve(module: str, is_package: bool, level: int, name: Optional[str]) -> Optional[str]:
    """The absolute module a ``from <level dots><name> import ...`` in ``module`` refers to."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    if level - 1 > len(package) - 1:
        return None  # above the top package: Python refuses it too
    base = package[: len(package) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _literal_prefix(node: ast.expr) -> Optional[str]:
    """"experiments.x" for a string constant; the constant start of an f-string."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        head = str(node.values[0].value)
        return head if "." in head else None  # "experiments.{name}" names its package; "{pkg}.x" does not
    return None


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, absolute module) for every import anywhere in the tree."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module if node.level == 0 else _resolve(module, is_package, node.level, node.module)
            if base is None:
                continue
            if base == PACKAGE:  # `from jaxaudio import models`: the names are the layers
                for alias in node.names:
                    yield node.lineno, f"{PACKAGE}.{alias.name}"
            else:
                yield node.lineno, base
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if name in ("import_module", "__import__"):
                target = _literal_prefix(node.args[0])
                if target:
                    yield node.lineno, target.rstrip(".")


def _rule_for(layer: str, target: str) -> Optional[tuple[str, str]]:
    """(forbidden layer, rule text) when a module of ``layer`` may not import ``target``."""
    parts = target.split(".")
    if parts[0] in OUTSIDE:
        return parts[0], f"jaxaudio never imports {parts[0]}/ (it builds on jaxaudio)"
    if parts[0] != PACKAGE or len(parts) < 2 or parts[1] == layer:
        return None
    other = parts[1]
    if layer in ONLY and other not in ONLY[layer]:
        allowed = ", ".join(sorted(ONLY[layer])) or "nothing"
        return other, f"{layer} is a bottom layer: it may import only {allowed} of jaxaudio"
    if other in FORBIDDEN.get(layer, ()):
        return other, f"{layer}/ never imports {other}/ (imports point down)"
    return None


def check_layers(root: Path) -> list[Violation]:
    """Every upward import in ``root/jaxaudio``, sorted by file and line."""
    found = []
    for path in sorted((root / PACKAGE).rglob("*.py")):
        rel = path.relative_to(root)
        if "__pycache__" in rel.parts:
            continue
        shown = rel.as_posix()
        parts = rel.parts
        layer = Path(parts[1]).stem if len(parts) > 2 or parts[1] != "__init__.py" else PACKAGE
        module, is_package = _module_name(rel)
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=shown)
        except (SyntaxError, UnicodeDecodeError) as err:
            found.append(Violation(shown, getattr(err, "lineno", 0) or 0, "(unparsable)", "?",
                                   f"cannot be parsed, so its imports cannot be checked: {err}"))
            continue
        for line, target in imported_modules(tree, module, is_package):
            hit = _rule_for(layer, target)
            if hit:
                found.append(Violation(shown, line, target, hit[0], hit[1]))
    return sorted(set(found), key=lambda v: (v.file, v.line, v.target))


def test_imports_point_down():
    violations = check_layers(REPO)
    known = [v for v in violations if (v.file, v.layer) in KNOWN_UNTIL_PORTED]
    new = [v for v in violations if (v.file, v.layer) not in KNOWN_UNTIL_PORTED]
    if KNOWN_UNTIL_PORTED:
        print(f"\nKNOWN_UNTIL_PORTED still holds {len(KNOWN_UNTIL_PORTED)} entries:")
        for entry in sorted(KNOWN_UNTIL_PORTED):
            lines = [v.line for v in known if (v.file, v.layer) == entry]
            state = f"lines {lines}" if lines else "no longer violated: remove it from KNOWN_UNTIL_PORTED"
            print(f"  {entry[0]} -> {entry[1]}: {state}")
    assert not new, "upward imports (DESIGN.md, 'Data flows one way'):\n" + "\n".join(map(str, new))


def test_every_layer_is_named_in_the_tables():
    for table in (FORBIDDEN, ONLY):
        for layer, others in table.items():
            assert layer in LAYERS and others <= LAYERS, (layer, others - LAYERS)
    present = {Path(p.name).stem for p in (REPO / PACKAGE).iterdir() if p.name != "__init__.py"
               and (p.suffix == ".py" or (p / "__init__.py").exists())}
    assert not present - LAYERS, (f"new layers under jaxaudio/: {sorted(present - LAYERS)}; add them to LAYERS "
                                  "(and their rules to FORBIDDEN) in tests/test_layers.py")


def _plant(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_checker_reports_planted_upward_imports_with_file_and_line(tmp_path):
    _plant(tmp_path, {
        "jaxaudio/__init__.py": "",
        "jaxaudio/nn/__init__.py": "from . import cnn\n",
        "jaxaudio/nn/cnn.py": "from jaxaudio.errors import ConfigError\nfrom jaxaudio.nn import gru\n",
        "jaxaudio/nn/bad.py": (
            '"""A block that reaches up."""\n'
            "from jaxaudio.errors import ConfigError\n"
            "from jaxaudio.models import crnn\n"  # line 3
            "\n"
            "def late():\n"
            "    from ..models import pmam\n"  # line 6: relative, inside a function
            "    return pmam\n"
        ),
        "jaxaudio/x.py": "import os\nimport experiments.run\n",  # line 2
        "jaxaudio/models/crnn.py": "from jaxaudio.nn import cnn\nfrom jaxaudio import train\n",  # line 2
        "jaxaudio/metrics/psds.py": "import importlib\nm = importlib.import_module('jaxaudio.train.log')\n",
        "jaxaudio/train/loop.py": "import importlib\nx = importlib.import_module(f'experiments.{1}.system')\n",
        "jaxaudio/errors.py": "from jaxaudio.utils import paths\n",
        "jaxaudio/utils/__init__.py": "from jaxaudio.errors import ConfigError\n",
        "jaxaudio/audio/broken.py": "def f(:\n",
    })
    found = {(v.file, v.line, v.target) for v in check_layers(tmp_path)}
    assert found == {
        ("jaxaudio/nn/bad.py", 3, "jaxaudio.models"),
        ("jaxaudio/nn/bad.py", 6, "jaxaudio.models"),
        ("jaxaudio/x.py", 2, "experiments.run"),
        ("jaxaudio/models/crnn.py", 2, "jaxaudio.train"),
        ("jaxaudio/metrics/psds.py", 2, "jaxaudio.train.log"),
        ("jaxaudio/train/loop.py", 2, "experiments"),
        ("jaxaudio/errors.py", 1, "jaxaudio.utils"),
        ("jaxaudio/audio/broken.py", 1, "(unparsable)"),
    }
    messages = {str(v) for v in check_layers(tmp_path)}
    assert "jaxaudio/nn/bad.py:3: imports jaxaudio.models: nn/ never imports models/ (imports point down)" in messages
    assert ("jaxaudio/x.py:2: imports experiments.run: jaxaudio never imports experiments/ (it builds on jaxaudio)"
            in messages)
