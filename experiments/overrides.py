"""Dotted command-line overrides (``--config.train.lr=3e-4``) applied to a ConfigDict."""
from __future__ import annotations

import ast
from typing import Any

from jaxaudio.errors import ConfigError


def _parse_value(text: str, old: Any, key: str) -> Any:
    """Convert ``text`` to the type of the value it replaces."""
    if isinstance(old, bool):
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"--config.{key}: expected a boolean, got {text!r}")
    if isinstance(old, (int, float)) and not isinstance(old, bool):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ConfigError(f"--config.{key}: expected a number, got {text!r}") from None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"--config.{key}: expected a number, got {text!r}")
        return type(old)(value) if isinstance(old, float) or float(value).is_integer() else value
    if isinstance(old, str) or old is None:
        return text
    if isinstance(old, (tuple, list)):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = tuple(part.strip() for part in text.split(",") if part.strip())
        if not isinstance(value, (tuple, list)):
            value = (value,)
        return type(old)(value)
    raise ConfigError(f"--config.{key}: cannot override a value of type {type(old).__name__}")


def apply_overrides(config, overrides: dict[str, str]):
    """Set each dotted key of ``overrides`` in ``config``; unknown keys list what exists."""
    for key, text in overrides.items():
        node = config
        parts = key.split(".")
        for depth, part in enumerate(parts):
            known = list(node.keys()) if hasattr(node, "keys") else []
            if part not in known:
                prefix = ".".join(parts[:depth]) or "(top level)"
                raise ConfigError(
                    f"--config.{key}: unknown key {part!r} under {prefix}; "
                    f"keys there: {', '.join(sorted(known))}"
                )
            if depth == len(parts) - 1:
                old = node[part]
                with config.unlocked() if hasattr(config, "unlocked") else _null():
                    node[part] = _parse_value(text, old, key)
            else:
                node = node[part]
    return config


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
