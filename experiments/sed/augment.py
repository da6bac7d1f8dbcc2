"""The SED recipes' in-step augmentation: frame shift, mixup within each source, frequency
distortion, FilterAugment, and for mean-teacher stages a label-free view per network.

Every knob defaults to the behaviour the CRNN recipe and the PMAM tiny/smoke presets were
measured with (one mixup coin per source, lambda ~ Beta(0.2, 0.2), every source mixed, the DCASE
FilterAugment), so those runs are unchanged bit for bit; the PMAM paper preset sets the
Transformer4SED values (``spec/sed_recipes.md`` rows 7 and 10).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp

from jaxaudio.audio import augment, features
from jaxaudio.errors import ConfigError

# The batch's sources in the order the SED systems stack them (``batch_segments``).
SOURCES = ("strong", "weak", "unlabeled")
MIXUP_COINS = ("segment", "batch")
FILTER_KEYS = ("db_range", "n_bands", "min_bw", "mode")


def filter_units_per_db(fe: features.FrontEndConfig) -> float:
    """Feature units per dB of filter gain: 1 for dB features; ln(10)/20 over the normalising
    std for natural-log features (Transformer4SED's PaSST features: ln(10)/20/5)."""
    if fe.log == "db":
        return 1.0
    return math.log(10.0) / 20.0 / (fe.norm_std or 1.0)


def filter_augment_kwargs(setting: Any) -> dict | None:
    """A stage's ``filter_augment`` value as keyword arguments of ``augment.filter_augment``.

    ``False`` -> None (off); ``True`` -> {} (the DCASE defaults: +-6 dB, 3-5 bands, min bandwidth
    6); a mapping with any of ``db_range`` ((low, high) dB), ``n_bands`` ((low, high), high
    exclusive as the reference's ``torch.randint``), ``min_bw`` (mel bins) and ``mode`` ("step" or
    "linear") -> those, the rest at the defaults. ``n_bands=(1, 2)`` draws one band, which leaves
    the input unchanged (as the reference), i.e. turns a mapping setting off.
    """
    if setting is None or setting is False:
        return None
    if setting is True:
        return {}
    if not hasattr(setting, "items"):
        raise ConfigError(f"filter_augment={setting!r}: expected True, False or a mapping of {', '.join(FILTER_KEYS)}")
    values = dict(setting.items())
    unknown = sorted(set(values) - set(FILTER_KEYS))
    if unknown:
        raise ConfigError(f"filter_augment: unknown key(s) {', '.join(unknown)}; known: {', '.join(FILTER_KEYS)}")
    out: dict[str, Any] = {}
    if "db_range" in values:
        out["db_range"] = tuple(float(v) for v in values["db_range"])
    if "n_bands" in values:
        out["n_bands"] = tuple(int(v) for v in values["n_bands"])
    if "min_bw" in values:
        out["min_bw"] = int(values["min_bw"])
    if "mode" in values:
        out["mode"] = str(values["mode"])
    return out


def mixup_options(stage_cfg: Mapping[str, Any], counts: Sequence[int] | None = None) -> dict:
    """``SEDAugment``'s mixup keywords from a stage config; a key the stage lacks keeps today's value.

    Stage keys: ``mixup_alpha`` / ``mixup_beta`` (lambda ~ Beta(alpha, beta); 0.2, 0.2),
    ``mixup_coin`` ("segment": each source its own coin, as before; "batch": one coin for the
    batch, as the reference) and ``mixup_sources`` (names from ``SOURCES`` that are mixed; all by
    default). ``counts``: the batch's (strong, weak, unlabeled) rows, to find each named source's
    segment (sources with no rows have none); without it every segment is mixed.
    """
    coin = str(stage_cfg.get("mixup_coin", "segment"))
    if coin not in MIXUP_COINS:
        raise ConfigError(f"mixup_coin={coin!r}; expected one of {', '.join(MIXUP_COINS)}")
    options = {"mixup_alpha": float(stage_cfg.get("mixup_alpha", 0.2)),
               "mixup_beta": float(stage_cfg.get("mixup_beta", 0.2)),
               "mixup_per_batch": coin == "batch", "mixup_segments": None}
    sources = stage_cfg.get("mixup_sources")
    if sources is None or counts is None:
        return options
    unknown = sorted(set(sources) - set(SOURCES))
    if unknown:
        raise ConfigError(f"mixup_sources has {', '.join(unknown)}; expected names from {', '.join(SOURCES)}")
    present = [name for name, count in zip(SOURCES, counts) if count > 0]
    options["mixup_segments"] = tuple(i for i, name in enumerate(present) if name in sources)
    return options


class SEDAugment:
    """The SED recipes' in-step augmentation of one stage.

    ``augment(key, feats, strong, weak) -> (feats, strong, weak)``: frame shift, mixup, then the
    label-free view (frequency distortion, FilterAugment). ``augment.pair(...)`` -> ``(student
    feats, teacher feats, strong, weak)``: the label-changing part is drawn once and, with
    ``two_views``, the label-free part once per network, as the reference's ``n_transform: 2``
    (ref recipes/desed/finetune/train.py:82, src/preprocess/data_aug.py feature_transformation);
    without it the teacher sees the student's input.

    segments: the row ranges of each source in the batch; mixup stays inside a segment so
    labelled and unlabelled rows never blend. No segments: the whole batch is one (PMAM's
    pre-training mixes its whole batch, pseudo labels passed as ``strong``).
    mixup: each mixed segment draws its own lambda ~ Beta(mixup_alpha, mixup_beta) and partner
    permutation; ``mixup_per_batch`` tosses one coin (probability ``mixup_prob``) for the batch
    instead of one per segment (ref ``recipes/desed/finetune/train.py:78-80``);
    ``mixup_segments``: the indices of the segments mixed (None: all).
    filter_augment: False, True (DCASE defaults) or a mapping (see ``filter_augment_kwargs``).
    freq_distortion: the largest bias of the sinusoidal frequency warp (0: off; reference 0.03).
    """

    def __init__(self, segments, *, frame_shift_sigma: float, mixup_prob: float, filter_augment: Any,
                 units_per_db: float = 1.0, mixup_alpha: float = 0.2, mixup_beta: float = 0.2,
                 mixup_per_batch: bool = False, mixup_segments: Sequence[int] | None = None,
                 freq_distortion: float = 0.0, two_views: bool = False):
        self.segments = list(segments)
        self.frame_shift_sigma, self.mixup_prob = frame_shift_sigma, mixup_prob
        self.mixup_alpha, self.mixup_beta, self.mixup_per_batch = mixup_alpha, mixup_beta, mixup_per_batch
        self.mixed = None if mixup_segments is None else frozenset(int(i) for i in mixup_segments)
        self.filter_kwargs = filter_augment_kwargs(filter_augment)
        self.units_per_db = units_per_db
        self.freq_distortion, self.two_views = float(freq_distortion), bool(two_views)

    def labelled(self, key, feats, strong, weak):
        """Frame shift and mixup, what changes the labels too -> (key of the label-free view, feats,
        strong, weak)."""
        k_shift, k_mix, k_view = jax.random.split(key, 3)
        if self.frame_shift_sigma > 0:
            feats, strong = augment.frame_shift(k_shift, feats, strong, self.frame_shift_sigma)
        if self.mixup_prob > 0:
            rows = self.segments or [(0, feats.shape[0])]
            prob = self.mixup_prob
            if self.mixup_per_batch:  # one coin for every mixed segment: prob 1 or 0 below
                prob = jnp.where(jax.random.uniform(jax.random.fold_in(k_mix, len(rows))) < self.mixup_prob, 1.0, 0.0)
            parts = []
            for i, (start, stop) in enumerate(rows):
                part = (feats[start:stop], strong[start:stop], weak[start:stop])
                if self.mixed is None or i in self.mixed:
                    part = augment.mixup(jax.random.fold_in(k_mix, i), *part, alpha=self.mixup_alpha,
                                         beta=self.mixup_beta, prob=prob)
                parts.append(part)
            feats, strong, weak = (jnp.concatenate(p, axis=0) for p in zip(*parts))
        return k_view, feats, strong, weak

    def view(self, key, feats):
        """Frequency distortion, then FilterAugment (the reference's order): labels unchanged."""
        if self.freq_distortion > 0:
            feats = augment.freq_distortion(jax.random.fold_in(key, 1), feats, self.freq_distortion)
        if self.filter_kwargs is not None:
            feats = augment.filter_augment(key, feats, units_per_db=self.units_per_db, **self.filter_kwargs)
        return feats

    def __call__(self, key, feats, strong, weak):
        k_view, feats, strong, weak = self.labelled(key, feats, strong, weak)
        return self.view(k_view, feats), strong, weak

    def pair(self, key, feats, strong, weak):
        k_view, feats, strong, weak = self.labelled(key, feats, strong, weak)
        student = self.view(k_view, feats)
        teacher = self.view(jax.random.fold_in(k_view, 2), feats) if self.two_views else student
        return student, teacher, strong, weak


def stage_augment(stage_cfg: Mapping[str, Any], fe: features.FrontEndConfig, segments=(),
                  counts: Sequence[int] | None = None) -> SEDAugment:
    """A stage's augmentation from its config keys (``frame_shift_sigma``, ``mixup_*``,
    ``filter_augment``, ``freq_distortion``, ``two_views``); a key the stage lacks is off."""
    return SEDAugment(segments, frame_shift_sigma=float(stage_cfg.get("frame_shift_sigma", 0.0)),
                      mixup_prob=float(stage_cfg.get("mixup_prob", 0.0)),
                      filter_augment=stage_cfg.get("filter_augment", False),
                      units_per_db=filter_units_per_db(fe),
                      freq_distortion=float(stage_cfg.get("freq_distortion", 0.0)),
                      two_views=bool(stage_cfg.get("two_views", False)),
                      **mixup_options(stage_cfg, counts))


def batch_segments(counts) -> list[tuple[int, int]]:
    """Row ranges of consecutive sources with these per-batch counts (zeros skipped)."""
    counts = [c for c in counts if c > 0]
    return [(sum(counts[:i]), sum(counts[:i + 1])) for i in range(len(counts))]
