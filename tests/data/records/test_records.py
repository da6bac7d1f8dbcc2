"""The generic ArrayRecord writer/reader: any Source's items come back exactly, by index."""
import json
import pickle

import numpy as np
import pytest

pytest.importorskip("array_record")

from jaxaudio.data.records.reader import PreparedSource, read_info  # noqa: E402
from jaxaudio.data.records.writer import write_records  # noqa: E402
from jaxaudio.data.source import Source, eval_batches, mixed_batches  # noqa: E402
from jaxaudio.errors import ConfigError, DataFormatError  # noqa: E402


def _assert_same(got, want):
    assert got.keys() == want.keys()
    for key in want:
        assert type(got[key]) is type(want[key]), key
        if isinstance(want[key], (np.ndarray, np.generic)):
            assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape, key
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
        else:
            assert got[key] == want[key], key


def test_a_toy_source_round_trips_exactly(tmp_path, vector_source):
    train, test = vector_source(7, seed=1), vector_source(3, seed=2)
    out = write_records({"train": train, "test": test}, tmp_path / "set", metadata={"task": "toy"},
                        shard_records=3)
    assert sorted(p.name for p in out.glob("train.array_record*")) == [
        f"train.array_record-0000{i}-of-00003" for i in range(3)]
    assert read_info(out)["metadata"] == {"task": "toy"}
    for split, source in (("train", train), ("test", test)):
        prepared = PreparedSource(out, split)
        assert isinstance(prepared, Source) and len(prepared) == len(source)
        assert prepared.batch_spec() == source.batch_spec()
        for index in reversed(range(len(source))):  # random access, any order
            _assert_same(prepared[index], source[index])
        _assert_same(prepared.padding_item(), source.padding_item())
    prepared = PreparedSource(out, "train")
    prepared[0]
    copy = pickle.loads(pickle.dumps(prepared))  # for grain workers: reopens its own reader
    assert copy._reader is None
    _assert_same(copy[5], train[5])
    # Batches from the records equal the source's, mixed and eval alike.
    for got, want in zip(_take(mixed_batches([(prepared, 2)], seed=3), 4),
                         _take(mixed_batches([(train, 2)], seed=3), 4)):
        _assert_same(got, want)
    for got, want in zip(eval_batches(prepared, 4), eval_batches(train, 4)):
        _assert_same(got, want)


def _take(iterator, n):
    try:
        return [next(iterator) for _ in range(n)]
    finally:
        iterator.close()


class _Ragged:
    """Text, string lists, varying lengths, scalars of several dtypes, unicode."""

    items = [
        {"name": "ünï", "tags": ["a", "bé"], "times": np.array([[0.1, 0.2]]), "n": np.uint8(7),
         "z": np.complex64(1 + 2j), "empty": np.zeros((0, 3), np.int64)},
        {"name": "", "tags": [], "times": np.zeros((0, 2)), "n": np.uint8(255),
         "z": np.complex64(0), "empty": np.arange(6, dtype=np.int64).reshape(2, 3)},
    ]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return dict(self.items[index])


FEATURES = {"name": ((), "str"), "tags": ((None,), str), "times": ((None, 2), np.float64),
            "n": ((), np.uint8), "z": ((), "complex64"), "empty": ((None, 3), np.int64)}


def test_text_and_varying_shapes_round_trip(tmp_path):
    out = write_records({"all": _Ragged()}, tmp_path / "set", features=FEATURES)
    prepared = PreparedSource(out, "all")
    for index, want in enumerate(_Ragged.items):
        got = prepared[index]
        assert got["name"] == want["name"] and got["tags"] == want["tags"]
        for key in ("times", "n", "z", "empty"):
            assert np.asarray(got[key]).dtype == np.asarray(want[key]).dtype
            np.testing.assert_array_equal(got[key], want[key])
    with pytest.raises(ConfigError, match="text or varying-shape.*'name'"):
        prepared.batch_spec()
    assert json.loads((out / "records.json").read_text())["features"]["times"] == {
        "shape": [None, 2], "dtype": "float64"}


def test_writer_refuses_items_that_do_not_fit_and_leaves_nothing(tmp_path, vector_source):
    source = vector_source(3)
    bad = {"x": ((4,), np.float32), **{k: v for k, v in source.batch_spec().items() if k != "x"}}
    with pytest.raises(ConfigError, match=r"split 'train', item 0: .*'x': shape \(5,\)"):
        write_records({"train": source}, tmp_path / "set", features=bad)
    narrow = {**source.batch_spec(), "weights": ((2, 2), np.float32)}
    with pytest.raises(ConfigError, match="'weights': dtype float64, features say float32"):
        write_records({"train": source}, tmp_path / "set", features=narrow)
    assert list(tmp_path.iterdir()) == []  # no half-written folder, no temporary left
    write_records({"train": source}, tmp_path / "set")
    with pytest.raises(ConfigError, match="already exists"):
        write_records({"train": source}, tmp_path / "set")


def test_reader_errors_name_the_folder(tmp_path, vector_source):
    with pytest.raises(DataFormatError, match="not a prepared set"):
        PreparedSource(tmp_path, "train")
    out = write_records({"train": vector_source(3)}, tmp_path / "set")
    with pytest.raises(ConfigError, match="'test'.*'train'"):
        PreparedSource(out, "test")
    with pytest.raises(IndexError):
        PreparedSource(out, "train")[3]
    next(out.glob("train.array_record*")).unlink()
    with pytest.raises(DataFormatError, match="shard .* is missing"):
        PreparedSource(out, "train")[0]
    (out / "records.json").write_text("{")
    with pytest.raises(DataFormatError, match="records.json: invalid JSON"):
        PreparedSource(out, "train")
