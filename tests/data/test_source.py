"""Grain batch pipelines: shapes, determinism, sharding, exact resume, eval padding."""
import json

import numpy as np
import pytest

from jaxaudio.audio.io import write_audio
from jaxaudio.data.sed.clips import ClipSource
from jaxaudio.data.sed.desed import ClipRecord
from jaxaudio.data.sed.labels import FrameLabelEncoder
from jaxaudio.data.source import Source, eval_batches, mixed_batches
from jaxaudio.errors import CheckpointError, ConfigError

SR = 8000
CLIP = 800  # 0.1 s
CLASSES = ("dog", "cat")
ENCODER = FrameLabelEncoder(CLASSES, 0.1, 10)


def _clips(folder, n, kind, first_value=0):
    """n wav files whose constant sample value (multiple of 1/256, exact in PCM16) identifies
    them; `kind` picks strong, weak or no labels."""
    records = []
    for i in range(n):
        path = folder / f"{kind}_{i}.wav"
        write_audio(path, np.full(CLIP - 100 * (i % 2), (first_value + i) / 256, np.float32), SR)
        events = ((0.02, 0.05, CLASSES[i % 2]),) if kind == "strong" else None
        weak = (CLASSES[i % 2],) if kind == "weak" else None
        records.append(ClipRecord(str(path), path.stem, events, weak))
    return records


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    strong = ClipSource(_clips(folder, 6, "strong", 0), SR, CLIP, ENCODER)
    weak = ClipSource(_clips(folder, 4, "weak", 10), SR, CLIP, ENCODER)
    unlabeled = ClipSource(_clips(folder, 8, "none", 20), SR, CLIP, ENCODER)
    return strong, weak, unlabeled


def _take(iterator, n):
    batches = [next(iterator) for _ in range(n)]
    iterator.close()
    return batches


def test_clip_source_items(sources):
    strong, weak, unlabeled = sources
    item = strong[1]
    assert item["audio"].shape == (CLIP,) and item["audio"].dtype == np.float32
    np.testing.assert_allclose(item["audio"][:700], 1 / 256)
    np.testing.assert_array_equal(item["audio"][700:], 0.0)  # short clip zero-padded
    np.testing.assert_array_equal(item["strong"], ENCODER.encode_strong([(0.02, 0.05, "cat")]))
    np.testing.assert_array_equal(item["weak"], [0, 1])  # union of event classes
    assert item["has_strong"] and item["has_weak"] and item["index"] == 1
    item = weak[2]
    np.testing.assert_array_equal(item["weak"], [1, 0])
    assert not item["has_strong"] and item["has_weak"] and not item["strong"].any()
    item = unlabeled[3]
    assert not item["has_strong"] and not item["has_weak"]
    assert not item["weak"].any() and not item["strong"].any()


def test_clip_source_refuses_mismatched_encoder(sources):
    with pytest.raises(ConfigError, match="clip_seconds"):
        ClipSource(sources[0].records, SR, 2 * CLIP, ENCODER)


def test_shapes_counts_and_per_source_segments(sources):
    strong, weak, unlabeled = sources
    batches = _take(mixed_batches([(strong, 3), (weak, 2), (unlabeled, 4)], seed=1), 4)
    for batch in batches:
        assert batch["audio"].shape == (9, CLIP)
        assert batch["strong"].shape == (9, 10, 2) and batch["weak"].shape == (9, 2)
        np.testing.assert_array_equal(batch["has_strong"], [1, 1, 1, 0, 0, 0, 0, 0, 0])
        np.testing.assert_array_equal(batch["has_weak"], [1, 1, 1, 1, 1, 0, 0, 0, 0])
        # The audio identifies the clip: value * 256 = first_value + index.
        offsets = np.array([0] * 3 + [10] * 2 + [20] * 4)
        np.testing.assert_allclose(batch["audio"][:, 0] * 256, offsets + batch["index"])
    # Each epoch of a source is a permutation: 2 batches x 3 strong clips cover all 6.
    first_epoch = np.concatenate([b["index"][:3] for b in batches[:2]])
    second_epoch = np.concatenate([b["index"][:3] for b in batches[2:]])
    assert sorted(first_epoch) == sorted(second_epoch) == list(range(6))


def test_same_seed_same_batches_different_seed_different(sources):
    strong, weak, _ = sources
    spec = [(strong, 2), (weak, 2)]
    a = _take(mixed_batches(spec, seed=7), 6)
    b = _take(mixed_batches(spec, seed=7), 6)
    c = _take(mixed_batches(spec, seed=8), 6)
    for x, y in zip(a, b):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    assert any(not np.array_equal(x["index"], y["index"]) for x, y in zip(a, c))


def test_shards_are_disjoint_and_union_is_the_global_batch(sources):
    strong, weak, unlabeled = sources
    spec = [(strong, 2), (weak, 2), (unlabeled, 4)]  # counts divide the source sizes
    whole = _take(mixed_batches(spec, seed=3), 5)
    parts = [_take(mixed_batches(spec, seed=3, shard_index=k, shard_count=2), 5) for k in (0, 1)]
    bounds = [(0, 2), (2, 4), (4, 8)]
    local_bounds = [(0, 1), (1, 2), (2, 4)]
    for step in range(5):
        for (g0, g1), (l0, l1) in zip(bounds, local_bounds):
            shard0 = parts[0][step]["index"][l0:l1]
            shard1 = parts[1][step]["index"][l0:l1]
            assert parts[0][step]["audio"].shape == (4, CLIP)
            assert not set(shard0) & set(shard1)
            np.testing.assert_array_equal(
                np.concatenate([shard0, shard1]), whole[step]["index"][g0:g1]
            )


def test_counts_must_divide_by_shard_count(sources):
    with pytest.raises(ConfigError, match="divisible by shard_count 2"):
        mixed_batches([(sources[0], 3)], seed=0, shard_count=2)


def test_get_state_set_state_resumes_exactly(sources):
    strong, weak, unlabeled = sources
    spec = [(strong, 4), (unlabeled, 2)]
    iterator = mixed_batches(spec, seed=11, shard_index=1, shard_count=2)
    for _ in range(3):
        next(iterator)
    state = json.loads(json.dumps(iterator.get_state()))
    expected = _take(iterator, 4)
    resumed = mixed_batches(spec, seed=11, shard_index=1, shard_count=2)
    resumed.set_state(state)
    for x, y in zip(expected, _take(resumed, 4)):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    other = mixed_batches(spec, seed=12, shard_index=1, shard_count=2)
    with pytest.raises(CheckpointError, match="cannot resume"):
        other.set_state(state)
    other.close()


@pytest.mark.parametrize("shard_count", [1, 2])
def test_eval_batches_pad_the_last_batch(sources, shard_count):
    strong = ClipSource(sources[0].records[:5], SR, CLIP, ENCODER)  # 5 clips, batch 4
    shards = [
        list(eval_batches(strong, 4, shard_index=k, shard_count=shard_count))
        for k in range(shard_count)
    ]
    for batches in shards:
        assert len(batches) == 2
        assert all(b["audio"].shape == (4 // shard_count, CLIP) for b in batches)
    seen = np.concatenate([np.concatenate([s[i]["index"] for s in shards]) for i in range(2)])
    valid = np.concatenate([np.concatenate([s[i]["valid"] for s in shards]) for i in range(2)])
    np.testing.assert_array_equal(seen, [0, 1, 2, 3, 4, -1, -1, -1])
    np.testing.assert_array_equal(valid, [1, 1, 1, 1, 1, 0, 0, 0])
    last = shards[-1][-1]
    assert not last["audio"][~last["valid"]].any() and not last["has_strong"][~last["valid"]].any()


@pytest.mark.slow
def test_worker_processes_give_the_same_batches_and_resume(sources):
    strong, weak, _ = sources
    spec = [(strong, 2), (weak, 2)]
    local = _take(mixed_batches(spec, seed=5), 6)
    iterator = mixed_batches(spec, seed=5, worker_count=2)
    workers = [next(iterator) for _ in range(3)]
    state = json.loads(json.dumps(iterator.get_state()))
    iterator.close()
    resumed = mixed_batches(spec, seed=5, worker_count=2)
    resumed.set_state(state)
    workers += _take(resumed, 3)
    for x, y in zip(local, workers, strict=True):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


def test_a_non_audio_source_goes_through_both_batchers(vector_source):
    """The batchers are task-neutral: any Source (here feature vectors with class labels)."""
    train, other = vector_source(6, seed=1), vector_source(4, seed=2)
    assert isinstance(train, Source)
    batches = _take(mixed_batches([(train, 2), (other, 2)], seed=4), 3)
    for batch in batches:
        assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
            "x": ((4, 5), np.float32), "label": ((4,), np.int32), "weights": ((4, 2, 2), np.float64),
            "flag": ((4,), np.bool_), "index": ((4,), np.int32)}
        for row, source in enumerate((train, train, other, other)):
            np.testing.assert_array_equal(batch["x"][row], source.x[batch["index"][row]])
            assert batch["label"][row] == source.labels[batch["index"][row]]
    assert sorted(np.concatenate([b["index"][:2] for b in batches])) == list(range(6))
    halves = [_take(mixed_batches([(train, 2), (other, 2)], seed=4, shard_index=k, shard_count=2), 3)
              for k in (0, 1)]
    for step in range(3):
        np.testing.assert_array_equal(
            np.concatenate([halves[0][step]["x"][:1], halves[1][step]["x"][:1]]), batches[step]["x"][:2])

    rows = list(eval_batches(train, 4))
    np.testing.assert_array_equal(np.concatenate([b["index"] for b in rows]), [0, 1, 2, 3, 4, 5, -1, -1])
    np.testing.assert_array_equal(np.concatenate([b["valid"] for b in rows]), [1] * 6 + [0] * 2)
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in rows])[:6], train.x)
    assert not rows[-1]["x"][2:].any() and rows[-1]["x"].dtype == np.float32


def test_batchers_refuse_what_is_not_a_source_or_mixes_shapes(sources, vector_source):
    class NoSpec:
        def __len__(self):
            return 2

        def __getitem__(self, index):
            return {"x": np.zeros(3), "index": np.int32(index)}

    with pytest.raises(ConfigError, match="NoSpec.*batch_spec"):
        mixed_batches([(NoSpec(), 1)], seed=0)
    with pytest.raises(ConfigError, match="not a Source"):
        eval_batches(NoSpec(), 2)
    with pytest.raises(ConfigError, match="source 1 has items .*same keys, shapes and dtypes"):
        mixed_batches([(vector_source(4, dim=5), 1), (vector_source(4, dim=6), 1)], seed=0)
    with pytest.raises(ConfigError, match="source 1"):
        mixed_batches([(sources[0], 1), (vector_source(4), 1)], seed=0)


def test_clip_source_is_a_source_with_its_spec(sources):
    strong = sources[0]
    assert isinstance(strong, Source)
    spec = strong.batch_spec()
    for item in (strong[0], strong.padding_item()):
        assert {k: (np.shape(v), np.asarray(v).dtype) for k, v in item.items()} == spec
    assert strong.padding_item()["index"] == -1
