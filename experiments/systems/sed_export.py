"""Export data hooks shared by the SED systems: calibration clips and the held-out set."""
from __future__ import annotations

import numpy as np

from experiments.systems import sed_data, sed_eval
from jaxaudio.data.labels import FrameLabelEncoder
from jaxaudio.export.model import HeldOut


def calibration_fn(config, encoder: FrameLabelEncoder):
    """``n -> (n, samples)`` waveforms spread evenly over the strong training subset."""

    def calibration(n: int) -> np.ndarray:
        source = sed_data.clip_source(sed_data.data_root(config.data), config.data, config.data.train_strong,
                                      encoder)
        picks = np.linspace(0, len(source) - 1, num=min(n, len(source))).round().astype(int)
        return np.stack([source[int(i)]["audio"] for i in picks]).astype(np.float32)

    return calibration


def held_out_fn(config, encoder: FrameLabelEncoder):
    """``max_clips -> HeldOut`` over the validation subset, scored by the systems' SED metrics."""

    def held_out(max_clips: int) -> HeldOut:
        source = sed_data.clip_source(sed_data.data_root(config.data), config.data, config.data.validation,
                                      encoder)
        count = len(source) if max_clips <= 0 else min(max_clips, len(source))
        waves = np.stack([source[i]["audio"] for i in range(count)]).astype(np.float32)
        ids = tuple(source.records[i].clip_id for i in range(count))

        def score(scores: dict[str, np.ndarray]) -> dict[str, float]:
            return sed_eval.sed_metrics(scores, source, config.eval.median_window)

        return HeldOut(waves, ids, score)

    return held_out
