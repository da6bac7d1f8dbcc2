"""Built-in synthetic data sets, generated from a seed so nothing is downloaded.

`desed`: a DESED-layout sound event detection set with procedural look-alikes of the ten
DESED classes; `ensure_dataset` builds it once and reuses it while the config is unchanged.
The other generators (`asd`, `scenes`, ...) are modules of their own.

The names below load on first use: importing one generator (a worker process of the scene set,
say) should not import the DESED one and scipy.signal with it.
"""
import importlib

_WHERE = {
    "ensure_dataset": "cache",
    **{name: "desed" for name in ("BUILTIN_SUBSETS", "DEFAULT", "PRESETS", "SMALL", "SUBSETS", "Event",
                                  "RenderedClip", "SynthConfig", "generate", "render_clip")},
    "CLASSES": "sources", "make_source": "sources",
    "event_statistics": "stats",
}

__all__ = sorted(_WHERE)


def __getattr__(name):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
