"""Global CMVN: statistics against numpy over the valid frames, chunking invariance, the saved file,
and normalised training frames."""
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaudio.audio import cmvn
from jaxaudio.errors import DataFormatError, ShapeError

F = 80


def padded_batches(seed=0, n_batches=6, batch=4, max_t=50):
    """(feats, mask) batches of fbank-like features (offset, scaled per bin) with random padding
    that holds garbage (so any leak of padding into the statistics shows)."""
    rng = np.random.default_rng(seed)
    offset, scale = rng.uniform(-5, 15, F), rng.uniform(0.5, 4, F)
    out = []
    for _ in range(n_batches):
        lengths = rng.integers(1, max_t + 1, batch)
        feats = (offset + scale * rng.standard_normal((batch, max_t, F))).astype(np.float32)
        mask = np.arange(max_t)[None, :] < lengths[:, None]
        feats[~mask] = 1e6
        out.append((feats, mask))
    return out


def valid_frames(batches):
    return np.concatenate([f[m] for f, m in batches]).astype(np.float64)


def test_stats_equal_numpy_over_valid_frames():
    batches = padded_batches()
    stats = cmvn.compute_global_cmvn(batches, show_progress=False)
    frames = valid_frames(batches)
    assert stats.count == len(frames) and stats.dim == F
    np.testing.assert_allclose(stats.mean, frames.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats.std, frames.std(0), rtol=1e-9)


def test_chunking_does_not_change_the_stats():
    batches = padded_batches(1)
    frames = valid_frames(batches)
    one = cmvn.CMVNStats().accumulate(frames)
    three = cmvn.CMVNStats()
    for chunk in np.array_split(frames, 3):
        three.accumulate(chunk)
    batched = cmvn.compute_global_cmvn(batches, show_progress=False)
    for other in (three, batched):
        assert other.count == one.count
        np.testing.assert_allclose(other.mean, one.mean, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(other.var, one.var, rtol=1e-12, atol=1e-12)


def test_variance_floor_and_shape_errors():
    stats = cmvn.CMVNStats().accumulate(np.full((10, 3), 2.5))
    assert np.all(stats.var == cmvn.VAR_FLOOR)
    with pytest.raises(ShapeError, match="3 feature bins"):
        stats.accumulate(np.zeros((4, 5)))
    with pytest.raises(ShapeError, match="mask"):
        stats.accumulate(np.zeros((2, 4, 3)), np.ones((2, 5), bool))


def test_save_load_round_trip(tmp_path):
    stats = cmvn.compute_global_cmvn(padded_batches(2), show_progress=False)
    path = tmp_path / "cmvn.json"
    stats.save(path)
    back = cmvn.CMVNStats.load(path)
    assert back.count == stats.count and back.dim == stats.dim
    np.testing.assert_array_equal(back.sum, stats.sum)
    np.testing.assert_array_equal(back.sum_sq, stats.sum_sq)
    assert not (tmp_path / "cmvn.json.tmp").exists()


@pytest.mark.parametrize("content,problem", [
    (None, "cannot read"),
    ("{not json", "cannot read"),
    ('[1, 2]', "JSON object"),
    ('{"dim": 2, "count": 3, "sum": [1, 2]}', "sum_sq"),
    ('{"dim": 2, "count": 3, "sum": [1, 2], "sum_sq": [1, 2, 3]}', "sum_sq"),
    ('{"dim": 2, "count": 0, "sum": [1, 2], "sum_sq": [1, 2]}', "count"),
    ('{"dim": 2, "count": 3, "sum": ["a", 2], "sum_sq": [1, 2]}', "'sum'"),
])
def test_bad_file_is_a_data_format_error_naming_it(tmp_path, content, problem):
    path = tmp_path / "am_cmvn.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataFormatError, match=problem) as info:
        cmvn.CMVNStats.load(path)
    assert info.value.path == str(path) and str(path) in str(info.value)


def test_applied_training_frames_have_zero_mean_unit_std():
    batches = padded_batches(3)
    stats = cmvn.compute_global_cmvn(batches, show_progress=False)
    apply = jax.jit(cmvn.apply)
    out = [(np.asarray(apply(jnp.asarray(f), stats.mean, stats.istd)), m) for f, m in batches]
    frames = valid_frames(out)
    np.testing.assert_allclose(frames.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(frames.std(0), 1.0, atol=1e-5)
    f, m = batches[0]
    masked = np.asarray(jax.jit(cmvn.apply)(jnp.asarray(f), stats.mean, stats.istd, jnp.asarray(m)))
    assert masked.dtype == np.float32 and np.all(masked[~m] == 0)
    np.testing.assert_array_equal(masked[m], out[0][0][m])


def test_progress_lines_off_a_terminal(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    cmvn.compute_global_cmvn(padded_batches(4, n_batches=2), total=2, show_progress=True)
    assert "global cmvn: 2/2" in err.getvalue()
