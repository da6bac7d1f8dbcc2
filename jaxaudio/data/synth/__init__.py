"""Built-in synthetic data sets, generated from a seed so nothing is downloaded.

`desed`: a DESED-layout sound event detection set with procedural look-alikes of the ten
DESED classes; `ensure_dataset` builds it once and reuses it while the config is unchanged.
"""
from jaxaudio.data.synth.cache import ensure_dataset
from jaxaudio.data.synth.desed import (
    BUILTIN_SUBSETS,
    DEFAULT,
    PRESETS,
    SMALL,
    SUBSETS,
    Event,
    RenderedClip,
    SynthConfig,
    generate,
    render_clip,
)
from jaxaudio.data.synth.sources import CLASSES, make_source
from jaxaudio.data.synth.stats import event_statistics

__all__ = [
    "BUILTIN_SUBSETS", "CLASSES", "DEFAULT", "PRESETS", "SMALL", "SUBSETS", "Event", "RenderedClip", "SynthConfig",
    "ensure_dataset", "event_statistics", "generate", "make_source", "render_clip",
]
