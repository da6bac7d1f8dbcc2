"""A built-in aerial-scene set in the NWPU-RESISC45 layout, for image classification.

    <out>/<class>/<class>_NNN.jpg     one folder per class, numbered from 001 as RESISC45 is
    <out>/synth_images.csv            per image: its 0-based index, the view, lighting and the painter's parameters
    <out>/synth_manifest.json         written last: the config, the generator version, file sizes

Fifteen classes named as RESISC45's (scene_painters.py paints each from numpy noise, hashed
cells and signed distances). Every image is drawn from generators keyed by (seed, class name,
index), so the set is the same whatever the number of worker processes, and a class's images do
not depend on which other classes or how many images are generated.

Within a class an image varies in its painter's parameters (orientation, scale, density,
colours) and in a view and sensor shared by all classes: zoom, a small rotation, an offset,
white balance, brightness, haze and sensor noise. Colours are drawn from wide ranges that
classes share, so the per-channel mean and spread of an image do not name its class (a
nearest-class-mean on them is far from perfect: tests/data/synth/test_scenes.py); what does is
structure: stripes, circles, crowns, roofs, cars, shorelines, markings.

JPEG at quality 90 by default, as RESISC45 ships (its images are JPEG, so the models meet its
block artefacts here too, and files are 4x (64 px) to 6x (256 px) smaller than PNG); ``image_format="png"``
writes lossless files. Encoding is deterministic for a given Pillow/libjpeg build; the manifest
records every file's sha256.

    python -m jaxaudio.data.synth.scenes --out DIR --preset tiny
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxaudio.data.synth import manifest
from jaxaudio.data.synth.cache import ensure_generated
from jaxaudio.data.synth.parallel import render_all, start_over
from jaxaudio.data.synth.scene_painters import PAINTERS, Field
from jaxaudio.errors import ConfigError

# Bump when a change to the generator changes its output: cached sets then regenerate.
GENERATOR_VERSION = 1
IMAGES_CSV = "synth_images.csv"
CLASSES = tuple(sorted(PAINTERS))
IMAGE_FORMATS = ("jpg", "png")
HAZE_COLOUR = (0.72, 0.76, 0.82)  # a bluish-grey veil, as atmospheric scattering adds


@dataclass(frozen=True)
class ScenesConfig:
    """What to generate: `n_per_class` images of image_size x image_size RGB per class.

    The view and sensor ranges apply to every class alike, so they vary images without
    telling classes apart.
    """

    seed: int = 0
    classes: tuple[str, ...] = CLASSES
    n_per_class: int = 150
    image_size: int = 64
    image_format: str = "jpg"  # "jpg" (at jpeg_quality, as RESISC45) or "png" (lossless)
    jpeg_quality: int = 90
    supersample: int = 2  # painted at image_size * supersample, then box-filtered: edges anti-aliased
    zoom: tuple[float, float] = (0.8, 1.25)  # world units per image side, log-uniform: the ground sampling
    rotation_deg: float = 12.0  # extra view rotation, uniform in +-rotation_deg (painters orient their own scene)
    shift: float = 0.15  # view centre offset, uniform in +-shift world units per axis
    brightness: tuple[float, float] = (0.75, 1.3)  # overall gain, log-uniform: exposure and sun
    white_balance: float = 0.06  # standard deviation of the per-channel log gain
    haze: tuple[float, float] = (0.0, 0.3)  # blend towards HAZE_COLOUR, uniform
    noise: tuple[float, float] = (0.003, 0.02)  # sensor noise standard deviation on [0, 1] pixels, uniform


# RESISC45-sized: 700 images of 256x256 per class (it has 45 classes; we paint 15), 10,500 in all.
# 256 pixels resolve every painted detail, so no supersampling (one pixel's edge ramps suffice):
# about 0.1 s of one core per image, 3x less than supersample=2.
RESISC_LIKE = ScenesConfig(n_per_class=700, image_size=256, supersample=1)
# A small CNN trains on it on a CPU in minutes: 15 x 150 images of 64x64 (about 45 s of one core).
TINY = ScenesConfig()
SMOKE = ScenesConfig(classes=("dense_residential", "forest", "lake", "rectangular_farmland"), n_per_class=12,
                     image_size=32)
PRESETS = {"smoke": SMOKE, "tiny": TINY, "resisc_like": RESISC_LIKE}


@dataclass
class RenderedScene:
    """image: (size, size, 3) uint8, exactly what is encoded; facts: what was drawn for it."""

    image: np.ndarray
    facts: dict


def validate_config(config: ScenesConfig) -> None:
    def bad(key, problem):
        raise ConfigError(f"ScenesConfig.{key}: {problem}")

    if config.seed < 0:
        bad("seed", f"{config.seed} must be >= 0")
    if not config.classes or len(set(config.classes)) != len(config.classes):
        bad("classes", f"{config.classes!r} must be a non-empty tuple without repeats")
    for name in config.classes:
        if name not in PAINTERS:
            bad("classes", f"unknown class {name!r}; choose from {', '.join(CLASSES)}")
    if config.n_per_class < 1:
        bad("n_per_class", f"{config.n_per_class} must be at least 1")
    if not 16 <= config.image_size <= 1024:
        bad("image_size", f"{config.image_size} must be in [16, 1024] pixels")
    if config.image_format not in IMAGE_FORMATS:
        bad("image_format", f"{config.image_format!r}: choose from {', '.join(IMAGE_FORMATS)}")
    if not 1 <= config.jpeg_quality <= 100:
        bad("jpeg_quality", f"{config.jpeg_quality} must be in [1, 100]")
    if not 1 <= config.supersample <= 4:
        bad("supersample", f"{config.supersample} must be in [1, 4]")
    for key in ("zoom", "brightness"):
        lo, hi = getattr(config, key)
        if not 0 < lo <= hi:
            bad(key, f"need 0 < low <= high, got {lo}, {hi}")
    lo, hi = config.haze
    if not 0 <= lo <= hi < 1:
        bad("haze", f"need 0 <= low <= high < 1, got {lo}, {hi}")
    lo, hi = config.noise
    if not 0 <= lo <= hi:
        bad("noise", f"need 0 <= low <= high, got {lo}, {hi}")
    if config.rotation_deg < 0 or config.shift < 0 or config.white_balance < 0:
        bad("rotation_deg", "rotation_deg, shift and white_balance must be >= 0")


class _Streams:
    """Independent generators named under one image's key, so one part's draws (the sensor)
    never shift another's (the scene)."""

    def __init__(self, key):
        self.key = [int(k) for k in key]

    def __call__(self, name: str) -> np.random.Generator:
        return np.random.default_rng(self.key + [zlib.crc32(name.encode())])


def _streams(config: ScenesConfig, class_name: str, index: int) -> _Streams:
    if class_name not in PAINTERS:
        raise ConfigError(f"scene class {class_name!r}: not a class of this generator ({', '.join(CLASSES)})")
    if index < 0:
        raise ConfigError(f"scene {class_name}/{index}: the index must be >= 0")
    return _Streams([config.seed, zlib.crc32(class_name.encode()), index])


def render_image(config: ScenesConfig, class_name: str, index: int) -> RenderedScene:
    """Render image `index` (0-based) of a class; a pure function of (config, class, index)."""
    streams = _streams(config, class_name, index)
    view = streams("view")
    zoom = math.exp(view.uniform(math.log(config.zoom[0]), math.log(config.zoom[1])))
    rotation = view.uniform(-config.rotation_deg, config.rotation_deg)
    sx, sy = view.uniform(-config.shift, config.shift, 2)
    n = config.image_size * config.supersample
    grid = (np.arange(n) + 0.5) / n - 0.5
    gx, gy = np.meshgrid(grid, grid)  # gx along columns, gy down the rows
    c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    x, y = zoom * (c * gx - s * gy) + sx, zoom * (s * gx + c * gy) + sy
    img, painted = PAINTERS[class_name](Field(x, y, zoom / n, streams("scene")))

    sensor = streams("sensor")
    gains = np.exp(sensor.normal(0, config.white_balance, 3))
    brightness = math.exp(sensor.uniform(math.log(config.brightness[0]), math.log(config.brightness[1])))
    haze = sensor.uniform(*config.haze)
    haze_colour = np.asarray(HAZE_COLOUR) * sensor.uniform(0.85, 1.1)
    sigma = sensor.uniform(*config.noise)
    img = np.clip(img, 0, 1) * gains * brightness
    img = img * (1 - haze) + haze_colour * haze
    k = config.supersample
    img = img.reshape(config.image_size, k, config.image_size, k, 3).mean(axis=(1, 3))
    img = img + sigma * sensor.standard_normal(img.shape)
    image = np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    facts = {"zoom": zoom, "rotation_deg": rotation, "shift_x": sx, "shift_y": sy, "brightness": brightness,
             "haze": haze, "noise": sigma, **painted}
    return RenderedScene(image, {k: v if isinstance(v, int) else round(float(v), 4) for k, v in facts.items()})


def render_set(config: ScenesConfig, n_per_class: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All images in memory, nothing written: (images (N, size, size, 3) uint8, labels (N,)
    int indices into config.classes), class by class; the first n_per_class of each class."""
    validate_config(config)
    n = config.n_per_class if n_per_class is None else n_per_class
    images = [render_image(config, name, i).image for name in config.classes for i in range(n)]
    return np.stack(images), np.repeat(np.arange(len(config.classes)), n).astype(np.int32)


def image_path(config: ScenesConfig, class_name: str, index: int) -> str:
    """The image's path under the root, as RESISC45 names it: <class>/<class>_001.jpg for index 0."""
    digits = max(3, len(str(config.n_per_class)))
    return f"{class_name}/{class_name}_{index + 1:0{digits}d}.{config.image_format}"


def encode(config: ScenesConfig, image: np.ndarray, path) -> None:
    """Write image (size, size, 3) uint8 to path (or a binary file object) in config.image_format."""
    from PIL import Image

    if config.image_format == "jpg":
        # Pinned settings (4:2:0 chroma, no optimisation) keep the bytes fixed across Pillow defaults.
        Image.fromarray(image).save(path, format="JPEG", quality=config.jpeg_quality, subsampling=2,
                                    optimize=False)
    else:
        Image.fromarray(image).save(path, format="PNG", compress_level=6)


def image_jobs(config: ScenesConfig) -> list[tuple[str, int]]:
    """Every image of the set as (class name, index), in a fixed order."""
    return [(name, i) for name in config.classes for i in range(config.n_per_class)]


def _render_and_write(job):
    """Worker: render one image, encode it, return its csv row and file facts."""
    config, root, (class_name, index) = job
    scene = render_image(config, class_name, index)
    rel = image_path(config, class_name, index)
    path = Path(root) / rel
    encode(config, scene.image, path)
    view = {k: scene.facts[k] for k in ("zoom", "rotation_deg", "shift_x", "shift_y", "brightness", "haze", "noise")}
    params = {k: v for k, v in scene.facts.items() if k not in view}
    row = {"path": rel, "class": class_name, "index": index, **{k: f"{v:.4f}" for k, v in view.items()},
           "params": json.dumps(params, sort_keys=True)}
    return row, rel, {"size": path.stat().st_size, "sha256": manifest.sha256_file(path)}


def identity(config: ScenesConfig) -> dict:
    """What a cached set must match to be reused (as JSON reads it back: tuples are lists)."""
    return json.loads(json.dumps({"task": "resisc45_scenes", "generator_version": GENERATOR_VERSION,
                                  "config": dataclasses.asdict(config)}))


def generate(out_dir, config: ScenesConfig = TINY, progress: bool = True, workers: int | None = None) -> Path:
    """Write the whole set under out_dir (returned: the root holding the class folders); the
    manifest goes last. Same config -> byte-identical files, whatever `workers` is. Workers are
    spawned (not forked), so a caller that has already started JAX threads is safe."""
    validate_config(config)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    start_over(root)
    for name in config.classes:
        (root / name).mkdir(exist_ok=True)
    jobs = image_jobs(config)

    rows, files = [], {}
    payload = [(config, str(root), job) for job in jobs]
    for row, rel, info in render_all(_render_and_write, payload, workers=workers, desc="synth scenes", unit="image",
                                     progress=progress):
        rows.append(row)
        files[rel] = info

    with open(root / IMAGES_CSV, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    files[IMAGES_CSV] = {"size": (root / IMAGES_CSV).stat().st_size, "sha256": manifest.sha256_file(root / IMAGES_CSV)}
    manifest.write_manifest(root, identity(config), files)
    return root


def ensure_dataset(data_dir, config: ScenesConfig = TINY, progress: bool = True, workers: int | None = None,
                   verify_hashes: bool = False, force: bool = False) -> Path:
    """Return data_dir holding a complete set for `config`, generating it if needed.

    Reused (unless `force`) when its manifest matches the config and generator version and
    every listed file has its recorded size (and sha256, with verify_hashes). Otherwise a fresh
    set is generated next to it and swapped in; the old folder goes only after the swap, and
    only if it is empty or one of our generated sets (cache.check_replaceable).
    """
    validate_config(config)
    return ensure_generated(data_dir, identity(config),
                            lambda out: generate(out, config, progress=progress, workers=workers),
                            verify_hashes=verify_hashes, force=force)


def summary(config: ScenesConfig) -> str:
    return (f"  {len(config.classes)} classes x {config.n_per_class} images of {config.image_size}x"
            f"{config.image_size} ({config.image_format}): {', '.join(config.classes)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jaxaudio.data.synth.scenes", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (the root holding one folder per class)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=IMAGE_FORMATS, default=None, help="image format (default: the preset's)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: CPU count, at most 8)")
    parser.add_argument("--force", action="store_true", help="regenerate even if a matching set exists")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    args = parser.parse_args(argv)
    config = dataclasses.replace(PRESETS[args.preset], seed=args.seed)
    if args.format:
        config = dataclasses.replace(config, image_format=args.format)
    start = time.perf_counter()
    root = ensure_dataset(args.out, config, progress=not args.quiet, workers=args.workers, force=args.force)
    if not args.quiet:
        print(f"RESISC45-layout scene set at {root} ({time.perf_counter() - start:.1f} s)\n{summary(config)}",
              file=sys.stderr)
    return 0


def cli(argv=None) -> int:
    """main() for the shell (``cli.run_cli``)."""
    from jaxaudio.data.synth.cli import run_cli

    return run_cli(main, argv)


if __name__ == "__main__":
    from jaxaudio.data.synth.scenes import cli as _cli  # the importable module, so spawned workers find it

    sys.exit(_cli())
