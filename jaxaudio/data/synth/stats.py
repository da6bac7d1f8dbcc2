"""Event statistics of a written DESED-layout set, read back from its strong tsv files."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxaudio.data.synth.desed import BUILTIN_SUBSETS
from jaxaudio.data.synth.sources import CLASSES


def event_statistics(root) -> dict:
    """Per subset: clips, events per class, mean event duration, overlap fraction.

    Overlap fraction = share of labelled event time during which another event is active.
    Read back from the written strong tsv files, so it describes what is on disk.
    """
    root = Path(root)
    stats = {}
    for plan in BUILTIN_SUBSETS:
        path = root / (plan.strong_tsv or "")
        if not plan.strong_tsv or not path.is_file():
            continue
        clips: dict[str, list[tuple[float, float, str]]] = {}
        for line in path.read_text().splitlines()[1:]:
            name, onset, offset, label = line.split("\t")
            clips.setdefault(name, [])
            if label:
                clips[name].append((float(onset), float(offset), label))
        per_class = {c: 0 for c in CLASSES}
        durations, overlapped, total = [], 0.0, 0.0
        for events in clips.values():
            grid = np.zeros(int(1000 * max([e[1] for e in events], default=0)) + 1, int)
            for onset, offset, label in events:
                per_class[label] += 1
                durations.append(offset - onset)
                grid[int(onset * 1000):int(offset * 1000)] += 1
            for onset, offset, _ in events:
                seg = grid[int(onset * 1000):int(offset * 1000)]
                overlapped += float(np.sum(seg > 1)) / 1000
                total += len(seg) / 1000
        stats[plan.name] = {
            "clips": len(clips),
            "empty_clips": sum(1 for e in clips.values() if not e),
            "events": len(durations),
            "events_per_class": per_class,
            "mean_event_seconds": float(np.mean(durations)) if durations else 0.0,
            "overlap_fraction": overlapped / total if total else 0.0,
        }
    return stats
