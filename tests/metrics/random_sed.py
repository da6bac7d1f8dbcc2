"""Random SED evaluation sets for checking our metrics against sed_scores_eval.

The system is deliberately mediocre (noisy, smoothed logits) so that PSD-ROC and
F1 curves have many operating points; sets satisfy what sed_scores_eval needs
(every class has an event, same-class events never overlap).
"""
from __future__ import annotations

import dataclasses

import numpy as np

DESED_CLASSES = (
    "Alarm_bell_ringing", "Blender", "Cat", "Dishes", "Dog",
    "Electric_shaver_toothbrush", "Frying", "Running_water", "Speech", "Vacuum_cleaner",
)
FRAME_SECONDS = 0.064  # DESED baseline: 16 kHz, hop 256, pooled by 4


@dataclasses.dataclass
class RandomSedSet:
    scores: dict          # clip -> (frames, classes)
    timestamps: object    # (frames + 1,) shared, or clip -> (frames_i + 1,)
    ground_truth: dict    # clip -> [(onset, offset, label)]
    durations: dict       # clip -> seconds
    classes: tuple

    def args(self):
        return self.scores, self.timestamps, self.ground_truth, self.durations, self.classes

    def sse_scores(self):
        """The same scores as sed_scores_eval score DataFrames."""
        from sed_scores_eval.base_modules.scores import create_score_dataframe
        return {
            clip: create_score_dataframe(s, self.clip_timestamps(clip), list(self.classes))
            for clip, s in self.scores.items()
        }

    def clip_timestamps(self, clip):
        return self.timestamps[clip] if isinstance(self.timestamps, dict) else self.timestamps


def random_sed_set(seed: int, num_clips: int = 100, *, classes=DESED_CLASSES, variable_length=False,
                   decimals=None, gain=0.55, empty_fraction=0.15) -> RandomSedSet:
    """A seeded random set: clips of 10 s (or 4-10 s with variable_length) on the DESED frame grid.

    decimals: round scores to this many decimals, which creates many tied scores.
    """
    rng = np.random.default_rng(seed)
    num_classes = len(classes)
    scores, times, ground_truth, durations = {}, {}, {}, {}
    for i in range(num_clips):
        clip = f"clip_{i:04d}"
        duration = float(np.round(rng.uniform(4.0, 10.0), 3)) if variable_length else 10.0
        frames = int(np.ceil(duration / FRAME_SECONDS))
        ts = np.arange(frames + 1) * FRAME_SECONDS
        n_events = 0 if rng.random() < empty_fraction else int(rng.integers(1, 5))
        events = []
        for _ in range(n_events):
            label = classes[rng.integers(num_classes)]
            length = rng.uniform(0.2, 0.6 * duration)
            onset = float(np.round(rng.uniform(0, duration - length), 3))
            offset = float(np.round(min(onset + length, duration), 3))
            if not any(lab == label and on < offset and onset < off for on, off, lab in events):
                events.append((onset, offset, label))
        scores[clip], times[clip], ground_truth[clip], durations[clip] = None, ts, events, duration
    _give_every_class_an_event(ground_truth, durations, classes, rng)
    for clip in scores:
        scores[clip] = _mediocre_scores(times[clip], ground_truth[clip], classes, rng, gain, decimals)
    timestamps = times if variable_length else times[next(iter(times))]
    return RandomSedSet(scores, timestamps, ground_truth, durations, tuple(classes))


def _give_every_class_an_event(ground_truth, durations, classes, rng):
    clips = sorted(ground_truth)
    for label in classes:
        if any(lab == label for events in ground_truth.values() for *_, lab in events):
            continue
        clip = clips[rng.integers(len(clips))]
        onset = float(np.round(rng.uniform(0, durations[clip] - 1.0), 3))
        ground_truth[clip].append((onset, onset + 1.0, label))


def _mediocre_scores(ts, events, classes, rng, gain, decimals):
    """sigmoid(+-3 gain inside/outside events + N(0, 2)), smoothed over 5 frames."""
    frames = len(ts) - 1
    target = np.zeros((frames, len(classes)))
    centres = (ts[:-1] + ts[1:]) / 2
    for onset, offset, label in events:
        target[(centres >= onset) & (centres < offset), classes.index(label)] = 1.0
    logits = 3.0 * gain * (2 * target - 1) + rng.normal(0.0, 2.0, target.shape)
    kernel = np.ones(5) / 5
    smooth = np.stack([np.convolve(logits[:, k], kernel, mode="same") for k in range(len(classes))], axis=1)
    probs = 1 / (1 + np.exp(-smooth))
    return np.round(probs, decimals) if decimals is not None else probs


def hand_case():
    """The hand-worked clip shared by the PSDS and F1 tests (their comments work it out)."""
    # One 10 s clip with 1 s frames, two classes, unit_of_time="second" so eFPR = FPs / 10 s.
    ts = np.arange(11.0)
    scores = np.zeros((10, 2))
    scores[:, 0] = [0, 0, 0.9, 0.8, 0.8, 0.9, 0, 0.6, 0, 0]
    scores[:, 1] = [0.6, 0, 0, 0, 0, 0, 0, 0.5, 0.5, 0.2]
    gt = {"clip": [(2.0, 6.0, "a"), (7.0, 9.0, "b")]}
    return {"clip": scores}, ts, gt, {"clip": 10.0}, ["a", "b"]
