"""predict_files against a fake model whose scores are known in closed form.

The fake model scores each output frame (1000 samples at 16 kHz, 160 per 10 s clip) by the
energy of that frame's samples in two bands, E / (E + E0): a frame-local function, so the
scores a stitched long file must have are those of the same function applied to the whole
file's frames. The written files are read back with sed_scores_eval and PSDS is computed by
sed_scores_eval from the files and from memory.
"""
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sed_scores_eval import intersection_based, io as sse_io
from sed_scores_eval.base_modules.scores import create_score_dataframe

from jaxaudio.audio.io import read_audio, write_audio
from jaxaudio.data.sed.labels import median_filter
from jaxaudio.predict import SEDPredictor, predict_files
from jaxaudio.predict.files import assign_clip_ids
from jaxaudio.predict.sed import stitch, window_count, window_hop_frames

SR = 16000
FRAME = 1000  # samples per output frame
FRAMES = 160  # output frames per clip
CLIP = FRAME * FRAMES  # 10 s
HOP_S = FRAME / SR  # 0.0625 s, exact in binary
CLASSES = ("low", "high")
BANDS = ((200.0, 1000.0), (2000.0, 4000.0))
E0 = 50.0
MEDIAN = 7
BATCH = 4
PSDS1 = dict(dtc_threshold=0.7, gtc_threshold=0.7, alpha_ct=0.0, alpha_st=1.0, max_efpr=100.0)


def frame_scores(frames: np.ndarray) -> np.ndarray:
    """(n, FRAME) samples -> (n, classes) float32 band-energy probabilities."""
    spec = np.abs(np.fft.rfft(np.asarray(frames, np.float64), axis=-1)) ** 2
    freqs = np.fft.rfftfreq(FRAME, 1.0 / SR)
    energy = np.stack([spec[:, (freqs >= lo) & (freqs < hi)].sum(-1) for lo, hi in BANDS], -1)
    return (energy / (energy + E0)).astype(np.float32)


def fake_predict_batch(batch: np.ndarray) -> dict:
    assert batch.shape == (BATCH, CLIP) and batch.dtype == np.float32
    # Row by row, so a window's scores do not depend on its position in the batch.
    strong = np.stack([frame_scores(row.reshape(FRAMES, FRAME)) for row in batch])
    return {"strong": strong, "weak": strong.max(axis=1)}


def postprocess(scores):
    return median_filter(scores, MEDIAN)


def make_predictor(**overrides) -> SEDPredictor:
    kwargs = dict(
        predict_batch=fake_predict_batch, batch_size=BATCH, sample_rate=SR, clip_samples=CLIP,
        frame_timestamps=np.arange(FRAMES + 1) * HOP_S, class_names=CLASSES,
        postprocess=postprocess, threshold=0.5,
    )
    kwargs.update(overrides)
    return SEDPredictor(**kwargs)


def expected_scores(path: Path) -> np.ndarray:
    """The whole-file post-processed scores in closed form: the frame function on the file's
    audio as the training reader reads it at SR, zero-padded to whole frames."""
    audio = read_audio(path, SR, mono=True)
    n = -(-len(audio) // FRAME)
    audio = np.pad(audio, (0, n * FRAME - len(audio)))
    return postprocess(frame_scores(audio.reshape(n, FRAME)))


def band_noise(rng, seconds: float, band, amplitude=0.1, rate=SR) -> np.ndarray:
    n = int(round(seconds * rate))
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    spec[(freqs < band[0]) | (freqs >= band[1])] = 0
    x = np.fft.irfft(spec, n)
    return amplitude * x / x.std()


def synth(rng, seconds, events, rate=SR, channels=1) -> np.ndarray:
    """Noise floor plus band noise bursts; events = [(onset, offset, class index)]."""
    n = int(round(seconds * rate))
    x = 1e-3 * rng.standard_normal(n)
    for onset, offset, k in events:
        a, b = int(round(onset * rate)), int(round(offset * rate))
        x[a:b] += band_noise(rng, (b - a) / rate, BANDS[k], rate=rate)
    if channels == 1:
        return x.astype(np.float32)
    # Channels that differ, so a wrong mix would change the scores.
    return np.stack([x * (0.5 + 0.5 * c) for c in range(channels)]).astype(np.float32)


def read_back(out: Path, clip: str) -> pd.DataFrame:
    return sse_io.read_sed_scores(out / "scores" / f"{clip}.tsv")


def test_ten_second_files_round_trip_and_psds1_from_files(tmp_path):
    rng = np.random.default_rng(0)
    layouts = {
        "a": [(1.0, 3.5, 0), (6.0, 6.8, 1)],
        "b": [(0.0, 2.0, 1), (4.25, 9.0, 0)],
        "c": [(2.5, 5.0, 0), (3.0, 4.0, 1), (8.0, 10.0, 1)],
        "d": [],
    }
    rows = []
    for name, events in layouts.items():
        write_audio(tmp_path / "in" / f"{name}.wav", synth(rng, 10.0, events), SR)
        # Ground truth a little off the bursts, so detection quality is not trivially perfect.
        rows += [(f"{name}.wav", on + 0.1, off - 0.05, CLASSES[k]) for on, off, k in events]
        if not events:  # a clip without events: one row with empty onset/offset/label
            rows.append((f"{name}.wav", np.nan, np.nan, np.nan))
    gt_path = tmp_path / "gt.tsv"
    pd.DataFrame(rows, columns=["filename", "onset", "offset", "event_label"]).to_csv(
        gt_path, sep="\t", index=False
    )
    out = tmp_path / "out"
    summary = predict_files(make_predictor(), [str(tmp_path / "in")], str(out), plots=0)
    assert summary["written"] == 4 and summary["failed"] == []

    timestamps = np.arange(FRAMES + 1) * HOP_S
    in_memory = {}
    for name in layouts:
        expected = expected_scores(tmp_path / "in" / f"{name}.wav")
        df = read_back(out, name)
        assert list(df.columns) == ["onset", "offset", *CLASSES]
        np.testing.assert_array_equal(df[list(CLASSES)].to_numpy().astype(np.float32), expected)
        np.testing.assert_array_equal(df["onset"].to_numpy(), timestamps[:-1])
        np.testing.assert_array_equal(df["offset"].to_numpy(), timestamps[1:])
        in_memory[name] = create_score_dataframe(expected, timestamps, list(CLASSES))

    durations = {name: 10.0 for name in layouts}
    from_files = intersection_based.psds(str(out / "scores"), str(gt_path), durations, **PSDS1)[0]
    from_memory = intersection_based.psds(
        in_memory, sse_io.read_ground_truth_events(gt_path), durations, **PSDS1
    )[0]
    assert 0.2 < from_memory <= 1.0
    assert abs(from_files - from_memory) <= 1e-6


def test_long_stereo_44k_and_short_files_cover_their_length(tmp_path):
    rng = np.random.default_rng(1)
    long_path = tmp_path / "long.wav"
    write_audio(long_path, synth(rng, 45.0, [(3.0, 12.0, 0), (20.0, 31.0, 1)], 44100, 2), 44100)
    short_path = tmp_path / "short.wav"
    write_audio(short_path, synth(rng, 3.0, [(0.5, 2.0, 1)]), SR)
    odd_path = tmp_path / "odd.wav"  # not a whole number of frames: a final partial frame
    write_audio(odd_path, synth(rng, 12.345, [(9.0, 11.0, 0)]), SR)
    out = tmp_path / "out"
    summary = predict_files(
        make_predictor(), [str(long_path), str(short_path), str(odd_path)], str(out), plots=0
    )
    assert summary["written"] == 3
    windows = {c["clip"]: c["windows"] for c in summary["clips"]}
    assert windows == {"long": 8, "short": 1, "odd": 2}  # 45 s: 0, 5, ..., 35 s

    for clip, path, duration in [("long", long_path, 45.0), ("short", short_path, 3.0),
                                 ("odd", odd_path, 12.345)]:
        df = read_back(out, clip)
        assert df["onset"].iloc[0] == 0.0
        assert abs(df["offset"].iloc[-1] - duration) <= HOP_S
        assert df["offset"].iloc[-1] == pytest.approx(duration, abs=1e-9)
        expected = expected_scores(path)
        got = df[list(CLASSES)].to_numpy().astype(np.float32)
        assert got.shape == expected.shape
        # A frame-local model: stitched == closed form at every frame (window interiors and
        # the halves two windows share alike).
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    long_scores = read_back(out, "long")[list(CLASSES)].to_numpy()
    # Frame 100 (6.25 s) lies inside windows 0 and 1 (frames 0-159 and 80-239): averaged.
    np.testing.assert_allclose(long_scores[100], expected_scores(long_path)[100], rtol=1e-6)
    assert long_scores[100, 0] > 0.9 and long_scores[400, 1] > 0.9  # inside the bursts


def test_stitch_averages_overlapping_windows():
    windows = np.stack([np.full((4, 1), v, np.float32) for v in (1.0, 3.0, 5.0)])
    got = stitch(windows, hop_frames=2, n_frames=7)
    np.testing.assert_array_equal(got[:, 0], [1, 1, 2, 2, 4, 4, 5])
    assert window_hop_frames(156, 0.5) == 78 and window_hop_frames(160, 0.0) == 160
    assert window_count(720, 160, 80) == 8 and window_count(48, 160, 80) == 1


def test_corrupt_file_is_reported_once_and_others_written(tmp_path, caplog):
    rng = np.random.default_rng(2)
    folder = tmp_path / "in"
    for name in ("a", "c"):
        write_audio(folder / f"{name}.wav", synth(rng, 4.0, [(1.0, 2.0, 0)]), SR)
    bad = folder / "b.wav"
    bad.write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="jaxaudio.predict"):
        summary = predict_files(make_predictor(), [str(folder)], str(out), plots=0)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and str(bad) in errors[0].getMessage()
    assert "corrupt or unreadable" in errors[0].getMessage()
    assert summary["files"] == 3 and summary["written"] == 2
    assert [f["path"] for f in summary["failed"]] == [str(bad)]
    assert sorted(p.name for p in (out / "scores").iterdir()) == ["a.tsv", "c.tsv"]
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["failed"] == summary["failed"] and on_disk["written"] == 2
    # Off a terminal (pytest captures stderr) progress is log lines, not a bar.
    assert any("3/3 files done (1 failed)" in r.getMessage() for r in caplog.records)


def test_events_tsv_matches_burst_times(tmp_path):
    rng = np.random.default_rng(3)
    # 25 s: windows start at 0, 5, 10, 15 s, so the first burst spans a window seam.
    bursts = [(3.33, 7.77, 0), (12.1, 12.9, 1), (20.02, 24.0, 1)]
    write_audio(tmp_path / "in" / "scene.wav", synth(rng, 25.0, bursts), SR)
    out = tmp_path / "out"
    summary = predict_files(make_predictor(), [str(tmp_path / "in")], str(out), plots=0)
    events = pd.read_csv(out / "events.tsv", sep="\t")
    assert list(events.columns) == ["filename", "onset", "offset", "event_label"]
    assert summary["events"] == len(events) == len(bursts)
    assert set(events["filename"]) == {"scene.wav"}
    got = sorted(zip(events["onset"], events["offset"], events["event_label"]))
    for (onset, offset, label), (t_on, t_off, k) in zip(got, sorted(bursts)):
        assert label == CLASSES[k]
        assert abs(onset - t_on) <= HOP_S and abs(offset - t_off) <= HOP_S
    # Per-class thresholds: nothing scores above 1.0, so only the 'low' event remains.
    predict_files(make_predictor(threshold=(0.5, 1.0)), [str(tmp_path / "in")], str(out), plots=0)
    assert pd.read_csv(out / "events.tsv", sep="\t")["event_label"].tolist() == ["low"]


def test_timelines_for_first_n_files_only(tmp_path):
    rng = np.random.default_rng(4)
    for name in ("x1", "x2", "x3"):
        write_audio(tmp_path / "in" / f"{name}.wav", synth(rng, 2.0, [(0.5, 1.5, 0)]), SR)
    out = tmp_path / "out"
    summary = predict_files(make_predictor(), [str(tmp_path / "in")], str(out), plots=2)
    pngs = sorted(p.name for p in (out / "timelines").iterdir())
    assert pngs == ["x1.png", "x2.png"]
    assert summary["timelines"] == [str(out / "timelines" / n) for n in pngs]
    assert (out / "timelines" / "x1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_shared_stems_ogg_and_unresamplable_rate(tmp_path, caplog):
    rng = np.random.default_rng(5)
    x = synth(rng, 2.0, [(0.5, 1.5, 1)])
    write_audio(tmp_path / "day1" / "rec.wav", x, SR)
    write_audio(tmp_path / "day2" / "rec.wav", x, SR)
    import soundfile as sf

    sf.write(str(tmp_path / "day2" / "other.ogg"), x, SR, format="OGG", subtype="VORBIS")
    write_audio(tmp_path / "odd_rate.wav", x[:44101], 44101)  # 16000/44101: refused
    out = tmp_path / "out"
    with caplog.at_level(logging.ERROR, logger="jaxaudio.predict"):
        summary = predict_files(
            make_predictor(), [str(tmp_path / "day1"), str(tmp_path / "day2"),
                               str(tmp_path / "odd_rate.wav"), str(tmp_path / "nope.wav")],
            str(out), plots=0,
        )
    assert {c["clip"] for c in summary["clips"]} == {"day1__rec", "day2__rec", "other"}
    assert {c["filename"] for c in summary["clips"]} == {"day1__rec.wav", "day2__rec.wav", "other.ogg"}
    assert sorted(f["path"] for f in summary["failed"]) == sorted(
        [str(tmp_path / "odd_rate.wav"), str(tmp_path / "nope.wav")]
    )
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 2
    np.testing.assert_array_equal(read_back(out, "day1__rec").to_numpy(),
                                  read_back(out, "day2__rec").to_numpy())
    ids = [f.clip_id for f in assign_clip_ids([Path("a/x.wav"), Path("a/x.flac"), Path("a__x.wav")])]
    assert len(set(ids)) == 3


def test_bad_predictor_outputs_raise(tmp_path):
    write_audio(tmp_path / "a.wav", np.zeros(SR, np.float32), SR)
    wrong = make_predictor(predict_batch=lambda b: {"strong": np.zeros((BATCH, FRAMES - 1, 2))})
    with pytest.raises(ValueError, match="expected"):
        predict_files(wrong, [str(tmp_path / "a.wav")], str(tmp_path / "out"), plots=0)
    with pytest.raises(ValueError, match="one per class"):
        make_predictor(threshold=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="uniform grid"):
        make_predictor(frame_timestamps=np.r_[0.0, 0.1, 0.3])
