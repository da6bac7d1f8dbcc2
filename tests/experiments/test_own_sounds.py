"""Train on your own sounds, as the README's commands do: sound banks with their own class names
-> soundscapes -> ``run.py --data_dir`` -> ``--mode=predict`` on a new recording.

The CRNN's smoke preset stands in for every SED system (they share the data path); the
registry-wide system test covers each system on the built-in set, and
``benchmarks/own_sounds.py`` measures PMAM's tiny run on the same kind of data.
"""
from __future__ import annotations

import csv
import json
import os

import numpy as np
import soundfile as sf

from benchmarks.own_sounds import untrained_metrics
from experiments import run
from jaxaudio.audio.io import resample
from jaxaudio.data.synth.__main__ import main as synth
from jaxaudio.data.synth.demo_banks import DEMO_CLASSES, write_demo_banks

SMOKE_SIZES = ["--clip-seconds", "2.5", "--n-strong", "96", "--n-weak", "24", "--n-unlabeled", "24",
               "--n-validation", "32", "--n-eval", "32", "--max-events", "2"]


def test_banks_to_soundscapes_to_training_to_predict(tmp_path):
    fg, bg = write_demo_banks(tmp_path / "banks", files_per_class=6, backgrounds=4, background_seconds=6.0)
    data, workdir = str(tmp_path / "set"), str(tmp_path / "run")
    assert synth(["--task", "desed", "--foreground", str(fg), "--background", str(bg), "--out", data, "--quiet",
                  *SMOKE_SIZES]) == 0
    assert run.main(["--exp=crnn", "--preset=smoke", "--data_dir", data, "--workdir", workdir]) == 0

    with open(os.path.join(workdir, "config.json")) as f:
        assert tuple(json.load(f)["config"]["data"]["classes"]) == tuple(sorted(DEMO_CLASSES))
    with open(os.path.join(workdir, "metrics.json")) as f:
        record = json.load(f)
    trained = record["final_eval"]["validation/teacher/frame_auc"]
    untrained = untrained_metrics(workdir)["validation/frame_auc"]
    assert trained > untrained + 0.1, f"frame AUC {untrained:.3f} untrained -> {trained:.3f}"

    # a rerun of the finished workdir is recorded and keeps the training time
    assert run.main(["--exp=crnn", "--preset=smoke", "--data_dir", data, "--workdir", workdir]) == 0
    with open(os.path.join(workdir, "metrics.json")) as f:
        again = json.load(f)
    assert again["total_wall_seconds"] == record["total_wall_seconds"]
    assert [i["worked_on"] for i in again["invocations"]] == [["train", "evaluation"], []]

    # a new recording (44.1 kHz stereo, longer than a clip) gets events of the user's classes
    clip, rate = sf.read(os.path.join(data, "audio/eval/public/eval_00000.wav"))
    longer = resample(np.tile(clip, 3), rate, 44100)
    sf.write(tmp_path / "new.flac", np.stack([longer, 0.5 * longer], axis=1), 44100)
    out = tmp_path / "found"
    assert run.main(["--exp=crnn", "--mode=predict", "--workdir", workdir, "--input", str(tmp_path / "new.flac"),
                     "--out", str(out), "--plots", "0"]) == 0
    with open(out / "scores" / "new.tsv") as f:
        header = next(csv.reader(f, delimiter="\t"))
    assert header[2:] == sorted(DEMO_CLASSES)
