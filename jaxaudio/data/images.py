"""Folder-per-class image sets (NWPU-RESISC45 and alike), their split protocols, and their Source.

Layout (NWPU-RESISC45: 45 scene classes x 700 images of 256 x 256 RGB JPEG; also what
``jaxaudio.data.synth.scenes`` writes)::

    <root>/<class_name>/*.{jpg,jpeg,png}
    <root>/<one folder>/<class_name>/*.jpg      (as the archive unpacks: NWPU-RESISC45/airplane/...)

`scan_image_folder` lists the files; classes are the class folders' names sorted as Python sorts
strings (torchvision's ImageFolder order, so class ids agree with it). `split_per_class` makes the
field's stratified protocols (10 %/90 %, 20 %/80 % train/test per class) for a seed, with an
optional validation part carved from the training part. `ImageSource` decodes with PIL, converts
every image to RGB (or greyscale) uint8 by the rules below, resizes to a square `size` with PIL's
bilinear filter (antialiased: its support widens when shrinking) and gives float32 NHWC items
``(x / 255 - mean) / std``, by default with ImageNet's mean and std (the teachers are ImageNet CNNs).

Mode rules (one warning per class folder at construction, naming the modes found, how many and
one example; RGB is expected, and so is L when ``channels=1``):

- L (greyscale) and 1 (bilevel, read as 0/255): replicated to R = G = B for ``channels=3``.
- RGBA, LA, PA and palette images with a transparent colour: composited onto BLACK, each colour
  channel becoming ``round(c * alpha / 255)``: transparent pixels are no-data in remote-sensing
  tiles, which are zero (black) elsewhere; white would invent bright ground.
- P (palette) without transparency: its palette colours (PIL's ``convert("RGB")``).
- I;16 / I;16B / I;16L / I (16-bit greyscale PNG): scaled by the fixed factor 1/257, i.e.
  ``round(v / 257)`` (65535 -> 255, values clipped to [0, 65535]), never by each image's own max,
  which would give each image its own brightness. (16-bit RGB PNGs PIL itself reads as 8-bit RGB.)
- CMYK, YCbCr: PIL's ``convert("RGB")``.
- Any other mode (F: 32-bit float, ...) is refused with DataFormatError naming the file.
- ``channels=1``: RGB becomes PIL's ITU-R 601-2 luma L = (299 R + 587 G + 114 B) / 1000.

Bad input raises DataFormatError naming the file or folder (DataFormatError is jaxaudio's error
for a data file or folder that does not hold what the layout needs): a root that does not exist,
is not a folder, or holds no class folders; a class folder with no images (refused, not skipped:
skipping would silently shift the ids of every later class and shrink the classifier's head); a
file that PIL cannot identify (at construction, from its header) or cannot decode, truncated files
included (when read: this module sets ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES = False``, PIL's
default, so a truncated JPEG raises rather than loading partly grey). Other entries in a class
folder (text files, subfolders) are ignored with a warning.
"""
from __future__ import annotations

import logging
import math
import os
import struct
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np
from PIL import Image, ImageFile

from jaxaudio.data.source import BatchSpec, padding_from_spec
from jaxaudio.errors import ConfigError, DataFormatError

_logger = logging.getLogger(__name__)

# A truncated file must raise, not load with its missing part grey (PIL's default; set again in
# case another library turned it on).
ImageFile.LOAD_TRUNCATED_IMAGES = False

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# For channels=1: the average of ImageNet's three channels (what grey inputs to ImageNet CNNs use).
IMAGENET_GREY_MEAN = (0.449,)
IMAGENET_GREY_STD = (0.226,)

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")
_VIA_RGB = ("CMYK", "YCbCr")
# How each unexpected mode is converted, for the warning.
_RULES = {
    "L": "greyscale, replicated to 3 channels",
    "1": "bilevel, read as 0/255 greyscale",
    "alpha": "alpha composited onto black",
    "P": "palette colours",
    "16-bit": "16-bit, scaled by 1/257",
    "CMYK": "converted to RGB by PIL",
    "YCbCr": "converted to RGB by PIL",
}
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)


def _hidden(entry: Path) -> bool:
    return entry.name.startswith(".") or entry.name == "__MACOSX"


def _is_image(entry: Path, extensions: Sequence[str]) -> bool:
    return entry.is_file() and entry.suffix.lower() in extensions


@dataclass(frozen=True)
class ImageSet:
    """Image files with their class ids: `labels[i]` indexes `classes` for `files[i]`."""

    files: tuple[str, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]

    def __post_init__(self):
        if len(self.files) != len(self.labels):
            raise ConfigError(f"ImageSet: {len(self.files)} files but {len(self.labels)} labels")
        bad = [label for label in self.labels if not 0 <= label < len(self.classes)]
        if bad:
            raise ConfigError(f"ImageSet: labels {sorted(set(bad))[:5]} are not ids of the {len(self.classes)} classes")

    def __len__(self) -> int:
        return len(self.files)

    def counts(self) -> dict[str, int]:
        """Images per class name, in class-id order."""
        count = Counter(self.labels)
        return {name: count[i] for i, name in enumerate(self.classes)}


def _class_root(root: Path, extensions: Sequence[str]) -> Path:
    """`root`, or its only subfolder when that holds the class folders (the archive's layout)."""
    entries = [entry for entry in root.iterdir() if not _hidden(entry)]
    dirs = [entry for entry in entries if entry.is_dir()]
    if len(dirs) != 1 or any(_is_image(entry, extensions) for entry in entries):
        return root
    inner = [entry for entry in dirs[0].iterdir() if not _hidden(entry)]
    if any(entry.is_dir() for entry in inner) and not any(_is_image(entry, extensions) for entry in inner):
        _logger.info("%s: reading the class folders of its only subfolder %s", root, dirs[0].name)
        return dirs[0]
    return root


def scan_image_folder(root: os.PathLike | str, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> ImageSet:
    """Every image of ``root/<class_name>/`` (or ``root/<only folder>/<class_name>/``), class ids by sorted name.

    Files are sorted by class, then by name; extensions match case-insensitively (.JPG too);
    hidden entries (".*", "__MACOSX") are skipped. Raises DataFormatError naming the folder for a
    missing root, a root that is not a folder or holds no class folders, and a class folder
    without images (refused: skipping it would shift the ids of every later class).
    """
    extensions = tuple(ext.lower() if ext.startswith(".") else "." + ext.lower() for ext in extensions)
    if not extensions:
        raise ConfigError("scan_image_folder: extensions is empty; expected e.g. ('.jpg', '.jpeg', '.png')")
    root = Path(root)
    if not root.exists():
        raise DataFormatError(root, "image folder does not exist")
    if not root.is_dir():
        raise DataFormatError(root, "is not a folder; expected a folder of class folders (<root>/<class_name>/*.jpg)")
    root = _class_root(root, extensions)
    entries = [entry for entry in root.iterdir() if not _hidden(entry)]
    class_dirs = sorted((entry for entry in entries if entry.is_dir()), key=lambda entry: entry.name)
    if not class_dirs:
        loose = sum(_is_image(entry, extensions) for entry in entries)
        detail = (f"it holds {loose} image files directly; put them in one folder per class" if loose
                  else f"it holds {len(entries)} other entries" if entries else "it is empty")
        raise DataFormatError(root, f"holds no class folders (expected <root>/<class_name>/*.jpg; {detail})")
    # the built-in scene set's own records (synth_images.csv, synth_manifest.json) are expected there
    others = sum(1 for entry in entries if not entry.is_dir() and not entry.name.startswith("synth_"))
    if others:
        _logger.warning("%s: %d entries beside the class folders are ignored", root, others)
    files: list[str] = []
    labels: list[int] = []
    for label, folder in enumerate(class_dirs):
        inside = [entry for entry in folder.iterdir() if not _hidden(entry)]
        images = sorted((entry for entry in inside if _is_image(entry, extensions)), key=lambda entry: entry.name)
        if not images:
            detail = f"it holds {len(inside)} other entries" if inside else "it is empty"
            raise DataFormatError(folder, f"class folder holds no images ({', '.join(extensions)}; {detail}); "
                                          "remove the folder or add its images: an empty class would shift the "
                                          "ids of the classes after it")
        if len(inside) > len(images):
            _logger.warning("%s: %d entries that are not %s files are ignored", folder, len(inside) - len(images),
                            "/".join(extensions))
        files.extend(str(path) for path in images)
        labels.extend([label] * len(images))
    return ImageSet(tuple(files), tuple(labels), tuple(folder.name for folder in class_dirs))


class ImageSplits(NamedTuple):
    """The parts of a split; `val` is empty unless a validation fraction was asked for."""

    train: ImageSet
    val: ImageSet
    test: ImageSet


def _part_count(fraction: float, n: int) -> int:
    """round(fraction * n), halves up, kept in [1, n - 1] so both parts get images."""
    return min(max(math.floor(fraction * n + 0.5), 1), n - 1)


def _class_rng(seed: int, class_name: str) -> np.random.Generator:
    """Each class's shuffle from (seed, its name): adding or removing another class changes nothing here."""
    return np.random.default_rng([seed, zlib.crc32(class_name.encode("utf-8"))])


def split_per_class(images: ImageSet, train_fraction: float, *, seed: int, val_fraction: float = 0.0) -> ImageSplits:
    """The stratified train/test protocol: `train_fraction` of every class for training, the rest for test.

    NWPU-RESISC45's protocols are ``train_fraction`` 0.1 (70 train / 630 test images per class)
    and 0.2 (140 / 560). Per class of n images, round(train_fraction * n) (halves up, at least 1
    and at most n - 1) go to training, so equal classes give equal counts. `val_fraction` of each
    class's training part (rounded likewise, at least 1 when > 0) becomes the validation part;
    the test part does not depend on it. Each class is shuffled by a generator seeded with
    (seed, class name) over its files sorted by path, so the split depends only on the seed and
    the set of files, never on listing order. Parts are sorted by (class id, path).
    Raises DataFormatError naming the class folder for a class too small to split.
    """
    if not 0 < train_fraction < 1:
        raise ConfigError(f"split_per_class: train_fraction must be in (0, 1), got {train_fraction!r} "
                          "(0.1 and 0.2 are NWPU-RESISC45's protocols)")
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"split_per_class: val_fraction must be in [0, 1), got {val_fraction!r}")
    if int(seed) != seed or seed < 0:
        raise ConfigError(f"split_per_class: seed must be a non-negative integer, got {seed!r}")
    by_class: dict[int, list[str]] = defaultdict(list)
    for path, label in zip(images.files, images.labels):
        by_class[label].append(path)
    parts: dict[str, list[tuple[int, str]]] = {"train": [], "val": [], "test": []}
    for label in sorted(by_class):
        name = images.classes[label]
        files = sorted(by_class[label])
        n = len(files)
        folder = Path(files[0]).parent
        if n < 2:
            raise DataFormatError(folder, f"class {name!r} has {n} image; a train/test split needs at least 2 "
                                          "per class")
        order = _class_rng(int(seed), name).permutation(n)
        n_train = _part_count(train_fraction, n)
        train, test = order[:n_train], order[n_train:]
        val = train[:0]
        if val_fraction > 0:
            if n_train < 2:
                raise DataFormatError(folder, f"class {name!r}: its {n_train} training image cannot also give a "
                                              f"validation part (val_fraction {val_fraction}); use a larger "
                                              "train_fraction or val_fraction 0")
            n_val = _part_count(val_fraction, n_train)
            val, train = train[:n_val], train[n_val:]
        for part, idx in (("train", train), ("val", val), ("test", test)):
            parts[part].extend((label, files[i]) for i in idx)

    def image_set(rows: list[tuple[int, str]]) -> ImageSet:
        rows = sorted(rows)
        return ImageSet(tuple(path for _, path in rows), tuple(label for label, _ in rows), images.classes)

    return ImageSplits(image_set(parts["train"]), image_set(parts["val"]), image_set(parts["test"]))


# ----------------------------------------------------------------------------- decoding

def _mode_kind(image: Image.Image) -> str:
    """The conversion rule an image's mode takes: "RGB", "L", or a key of _RULES; "refuse" if none."""
    mode = image.mode
    if mode in ("RGB", "L", "1", "CMYK", "YCbCr"):
        return mode
    if mode in _ALPHA or (mode == "P" and "transparency" in image.info):
        return "alpha"
    if mode == "P":
        return "P"
    if mode in _SIXTEEN_BIT:
        return "16-bit"
    return "refuse"


def _refuse_mode(path: str, mode: str) -> DataFormatError:
    return DataFormatError(path, f"image mode {mode!r} is not supported (expected RGB, L, RGBA, LA, P, 1, I;16, I, "
                                 "CMYK or YCbCr)")


def _to_rgb_or_l(image: Image.Image, path: str) -> Image.Image:
    """The image as mode RGB or L (uint8) by the module's mode rules."""
    kind = _mode_kind(image)
    if kind in ("RGB", "L"):
        return image
    if kind == "refuse":
        raise _refuse_mode(path, image.mode)
    if kind == "16-bit":
        values = np.asarray(image).astype(np.int64)
        grey = np.floor(np.clip(values, 0, 65535) / 257.0 + 0.5).astype(np.uint8)
        return Image.fromarray(grey, "L")
    if kind == "alpha":
        rgba = np.asarray(image.convert("RGBA")).astype(np.uint32)
        rgb = (rgba[..., :3] * rgba[..., 3:] + 127) // 255  # round(c * alpha / 255): onto black
        out = Image.fromarray(rgb.astype(np.uint8), "RGB")
        return out.convert("L") if image.mode in ("LA", "La") else out
    if kind == "1":
        return image.convert("L")
    return image.convert("RGB")  # P, CMYK, YCbCr


def load_image(path: os.PathLike | str, size: int, channels: int = 3) -> np.ndarray:
    """One image as uint8 (size, size, channels): mode rules of this module, then PIL's bilinear resize.

    The resize goes straight to size x size (a non-square image is stretched, not cropped);
    an image already that size is not resampled. Raises DataFormatError naming the file when
    PIL cannot identify or fully decode it (a truncated file included) or its mode is refused.
    """
    path = str(path)
    try:
        with Image.open(path) as image:
            image.load()
            image = _to_rgb_or_l(image, path)
            image = image.convert("RGB" if channels == 3 else "L")
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except DataFormatError:
        raise
    except FileNotFoundError as err:
        raise DataFormatError(path, "image file does not exist") from err
    except _DECODE_ERRORS as err:
        raise DataFormatError(path, f"cannot decode image ({type(err).__name__}: {err}); the file is corrupt, "
                                    "truncated or not an image") from err
    return array.reshape(size, size, channels)


def _header(path: str) -> tuple[str, str]:
    """(mode, conversion kind) from the file's header, without decoding its pixels."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width < 1 or height < 1:
                raise DataFormatError(path, f"image is empty ({width} x {height} pixels)")
            return image.mode, _mode_kind(image)
    except DataFormatError:
        raise
    except FileNotFoundError as err:
        raise DataFormatError(path, "image file does not exist") from err
    except _DECODE_ERRORS as err:
        raise DataFormatError(path, f"cannot read image header ({type(err).__name__}: {err}); the file is corrupt "
                                    "or not an image") from err


def _normalisation(values: Optional[Sequence[float]], default: Sequence[float], channels: int, name: str
                   ) -> np.ndarray:
    values = default if values is None else tuple(float(v) for v in np.atleast_1d(values))
    if len(values) != channels:
        raise ConfigError(f"ImageSource: {name} needs {channels} value(s) (one per channel), got {list(values)}")
    if name == "std" and min(values) <= 0:
        raise ConfigError(f"ImageSource: std values must be positive, got {list(values)}")
    return np.asarray(values, np.float32)


def normalise(image: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """uint8 ``(H, W, C)`` -> float32 ``(x / 255 - mean) / std``: what the models see (training,
    evaluation and predict alike)."""
    return (image.astype(np.float32) / np.float32(255.0) - mean) / std


def default_normalisation(channels: int, mean: Optional[Sequence[float]] = None,
                          std: Optional[Sequence[float]] = None) -> tuple[np.ndarray, np.ndarray]:
    """``mean`` and ``std`` checked per channel, defaulting to ImageNet's (their channel average
    for greyscale): the teachers' inputs."""
    grey = channels == 1
    return (_normalisation(mean, IMAGENET_GREY_MEAN if grey else IMAGENET_MEAN, channels, "mean"),
            _normalisation(std, IMAGENET_GREY_STD if grey else IMAGENET_STD, channels, "std"))


class ImageSource:
    """Random-access source of images and class ids (the Source protocol of data/source.py).

    Item: {"image": (size, size, channels) float32 ``(x / 255 - mean) / std`` with x the uint8
    image after the mode rules and the resize (see `load_image`), "label": int32 class id,
    "index": int32}. `mean`/`std` default to ImageNet's (or their channel average for
    ``channels=1``); pass ``mean=0, std=1`` for plain [0, 1] values.

    With `check` (the default) every file's header is read at construction: a file PIL cannot
    identify is refused then, and each class folder holding images of unexpected modes gets one
    warning (modes, counts, the rule, an example). Decoding errors (truncated files) are raised
    when an item is read, naming the file; `preload` decodes every image at construction instead,
    so they are found before training. `cache` keeps the decoded, resized uint8 images in memory
    (size * size * channels bytes each: 256 x 256 RGB is 192 KiB, so a few thousand images); the
    cache is per process and not pickled.
    """

    def __init__(
        self,
        files: Sequence[str],
        labels: Sequence[int],
        size: int,
        *,
        channels: int = 3,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
        cache: bool = False,
        preload: bool = False,
        check: bool = True,
    ):
        if int(size) != size or size < 1:
            raise ConfigError(f"ImageSource: size must be a positive integer, got {size!r}")
        if channels not in (1, 3):
            raise ConfigError(f"ImageSource: channels must be 3 (RGB) or 1 (greyscale), got {channels!r}")
        if len(files) != len(labels):
            raise ConfigError(f"ImageSource: {len(files)} files but {len(labels)} labels")
        self.files = [str(path) for path in files]
        self.labels = np.asarray(labels, np.int64).reshape(-1)
        if self.labels.size and self.labels.min() < 0:
            raise ConfigError(f"ImageSource: labels must be class ids >= 0, got {int(self.labels.min())}")
        self.labels = self.labels.astype(np.int32)
        self.size = int(size)
        self.channels = int(channels)
        self.mean, self.std = default_normalisation(channels, mean, std)
        self.cache = bool(cache)
        self._cache: dict[int, np.ndarray] = {}
        if check:
            self._check_headers()
        if preload:
            for index in range(len(self.files)):
                self.image_uint8(index)

    @classmethod
    def from_set(cls, images: ImageSet, size: int, **kwargs: Any) -> "ImageSource":
        """The source of an ImageSet (a scan or one part of a split)."""
        return cls(images.files, images.labels, size, **kwargs)

    def _check_headers(self) -> None:
        expected = {"RGB", "L"} if self.channels == 1 else {"RGB"}
        found: dict[str, dict[tuple[str, str], list[str]]] = defaultdict(lambda: defaultdict(list))
        per_folder = Counter(str(Path(path).parent) for path in self.files)
        for path in self.files:
            mode, kind = _header(path)
            if kind == "refuse":
                raise _refuse_mode(path, mode)
            if kind not in expected:
                found[str(Path(path).parent)][(mode, kind)].append(path)
        for folder, modes in sorted(found.items()):
            parts = [f"{len(paths)} {mode} ({_RULES[kind]}; e.g. {Path(paths[0]).name})"
                     for (mode, kind), paths in sorted(modes.items())]
            _logger.warning("%s: %d of its %d images are not %s and are converted: %s", folder,
                            sum(len(p) for p in modes.values()), per_folder[folder], " or ".join(sorted(expected)),
                            ", ".join(parts))

    def __len__(self) -> int:
        return len(self.files)

    def image_uint8(self, index: int) -> np.ndarray:
        """The decoded, resized uint8 image of item `index` (from the cache when it is on)."""
        image = self._cache.get(index)
        if image is None:
            image = load_image(self.files[index], self.size, self.channels)
            if self.cache:
                self._cache[index] = image
        return image

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not 0 <= index < len(self.files):
            raise IndexError(f"ImageSource index {index} out of range [0, {len(self.files)})")
        image = normalise(self.image_uint8(index), self.mean, self.std)
        return {"image": image, "label": self.labels[index], "index": np.int32(index)}

    def batch_spec(self) -> BatchSpec:
        """Per-item shape and dtype of each key (the Source protocol)."""
        return {
            "image": ((self.size, self.size, self.channels), np.dtype(np.float32)),
            "label": ((), np.dtype(np.int32)),
            "index": ((), np.dtype(np.int32)),
        }

    def padding_item(self) -> dict[str, Any]:
        """An all-zero image with label and index -1, to fill the last eval batch (-1, not 0, so a
        padded row can never pass for an image of class 0)."""
        item = padding_from_spec(self.batch_spec())
        item["label"] = np.int32(-1)
        return item

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = {}  # each worker decodes its own
        return state
