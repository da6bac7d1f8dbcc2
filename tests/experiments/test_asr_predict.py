"""``--mode=predict`` of the session's smoke-trained speech recognisers (``trained``, shared with
test_systems.py): Paraformer's transcripts equal its run's own evaluation transcripts, its ids and
fire frames the System's decode (so the token times follow the rule of ``jaxaudio/predict/asr.py``),
a 44.1-kHz copy reads as the 16-kHz file, and the run.py command line names a refused file; the
autoregressive baseline's transcripts equal its evaluation's, without token times.

The smoke runs are poor recognisers (a minute of training). When this was written Paraformer's dev
transcripts were runs of one letter (CER 0.94) whose length, the CIF's token count, follows the
audio, so equal texts and equal fire frames still test the front end, the weights and the CIF;
the baseline wrote one 40-token string for every file (a decoder that never stops), so its check
is of the wiring: the trained weights, the tokenizer, null token times, the full-buffer note.
The model-free parts (the time rule, buckets, file handling on a fake model) are
tests/predict/test_asr_predict.py.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from jaxaudio.audio.io import read_audio, resample
from jaxaudio.data.tokenizer import SPECIALS
from jaxaudio.predict.asr import predict_files, token_times
from tests.predict.test_asr_predict import _read_outputs, _wav

SR = 16000


def _evaluated(workdir: str) -> dict:
    """path -> the hypothesis of the run's final evaluation on dev (the student: no teacher)."""
    with open(Path(workdir) / "evaluation/dev_student_transcripts.tsv", newline="", encoding="utf-8") as f:
        return {r["path"]: r["hypothesis"] for r in csv.DictReader(f, delimiter="\t")}


def _dev(config) -> list[str]:
    from experiments.asr import data as asr_data

    return sorted(u.path for u in asr_data.ASRData(config).source("dev").utterances)


def _longest_hypothesis(hypotheses: dict) -> str:
    """The dev file whose evaluated transcript is longest (a non-empty one, so a comparison of
    texts on it is not trivially ``"" == ""``)."""
    path = max(sorted(hypotheses), key=lambda p: len(hypotheses[p]))
    assert hypotheses[path], "every dev transcript of the smoke run is empty"
    return path


def test_trained_paraformer_transcribes_as_the_evaluator(trained, tmp_path):
    from experiments.asr import data as asr_data
    from experiments.paraformer.system import frame_seconds
    from jaxaudio.train.trainer import batch_predictor

    system, config, workdir, _ = trained("paraformer")
    dev = _dev(config)
    hypotheses = _evaluated(workdir)
    assert sorted(hypotheses) == dev
    chosen = _longest_hypothesis(hypotheses)
    original = read_audio(chosen, SR)
    at_44k = _wav(tmp_path / "in/chosen_44k.wav", resample(original, SR, 44100), rate=44100)
    as_read = _wav(tmp_path / "in/chosen_as_read.wav", read_audio(at_44k, SR))   # what the reader makes of it
    (tmp_path / "in/broken.flac").write_bytes(b"fLaC but not really")
    predictor, source = system.predictor(config, workdir)
    assert f"{system.final_stage(config)} student, step " in source
    summary = predict_files(predictor, [*dev, str(tmp_path / "in")], str(tmp_path / "out"), progress=False)
    assert [(Path(f["path"]).name, "unreadable" in f["error"]) for f in summary["failed"]] == [("broken.flac", True)]
    assert summary["written"] == len(dev) + 2
    assert not any("buffer" in n["note"] for n in summary["notes"])   # a token slot per encoder frame

    rows = {r["file"]: r for r in _read_outputs(tmp_path / "out")[1]}
    assert {p: rows[p]["text"] for p in dev} == hypotheses          # the evaluation's own transcripts
    assert rows[str(at_44k)]["text"] == rows[str(as_read)]["text"] != ""
    assert rows[str(at_44k)]["tokens"] == rows[str(as_read)]["tokens"]
    assert rows[str(at_44k)]["duration_s"] == pytest.approx(len(original) / SR, abs=1 / 44100)

    # ids and fire frames as the System's own decode (the evaluator's predict, max_tokens slots)
    samples = asr_data.ASRData(config).source("dev").samples
    audio, lengths = np.zeros((len(dev), samples), np.float32), np.zeros(len(dev), np.int32)
    for i, path in enumerate(dev):
        wave = read_audio(path, SR)
        audio[i, :len(wave)], lengths[i] = wave, len(wave)
    predict_batch, _ = batch_predictor(system, config, workdir)
    out = predict_batch(audio, audio_len=lengths)
    fs = frame_seconds(config)
    assert fs == predictor.frame_seconds == 0.04
    timed = 0
    for i, path in enumerate(dev):
        n = int(out["token_len"][i])
        assert n < out["tokens"].shape[1]   # the evaluator's buffer did not cut this transcript
        ids, fire = out["tokens"][i, :n].tolist(), out["fire_frames"][i, :n].tolist()
        row = rows[path]
        assert row["text"] == predictor.decode(ids)
        kept = [k for k, t in enumerate(ids) if t >= len(SPECIALS)]
        assert row["tokens"] == [predictor.tokens[ids[k]] for k in kept]
        expected = token_times(fire, fs, row["duration_s"])
        assert row["token_times"] == [expected[k] for k in kept]
        ends = [e for _, e in row["token_times"]]
        assert ends == sorted(ends) and all(e <= row["duration_s"] for e in ends)
        for k, (start, end) in zip(kept, row["token_times"]):
            assert end == pytest.approx(min((fire[k] + 1) * fs, row["duration_s"]))
            timed += fire[k] >= 0 and end < row["duration_s"]   # a time from a fire frame, not the clip
    assert timed > 0, "no token of the dev set got its time from a fire frame"


def test_run_py_predict_writes_transcripts_and_names_the_refused_file(trained, tmp_path, capsys):
    from experiments.run import main

    _, config, workdir, _ = trained("paraformer")
    hypotheses = _evaluated(workdir)
    chosen = _longest_hypothesis(hypotheses)
    wave = read_audio(chosen, SR)
    _wav(tmp_path / "in/ok.wav", wave)
    _wav(tmp_path / "in/long.wav", np.tile(wave, int(3 * SR // len(wave)) + 1))   # over the 3-s cap below
    out = tmp_path / "out"
    rc = main(["--exp=paraformer", "--mode=predict", "--workdir", workdir, "--input", str(tmp_path / "in"),
               "--out", str(out), "--max_seconds", "3"])
    captured = capsys.readouterr()
    assert rc == 1, captured.err   # a refused file fails the command, the rest are still written
    summary = json.loads(captured.out)
    assert summary["files"] == 2 and summary["written"] == 1 and summary["out_dir"] == str(out)
    [refused] = summary["failed"]
    assert refused["path"].endswith("long.wav") and "longer than the 3-s cap" in refused["error"]
    tsv, jsonl = _read_outputs(out)
    assert [Path(r["file"]).name for r in tsv] == ["ok.wav"]
    assert tsv[0]["text"] == jsonl[0]["text"] == hypotheses[chosen]

    assert main(["--exp=paraformer", "--mode=predict", "--workdir", workdir, "--input", str(tmp_path / "in"),
                 "--max_seconds", "-1"]) == 2
    assert "--max_seconds must be a positive number" in capsys.readouterr().err


def test_ar_asr_predict_transcribes_as_its_evaluation_without_token_times(trained, tmp_path, capsys):
    """The baseline decodes with the evaluator's beam search; it has no fire frames, so its rows
    have ``token_times`` null (not times made up from the clip)."""
    from experiments.run import main

    _, config, workdir, _ = trained("ar_asr")
    dev = _dev(config)
    hypotheses = _evaluated(workdir)
    assert sorted(hypotheses) == dev
    _longest_hypothesis(hypotheses)
    out = tmp_path / "out"
    assert main(["--exp=ar_asr", "--mode=predict", "--workdir", workdir, "--input", *dev,
                 "--out", str(out)]) == 0, capsys.readouterr().err
    tsv, jsonl = _read_outputs(out)
    assert {r["file"]: r["text"] for r in jsonl} == hypotheses
    assert [r["text"] for r in tsv] == [r["text"] for r in jsonl]
    assert all(r["token_times"] is None and "".join(r["tokens"]) == r["text"] for r in jsonl)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["token_times"] is None
    # the smoke run's decoder may not stop: a transcript that fills data.max_tokens is named
    full = {r["file"] for r in jsonl if len(r["tokens"]) == int(config.data.max_tokens)}
    assert full <= {n["path"] for n in summary["notes"] if "buffer" in n["note"]}
