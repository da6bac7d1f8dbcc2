"""Data of a scene-classification run: the user's image folder (NWPU-RESISC45 layout) or the
built-in scene set (generated on first use), its split by the field's protocol, and the sources.

The class list comes from the folder; ``finalize`` writes it into the config so a saved config
rebuilds the models without the data (predict, export).
"""
from __future__ import annotations

import dataclasses

import jax

from jaxaudio.data import images
from jaxaudio.data.source import mixed_batches
from jaxaudio.data.synth import scenes
from jaxaudio.data.synth.roots import user_or_builtin_root
from jaxaudio.errors import ConfigError
from jaxaudio.evaluators.classification import ClassificationEvaluator
from jaxaudio.train.log import get_logger

LOG = get_logger("jaxaudio.data")
SPLITS = ("train", "val", "test")


def data_config(preset: str):
    """``config.data``: an image folder, or the built-in set of the preset's size."""
    import ml_collections

    d = ml_collections.ConfigDict()
    d.data_dir = ""                  # <root>/<class>/*.jpg (NWPU-RESISC45); "" = the built-in scene set
    d.synth_preset = ""              # the built-in set when data_dir is empty: smoke, tiny or resisc_like
    d.synth_dir = "data/scenes_resisc_like"
    d.image_size = 256               # NWPU-RESISC45's 256 x 256 (our choice: no resize)
    d.channels = 3
    d.train_fraction = 0.2           # the 20 % / 80 % protocol (0.1 for 10 % / 90 %)
    d.val_fraction = 0.0             # our choice: no validation part; nothing is selected on the test part
    d.split_seed = 0                 # the protocol's split, apart from the training seed
    d.cache = False                  # decoded images in memory (NWPU: 31,500 x 192 KiB = 5.8 GB)
    d.classes = ()                   # class names; () = the folder's (saved by finalize)
    if preset in ("tiny", "smoke"):
        # the built-in set: 15 classes x 150 images of 64 x 64; half for training (our choice: the
        # teachers start from scratch here, not from ImageNet, so 20 % = 30 images a class is too few)
        d.synth_preset, d.synth_dir, d.image_size = "tiny", "data/scenes_tiny", 64
        d.train_fraction, d.cache = 0.5, True
    if preset == "smoke":
        d.synth_preset, d.synth_dir, d.image_size = "smoke", "data/scenes_smoke", 32
    return d


def data_root(data_cfg) -> str:
    """The user's image folder, or the built-in scene set (generated once, then reused)."""
    def at_run_size(synth):
        if synth.image_size == data_cfg.image_size:
            return synth
        return dataclasses.replace(synth, image_size=int(data_cfg.image_size))

    return user_or_builtin_root(
        data_cfg, scenes.PRESETS, scenes.ensure_dataset, what="built-in scene set", adapt=at_run_size,
        needs_data="the paper preset trains on NWPU-RESISC45: pass its folder with --data_dir=/path "
                   "(<root>/<class>/*.jpg), or generate the built-in scene set at that size with "
                   "--config.data.synth_preset=resisc_like")


class SceneData:
    """The split and its sources (read when first needed)."""

    def __init__(self, config):
        self.config = config
        self._splits = None
        self._sources = {}

    @property
    def splits(self) -> images.ImageSplits:
        if self._splits is None:
            d = self.config.data
            root = data_root(d)
            found = images.scan_image_folder(root)
            if d.classes and tuple(d.classes) != found.classes:
                raise ConfigError(f"{root}: holds classes {list(found.classes)[:5]}..., but this run was "
                                  f"trained on {list(d.classes)[:5]}... (data.classes): another data folder?")
            self._splits = images.split_per_class(found, float(d.train_fraction), seed=int(d.split_seed),
                                                  val_fraction=float(d.val_fraction))
            for name in SPLITS:
                LOG.info("%s: %d images", name, len(getattr(self._splits, name)))
        return self._splits

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.config.data.classes) or self.splits.train.classes

    def source(self, split: str, *, plain: bool = False) -> images.ImageSource:
        """The split's images as the networks see them, or with ``plain`` as [0, 1] pixels (the
        exported models' input: they normalise inside)."""
        if split not in SPLITS:
            raise ConfigError(f"scene split {split!r}: expected one of {SPLITS}")
        if (split, plain) not in self._sources:
            part = getattr(self.splits, split)
            if not len(part):
                raise ConfigError(f"the {split} part is empty (data.train_fraction / data.val_fraction)")
            d = self.config.data
            scale = dict(mean=(0.0,) * int(d.channels), std=(1.0,) * int(d.channels)) if plain else {}
            self._sources[(split, plain)] = images.ImageSource(part.files, part.labels, int(d.image_size),
                                                               channels=int(d.channels), cache=bool(d.cache), **scale)
        return self._sources[(split, plain)]

    def train_batches(self, batch: int, seed: int):
        return mixed_batches([(self.source("train"), batch)], seed=seed, shard_index=jax.process_index(),
                             shard_count=jax.process_count())


def finalize(config) -> None:
    if not config.data.get("classes"):
        config.data.classes = tuple(SceneData(config).classes)


def evaluators(config) -> dict:
    """Overall and per-class accuracy on the test part (and the validation part when there is one)."""
    data = SceneData(config)
    out = {"test": ClassificationEvaluator(lambda: data.source("test"), int(config.batch.eval), data.classes)}
    if float(config.data.val_fraction) > 0:
        out["val"] = ClassificationEvaluator(lambda: data.source("val"), int(config.batch.eval), data.classes)
    return out
