"""Sound event detection metrics: exact PSDS, intersection / collar / segment F1, PSD-ROC plot.

Our own vectorised numpy implementation; sed_scores_eval serves only as the test reference
(results agree to float precision, see tests/metrics).

Inputs shared by every function (numpy, on the host):
  scores: {clip_id: (frames, classes) array}, frame scores, higher = more confident.
  timestamps: (frames + 1,) frame boundaries in seconds shared by all clips, or
    {clip_id: (frames_i + 1,)} when clips differ in length.
  ground_truth: {clip_id: [(onset, offset, label), ...]}, an empty list for a clip without
    events; every scored clip needs an entry. Events of one class must not overlap.
  durations: {clip_id: seconds} (extra clips are ignored); the sum over scored clips is the
    time base of false-positive rates.
  classes: class names in the column order of `scores`.

Conventions:
  * At a threshold t a frame is active when score > t; a detected event is a maximal run of
    active frames, from its first frame's onset to its last frame's offset timestamp.
  * PSDS is threshold-free: it uses every distinct score value s as an operating point
    ("frames with score >= s are active"), i.e. the exact PSD-ROC.
  * Overlaps and collars are compared after rounding to 6 decimals (time_decimals).
"""
from jaxaudio.metrics.plots import plot_psd_roc
from jaxaudio.metrics.psds import PSDSResult, psds, psds1, psds2
from jaxaudio.metrics.sed_f1 import collar_f1, intersection_f1, segment_f1

__all__ = [
    "PSDSResult", "psds", "psds1", "psds2", "intersection_f1", "collar_f1", "segment_f1", "plot_psd_roc",
]
