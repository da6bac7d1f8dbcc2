"""Example sound banks made from the procedural sources, laid out as a user's would be.

Why: the own-sounds path (banks -> soundscapes -> training -> predict) should be tried, tested
and benchmarked without anybody's recordings. The files look like a user's: class folders
with their own names, isolated events at several sample rates, mono and stereo, wav and flac,
each with a little silence around the sound, and long background ambiences.

    python -m jaxaudio.data.synth.demo_banks OUT   # OUT/foreground/<class>/..., OUT/background/...
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from jaxaudio.data.synth.backgrounds import make_background
from jaxaudio.data.synth.sources import make_source

# our class names -> the procedural source each is drawn from
DEMO_CLASSES = {"alarm": "Alarm_bell_ringing", "blender": "Blender", "cat": "Cat", "dishes": "Dishes",
                "water": "Running_water"}
_FORMATS = ((44100, 2, "flac"), (22050, 1, "wav"), (16000, 1, "wav"), (48000, 1, "flac"))


def _write(path: Path, x: np.ndarray, sample_rate: int, channels: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.stack([x, 0.9 * x], axis=1) if channels == 2 else x
    sf.write(str(path), data, sample_rate, subtype="PCM_16")


def write_demo_banks(root, *, files_per_class: int = 12, backgrounds: int = 8, background_seconds: float = 15.0,
                     classes: dict[str, str] = DEMO_CLASSES, seed: int = 0) -> tuple[Path, Path]:
    """Write ``root/foreground/<class>/*`` and ``root/background/*``; returns both folders."""
    root = Path(root)
    fg, bg = root / "foreground", root / "background"
    rng = np.random.default_rng(seed)
    for name, source in classes.items():
        for i in range(files_per_class):
            sample_rate, channels, ext = _FORMATS[i % len(_FORMATS)]
            event = make_source(source, rng, sample_rate)
            event = 0.25 * event / np.max(np.abs(event))
            pad = np.zeros(int(rng.uniform(0.05, 0.3) * sample_rate))
            _write(fg / name / f"{name}_{i:03d}.{ext}", np.concatenate([pad, event, pad]), sample_rate, channels)
    for i in range(backgrounds):
        sample_rate, channels, ext = _FORMATS[i % len(_FORMATS)]
        bed = make_background(rng, int(background_seconds * sample_rate), sample_rate)
        _write(bg / f"room_{i:02d}.{ext}", 0.1 * bed / np.max(np.abs(bed)), sample_rate, channels)
    return fg, bg


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m jaxaudio.data.synth.demo_banks OUT")
    for folder in write_demo_banks(sys.argv[1]):
        print(folder)
