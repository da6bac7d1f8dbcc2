"""Config sections -> library dataclasses, through one helper that names unknown keys.

Why: a typo in ``--config.model.dropuot=0.1`` must fail loudly with the keys that exist,
not be ignored, and every system should say so the same way.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

from jaxaudio.errors import ConfigError

T = TypeVar("T")


def plain(section: Any) -> dict:
    """A ConfigDict / mapping as a plain dict (nested ConfigDicts too)."""
    if hasattr(section, "to_dict"):
        return section.to_dict()
    return dict(section or {})


def from_section(cls: type[T], section: Mapping[str, Any] | None, where: str, base: T | None = None, **fixed) -> T:
    """``cls(**section)`` (or ``dataclasses.replace(base, **section)``), with ``fixed`` fields
    on top; an unknown key raises ``ConfigError`` naming ``where.key`` and the known fields."""
    values = plain(section)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} for {cls.__name__}; "
                          f"known: {', '.join(sorted(known))}")
    values.update(fixed)
    try:
        return dataclasses.replace(base, **values) if base is not None else cls(**values)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from None


def require_keys(section: Mapping[str, Any], allowed: set[str], where: str) -> None:
    """Fail on keys of ``section`` outside ``allowed`` (for sections with no dataclass)."""
    unknown = sorted(set(plain(section)) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed))}")
