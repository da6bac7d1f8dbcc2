"""Data wiring shared by the SED systems: where the DESED-layout data is, and its sources.

The built-in synthetic set is generated (once, cached) when no ``data.data_dir`` is given, so
``python experiments/run.py --exp=...`` works on a fresh machine with nothing downloaded.
"""
from __future__ import annotations

import dataclasses
import os

import jax

from jaxaudio.data.sed.clips import ClipSource
from jaxaudio.data.sed.desed import DEFAULT_LAYOUT, DESED_CLASSES, load_subset, read_classes
from jaxaudio.data.sed.labels import FrameLabelEncoder
from jaxaudio.data.source import mixed_batches
from jaxaudio.data.synth.cache import ensure_dataset
from jaxaudio.data.synth.desed import PRESETS as SYNTH_PRESETS
from jaxaudio.data.synth.roots import user_or_builtin_root
from jaxaudio.errors import ConfigError
from jaxaudio.train.log import get_logger


def data_root(data_cfg) -> str:
    """The user's DESED folder, or the built-in synthetic set (generated on first use).

    With ``data.prepared_dir`` (ArrayRecord shards from ``python -m jaxaudio.data.prepare``)
    the clips come from there and this is that folder.
    """
    if data_cfg.get("prepared_dir"):
        return data_cfg.prepared_dir
    return user_or_builtin_root(
        data_cfg, SYNTH_PRESETS, ensure_dataset, what="built-in synthetic DESED set",
        adapt=lambda synth: dataclasses.replace(synth, sample_rate=data_cfg.sample_rate))


def classes(data_cfg) -> tuple[str, ...]:
    """The run's event classes: ``data.classes``, else those the data folder declares, else DESED's."""
    if data_cfg.get("classes"):
        return tuple(data_cfg.classes)
    if data_cfg.get("prepared_dir"):  # the classes the set was prepared with
        from jaxaudio.data.sed.prepared import prepared_path, read_metadata

        clip_samples = int(round(data_cfg.clip_seconds * data_cfg.sample_rate))
        return tuple(read_metadata(prepared_path(data_cfg.prepared_dir, data_cfg.sample_rate, clip_samples))["classes"])
    if data_cfg.data_dir and os.path.isdir(data_cfg.data_dir):
        return read_classes(data_cfg.data_dir) or DESED_CLASSES
    return DESED_CLASSES


def resolve_data(config) -> None:
    """What depends on the data folder, written into the config so that config.json holds it:
    the class list (predict and export then rebuild the model without the data folder), the
    class-wise median windows that follow it (``class_windows``), and whether the folder has
    the optional real strong subset (``resolve_strong_real``)."""
    config.data.classes = classes(config.data)
    if config.get("eval") is not None and "median_window" in config.eval:
        config.eval.median_window = class_windows(config.eval.median_window, config.data.classes)
    resolve_strong_real(config)


def has_subset(data_cfg, name: str) -> bool:
    """Whether the run's data holds subset ``name`` (the built-in set has every subset; a
    folder, its audio folder; a prepared set, its split), without generating anything."""
    if data_cfg.get("prepared_dir"):
        from jaxaudio.data.sed.prepared import prepared_path, read_metadata

        clip_samples = int(round(data_cfg.clip_seconds * data_cfg.sample_rate))
        meta = read_metadata(prepared_path(data_cfg.prepared_dir, data_cfg.sample_rate, clip_samples))
        return bool(meta.get("subsets", {}).get(name))
    if not data_cfg.data_dir:
        return True
    return os.path.isdir(os.path.join(data_cfg.data_dir, subset_spec(name).audio_dir))


def resolve_strong_real(config) -> None:
    """The real strong subset is optional: a folder without it (a set mixed from your own
    sound banks, a DESED download without the AudioSet-strong clips) trains on synthetic strong
    rows only, with the same number of strong rows per batch, and says so once."""
    d, b = config.data, config.get("batch")
    name = d.get("train_strong_real", "")
    if not name or b is None or has_subset(d, name):
        return
    spec = subset_spec(name)
    get_logger("jaxaudio.data").warning(
        "data: %s has no %s subset (%s); its strong rows come from %s only", d.data_dir or d.prepared_dir, name,
        spec.audio_dir, d.train_strong)
    d.train_strong_real = ""
    for key in ("strong_real", "pretrain_strong_real"):
        if key in b:
            b[key] = 0


def class_windows(windows, names):
    """Median windows for ``names``: one window for all as it is; per-class windows written for
    DESED's ten classes (the reference's) are taken by class name, and a class DESED lacks gets
    the shortest of them (it merges the fewest events), with a log line saying so."""
    if not isinstance(windows, (list, tuple)) or tuple(names) == DESED_CLASSES or len(windows) != len(DESED_CLASSES):
        return windows
    by_name = dict(zip(DESED_CLASSES, (int(w) for w in windows)))
    shortest = min(by_name.values())
    unknown = [n for n in names if n not in by_name]
    if unknown:
        get_logger("jaxaudio.data").info(
            "eval.median_window: DESED's class-wise windows; %s get the shortest, %d frames "
            "(--config.eval.median_window sets them)", ", ".join(unknown), shortest)
    return tuple(by_name.get(n, shortest) for n in names)


def subset_spec(name: str):
    """The DESED layout entry (folders and tsv files) of one subset, by its config name."""
    if name not in DEFAULT_LAYOUT:
        raise ConfigError(f"data: unknown subset {name!r}; subsets: {', '.join(DEFAULT_LAYOUT)}")
    return DEFAULT_LAYOUT[name]


def clip_source(root: str, data_cfg, name: str, encoder: FrameLabelEncoder) -> ClipSource:
    clip_samples = int(round(data_cfg.clip_seconds * data_cfg.sample_rate))
    if data_cfg.get("prepared_dir"):
        from jaxaudio.data.sed.prepared import PreparedClipSource, prepared_path  # needs the "data" extra

        return PreparedClipSource(prepared_path(data_cfg.prepared_dir, data_cfg.sample_rate, clip_samples), name,
                                  encoder)
    records = load_subset(root, subset_spec(name), classes(data_cfg))
    if not records:
        hint = ""
        if name == data_cfg.get("train_strong_real"):
            hint = ("; without DESED's AudioSet-strong clips pass --config.data.train_strong_real='' "
                    "--config.batch.strong_real=0 --config.batch.pretrain_strong_real=0 (synthetic strong rows only)")
        raise ConfigError(f"data: subset {name!r} under {root} holds no clips ({subset_spec(name).audio_dir}){hint}")
    return ClipSource(records, data_cfg.sample_rate, clip_samples, encoder, cache=data_cfg.cache_audio)


def train_batches(root: str, data_cfg, batch_cfg, encoder: FrameLabelEncoder, seed: int):
    """Strong / weak / unlabeled sources mixed in fixed counts per batch, sharded by process."""
    parts = [
        (clip_source(root, data_cfg, data_cfg.train_strong, encoder), batch_cfg.strong),
        (clip_source(root, data_cfg, data_cfg.train_weak, encoder), batch_cfg.weak),
        (clip_source(root, data_cfg, data_cfg.train_unlabeled, encoder), batch_cfg.unlabeled),
    ]
    return mixed([(source, count) for source, count in parts if count > 0], seed)


def mixed(parts, seed: int):
    """``mixed_batches`` over (source, count) pairs, this process's shard of every batch."""
    return mixed_batches(parts, seed=seed, shard_index=jax.process_index(), shard_count=jax.process_count())
