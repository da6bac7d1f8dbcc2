"""Data of an ASD run: the DCASE2020 task-2 folder (or the built-in machine-sound set, generated
on first use), its files, the machine-ID classes and the clip sources.

The classes come from the training files; ``finalize`` writes them into the config so a saved
config rebuilds the model without the data folder (predict, export).
"""
from __future__ import annotations

import dataclasses

import jax

from jaxaudio.data import asd as asd_data
from jaxaudio.data.source import mixed_batches
from jaxaudio.data.synth import asd as asd_synth
from jaxaudio.data.synth.roots import user_or_builtin_root
from jaxaudio.errors import ConfigError
from jaxaudio.evaluators.asd import ASDEvaluator
from jaxaudio.train.log import get_logger

LOG = get_logger("jaxaudio.data")


def data_config(preset: str):
    """The ``config.data`` section every ASD system shares: DCASE2020 task 2's layout and rate,
    or the built-in set of the preset's size (tiny: 6 types x 3 IDs of 4-s clips; smoke: 2 x 2 of 2 s)."""
    import ml_collections

    d = ml_collections.ConfigDict()
    d.data_dir = ""               # a DCASE2020 task-2 folder (dev_data/...); "" = the built-in set
    # built-in set when data_dir is empty (jaxaudio/data/synth/asd.py); none for the paper preset,
    # which is DCASE2020's recipe: "dev_like" (3.4 GB, DCASE2020 dev's size) only when asked for
    d.synth_preset = ""
    d.synth_dir = "data/asd_synth_dev_like"
    d.subsets = ("dev",)          # train on dev_data (+ "additional" / "eval" train folders if listed)
    d.machine_types = ()          # () = every machine type found
    d.sample_rate = 16000         # DCASE2020 task 2
    d.clip_seconds = 10.0         # MIMII / ToyADMOS clips (ToyCar's ~11 s are cropped: batches need one length)
    d.resample = True             # clips at another rate are resampled (one warning per type)
    d.cache = False               # keep decoded clips in memory (DCASE2020 dev: ~11 GB as float32)
    d.classes = ()                # "<type>/<id>" classes; () = those of the training files (saved)
    if preset in ("tiny", "smoke"):
        d.synth_preset, d.synth_dir, d.clip_seconds = "tiny", "data/asd_synth_tiny", 4.0
        d.cache = True            # 1,080 training clips of 4 s: 280 MB
    if preset == "smoke":
        d.synth_preset, d.synth_dir, d.clip_seconds = "smoke", "data/asd_synth_smoke", 2.0
    return d


def data_root(data_cfg) -> str:
    """The user's DCASE2020 task-2 folder, or the built-in set (generated once, then reused)."""
    return user_or_builtin_root(
        data_cfg, asd_synth.PRESETS, asd_synth.ensure_dataset, what="built-in machine-sound set",
        needs_data="the paper preset trains on DCASE2020 task 2: pass its folder with --data_dir=/path "
                   "(dev_data/<machine_type>/{train,test}/...), or generate the built-in set at DCASE2020 "
                   "dev's size (3.4 GB) with --config.data.synth_preset=dev_like",
        adapt=lambda synth: dataclasses.replace(synth, sample_rate=data_cfg.sample_rate))


def clip_samples(data_cfg) -> int:
    return int(round(data_cfg.clip_seconds * data_cfg.sample_rate))


class ASDData:
    """Files, classes and sources of one run (read when first needed)."""

    def __init__(self, config):
        self.config = config
        self._files = None
        self._sources = {}

    @property
    def files(self) -> list:
        if self._files is None:
            d = self.config.data
            root = data_root(d)
            self._files = asd_data.scan(root, subsets=tuple(d.subsets), machine_types=tuple(d.machine_types) or None)
            LOG.info("ASD data in %s:\n%s", root, asd_data.format_summary(self._files))
        return self._files

    @property
    def classes(self) -> list[str]:
        return list(self.config.data.get("classes") or asd_data.machine_id_classes(self.files))

    def source(self, split: str):
        """``train``: every training normal; ``test``: the labelled dev test clips."""
        if split not in self._sources:
            if split == "train":
                files = [f for f in self.files if f.split == "train"]
            elif split == "test":
                files = [f for f in self.files if f.split == "test" and f.subset == "dev"]
            else:
                raise ConfigError(f"ASD split {split!r}: expected 'train' or 'test'")
            d = self.config.data
            self._sources[split] = asd_data.ASDClipSource(files, self.classes, d.sample_rate, clip_samples(d),
                                                          resample=d.resample, cache=bool(d.get("cache", False)))
        return self._sources[split]

    def train_batches(self, batch: int, seed: int):
        return mixed_batches([(self.source("train"), batch)], seed=seed, shard_index=jax.process_index(),
                             shard_count=jax.process_count())


def class_types(classes) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The machine types (sorted) and each class's type index, from "<type>/<id>" class names."""
    types = sorted({name.split("/")[0] for name in classes})
    return tuple(types), tuple(types.index(name.split("/")[0]) for name in classes)


def finalize(config) -> None:
    """The class list into the config (config.json then rebuilds the model alone)."""
    if not config.data.get("classes"):
        config.data.classes = tuple(ASDData(config).classes)


def evaluators(config) -> dict:
    """Every ASD system's evaluation: AUC / pAUC per machine ID on the labelled dev test clips."""
    data = ASDData(config)
    return {"test": ASDEvaluator(lambda: data.source("test"), int(config.batch.eval), max_fpr=config.eval.max_fpr,
                                 primary_metric=config.eval.primary_metric)}
