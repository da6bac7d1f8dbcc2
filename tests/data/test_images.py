"""The folder-per-class image reader: class ids, the split protocols, decoding and resizing against
PIL, mode conversions, the Source through the batchers, and every bad-input case naming its file."""
import logging
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxaudio.data.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageSet,
    ImageSource,
    load_image,
    scan_image_folder,
    split_per_class,
)
from jaxaudio.data.source import Source, eval_batches, mixed_batches
from jaxaudio.errors import ConfigError, DataFormatError

PLAIN = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}  # items are x / 255


def _at(path) -> str:
    return re.escape(str(path))


def _rgb(seed: int, size=(12, 12)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def _write(path: Path, image: Image.Image | np.ndarray, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    image.save(path, **save)
    return path


def _folder(root: Path, layout: dict[str, int], ext: str = ".png", size=(12, 12)) -> Path:
    """root/<class>/<class>_<i><ext> with `layout[class]` random RGB images each."""
    seed = 0
    for name, count in layout.items():
        for i in range(count):
            _write(root / name / f"{name}_{i:03d}{ext}", _rgb(seed, size))
            seed += 1
    return root


def _fake_set(classes: int, per_class: int) -> ImageSet:
    """Paths only (splitting never opens files): NWPU-sized sets cost nothing."""
    names = tuple(f"class_{c:02d}" for c in range(classes))
    files = tuple(f"/nwpu/{name}/{name}_{i:03d}.jpg" for name in names for i in range(per_class))
    labels = tuple(c for c in range(classes) for _ in range(per_class))
    return ImageSet(files, labels, names)


# ----------------------------------------------------------------------------- scanning

def test_scan_class_ids_by_sorted_name(tmp_path, caplog):
    root = _folder(tmp_path / "data", {"river": 2, "airplane": 3, "Beach": 1})
    _write(root / "airplane" / "extra.JPG", _rgb(99))  # extensions match case-insensitively
    (root / "river" / "notes.txt").write_text("not an image")
    (root / "river" / ".hidden.png").write_bytes(b"")
    with caplog.at_level(logging.WARNING, "jaxaudio.data.images"):
        images = scan_image_folder(root)
    assert images.classes == ("Beach", "airplane", "river")  # Python's (and torchvision's) sort: upper case first
    assert images.counts() == {"Beach": 1, "airplane": 4, "river": 2}
    for path, label in zip(images.files, images.labels):
        assert Path(path).parent.name == images.classes[label]
    assert [Path(p).name for p in images.files[1:5]] == ["airplane_000.png", "airplane_001.png",
                                                          "airplane_002.png", "extra.JPG"]
    assert "notes" not in " ".join(images.files) and ".hidden" not in " ".join(images.files)
    assert any("river" in r.getMessage() and "1 entries" in r.getMessage() for r in caplog.records)


def test_scan_descends_into_the_archive_folder(tmp_path):
    _folder(tmp_path / "NWPU-RESISC45", {"a": 1, "b": 1})
    (tmp_path / ".DS_Store").write_bytes(b"")
    images = scan_image_folder(tmp_path)
    assert images.classes == ("a", "b")
    assert all("NWPU-RESISC45" in path for path in images.files)
    # One class folder holding images is a one-class set, not an archive folder.
    one = _folder(tmp_path / "one", {"only": 2})
    assert scan_image_folder(one).classes == ("only",)


# ----------------------------------------------------------------------------- splits

@pytest.mark.parametrize("fraction, n_train", [(0.1, 70), (0.2, 140)])
def test_split_protocols_on_nwpu_sizes(fraction, n_train):
    images = _fake_set(45, 700)
    splits = split_per_class(images, fraction, seed=0)
    assert len(splits.val) == 0 and splits.val.classes == images.classes
    assert set(splits.train.counts().values()) == {n_train}
    assert set(splits.test.counts().values()) == {700 - n_train}
    assert not set(splits.train.files) & set(splits.test.files)
    assert set(splits.train.files) | set(splits.test.files) == set(images.files)
    for part in splits:
        assert list(part.files) == sorted(part.files)  # (class id, path) order; names sort by class here
        for path, label in zip(part.files, part.labels):
            assert f"/{images.classes[label]}/" in path


def test_split_deterministic_and_independent_of_listing_order():
    images = _fake_set(5, 40)
    first = split_per_class(images, 0.2, seed=7)
    again = split_per_class(images, 0.2, seed=7)
    order = np.random.default_rng(0).permutation(len(images))
    shuffled = ImageSet(tuple(images.files[i] for i in order), tuple(images.labels[i] for i in order), images.classes)
    assert split_per_class(shuffled, 0.2, seed=7) == first == again
    other = split_per_class(images, 0.2, seed=8)
    assert other.train.files != first.train.files
    assert other.train.counts() == first.train.counts()
    # A class's split depends on its name and the seed, not on which other classes exist.
    alone = ImageSet(images.files[:40], images.labels[:40], images.classes)
    assert split_per_class(alone, 0.2, seed=7).train.files == first.train.files[:8]


def test_split_validation_part_is_carved_from_training():
    images = _fake_set(3, 50)
    plain = split_per_class(images, 0.2, seed=1)
    splits = split_per_class(images, 0.2, seed=1, val_fraction=0.25)
    assert splits.test == plain.test  # the test part does not depend on val_fraction
    assert set(splits.val.counts().values()) == {3} and set(splits.train.counts().values()) == {7}
    assert set(splits.train.files) | set(splits.val.files) == set(plain.train.files)
    assert not set(splits.train.files) & set(splits.val.files)


def test_split_rounding_keeps_both_parts():
    images = ImageSet(("/d/a/0.png", "/d/a/1.png", "/d/b/0.png", "/d/b/1.png", "/d/b/2.png"), (0, 0, 1, 1, 1),
                      ("a", "b"))
    splits = split_per_class(images, 0.1, seed=0)  # round(0.1 * n) = 0 is raised to 1
    assert splits.train.counts() == {"a": 1, "b": 1} and splits.test.counts() == {"a": 1, "b": 2}


def test_split_bad_arguments():
    images = _fake_set(2, 10)
    for fraction in (0.0, 1.0, 1.5):
        with pytest.raises(ConfigError, match="train_fraction"):
            split_per_class(images, fraction, seed=0)
    with pytest.raises(ConfigError, match="val_fraction"):
        split_per_class(images, 0.2, seed=0, val_fraction=1.0)
    small = ImageSet(("/d/a/0.png", "/d/b/0.png", "/d/b/1.png"), (0, 1, 1), ("a", "b"))
    with pytest.raises(DataFormatError, match=_at(Path("/d/a")) + ".*'a' has 1 image"):
        split_per_class(small, 0.5, seed=0)
    with pytest.raises(DataFormatError, match="validation"):
        split_per_class(_fake_set(2, 4), 0.2, seed=0, val_fraction=0.5)  # 1 training image per class


# ----------------------------------------------------------------------------- decoding and resizing

@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_resize_matches_pil(tmp_path, ext):
    path = _write(tmp_path / "c" / f"x{ext}", _rgb(3, size=(40, 30)))  # non-square: stretched to 16 x 16
    source = ImageSource([path], [0], 16)
    with Image.open(path) as image:
        want = np.asarray(image.convert("RGB").resize((16, 16), Image.Resampling.BILINEAR), np.float32)
    want = (want / 255.0 - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    item = source[0]
    assert item["image"].shape == (16, 16, 3) and item["image"].dtype == np.float32
    np.testing.assert_allclose(item["image"], want, rtol=0, atol=1e-6)


def test_same_size_is_not_resampled(tmp_path):
    pixels = _rgb(4, size=(10, 10))
    path = _write(tmp_path / "c" / "x.png", pixels)
    np.testing.assert_array_equal(load_image(path, 10), pixels)
    np.testing.assert_allclose(ImageSource([path], [0], 10, **PLAIN)[0]["image"], pixels / 255.0, atol=1e-7)


def _l_image():
    return Image.fromarray(np.array([[0, 50], [128, 255]], np.uint8), "L")


def _rgba_image():
    rgba = np.array([[[200, 100, 50, 255], [200, 100, 50, 0]], [[200, 100, 50, 128], [10, 20, 30, 64]]], np.uint8)
    return Image.fromarray(rgba, "RGBA")


def _p_image(transparent: bool = False):
    image = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), "P")
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    if transparent:
        image.info["transparency"] = 1
    return image


def _i16_image():
    return Image.fromarray(np.array([[0, 1000], [257 * 100, 65535]], np.uint16))


_RGB_BY_MODE = {
    "L": [[[0] * 3, [50] * 3], [[128] * 3, [255] * 3]],
    # round(c * alpha / 255): onto black
    "RGBA": [[[200, 100, 50], [0, 0, 0]], [[100, 50, 25], [3, 5, 8]]],
    "P": [[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [0, 255, 0]]],
    "P-transparent": [[[255, 0, 0], [0, 0, 0]], [[0, 0, 255], [0, 0, 0]]],
    # round(v / 257): 1000 / 257 = 3.89 -> 4
    "I;16": [[[0] * 3, [4] * 3], [[100] * 3, [255] * 3]],
}
_MAKERS = {"L": _l_image, "RGBA": _rgba_image, "P": _p_image, "P-transparent": lambda: _p_image(True),
           "I;16": _i16_image}


@pytest.mark.parametrize("mode", list(_RGB_BY_MODE))
def test_mode_conversions(tmp_path, caplog, mode):
    folder = tmp_path / "cls"
    paths = [_write(folder / f"{i}.png", _MAKERS[mode]()) for i in range(2)]
    paths.append(_write(folder / "rgb.png", _rgb(0, size=(2, 2))))
    with Image.open(paths[0]) as image:  # the file really holds that mode
        assert image.mode == mode.split("-")[0]
    with caplog.at_level(logging.WARNING, "jaxaudio.data.images"):
        source = ImageSource(paths, [0, 0, 0], 2, **PLAIN)
    want = np.asarray(_RGB_BY_MODE[mode], np.float32) / 255.0
    np.testing.assert_allclose(source[0]["image"], want, atol=1e-7)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1  # one warning for the folder, with the count
    assert str(folder) in warnings[0] and f"2 {mode.split('-')[0]}" in warnings[0] and "of its 3 images" in warnings[0]


def test_greyscale_output(tmp_path, caplog):
    rgb = _write(tmp_path / "c" / "rgb.png", _rgb(5, size=(3, 3)))
    grey = _write(tmp_path / "c" / "grey.png", _l_image())
    with caplog.at_level(logging.WARNING, "jaxaudio.data.images"):
        source = ImageSource([rgb, grey], [0, 0], 3, channels=1, mean=0, std=1)
    assert not caplog.records  # RGB and L are both expected for greyscale output
    with Image.open(rgb) as image:
        want = np.asarray(image.convert("L"), np.float32)[..., None] / 255.0  # ITU-R 601-2 luma
    np.testing.assert_allclose(source[0]["image"], want, atol=1e-7)
    assert source.batch_spec()["image"][0] == (3, 3, 1)
    default = ImageSource([rgb], [0], 3, channels=1)
    np.testing.assert_allclose(default[0]["image"], (want - 0.449) / 0.226, atol=1e-6)


# ----------------------------------------------------------------------------- the Source

def test_source_through_eval_batches(tmp_path):
    images = scan_image_folder(_folder(tmp_path / "d", {"a": 3, "b": 3}, size=(20, 20)))
    source = ImageSource.from_set(images, 8)
    assert isinstance(source, Source)
    batches = list(eval_batches(source, 4))
    assert len(batches) == 2
    for batch in batches:
        assert batch["image"].shape == (4, 8, 8, 3) and batch["image"].dtype == np.float32
        assert batch["label"].dtype == np.int32 and batch["index"].dtype == np.int32
    last = batches[1]
    np.testing.assert_array_equal(last["index"], [4, 5, -1, -1])
    np.testing.assert_array_equal(last["label"], [1, 1, -1, -1])
    np.testing.assert_array_equal(last["valid"], [True, True, False, False])
    assert not last["image"][2:].any()
    np.testing.assert_array_equal(batches[0]["label"], [0, 0, 0, 1])
    np.testing.assert_allclose(batches[0]["image"][1], source[1]["image"])
    with mixed_batches([(source, 4)], seed=0) as train:
        batch = next(train)
    assert batch["image"].shape == (4, 8, 8, 3) and len(set(batch["index"].tolist())) == 4


def test_source_cache_and_pickle(tmp_path):
    path = _write(tmp_path / "c" / "x.png", _rgb(6))
    source = ImageSource([path], [2], 6, cache=True)
    first = source[0]["image"]
    copy = pickle.loads(pickle.dumps(source))
    assert copy._cache == {} and len(source._cache) == 1  # the cache stays in its process
    path.unlink()
    np.testing.assert_array_equal(source[0]["image"], first)  # served from the cache
    with pytest.raises(DataFormatError, match=_at(path) + ": image file does not exist"):
        copy[0]
    preloaded = ImageSource([_write(tmp_path / "c" / "y.png", _rgb(7))], [0], 6, cache=True, preload=True)
    assert len(preloaded._cache) == 1
    assert preloaded[0]["label"] == 0 and preloaded[0]["index"] == 0
    with pytest.raises(IndexError):
        preloaded[1]


def test_source_bad_config(tmp_path):
    path = _write(tmp_path / "c" / "x.png", _rgb(0))
    with pytest.raises(ConfigError, match="channels"):
        ImageSource([path], [0], 8, channels=4)
    with pytest.raises(ConfigError, match="size"):
        ImageSource([path], [0], 0)
    with pytest.raises(ConfigError, match="mean needs 3"):
        ImageSource([path], [0], 8, mean=(0.5,))
    with pytest.raises(ConfigError, match="std values must be positive"):
        ImageSource([path], [0], 8, std=(0.0, 1.0, 1.0))
    with pytest.raises(ConfigError, match="2 labels"):
        ImageSource([path], [0, 1], 8)


# ----------------------------------------------------------------------------- bad input

def test_bad_roots(tmp_path):
    with pytest.raises(DataFormatError, match=_at(tmp_path / "missing") + ": image folder does not exist"):
        scan_image_folder(tmp_path / "missing")
    a_file = tmp_path / "file.png"
    a_file.write_bytes(b"x")
    with pytest.raises(DataFormatError, match=_at(a_file) + ": is not a folder"):
        scan_image_folder(a_file)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataFormatError, match=_at(empty) + ": holds no class folders.*it is empty"):
        scan_image_folder(empty)
    loose = tmp_path / "loose"
    _write(loose / "a.png", _rgb(0))
    with pytest.raises(DataFormatError, match=_at(loose) + ": holds no class folders.*1 image files directly"):
        scan_image_folder(loose)


def test_empty_class_folder_is_refused(tmp_path):
    root = _folder(tmp_path / "d", {"a": 1, "c": 1})
    (root / "b").mkdir()
    (root / "b" / "readme.txt").write_text("x")
    with pytest.raises(DataFormatError, match=_at(root / "b") + ": class folder holds no images.*1 other entries"):
        scan_image_folder(root)


def test_not_an_image_is_refused_at_construction(tmp_path):
    good = _write(tmp_path / "c" / "good.png", _rgb(0))
    bad = tmp_path / "c" / "bad.jpg"
    bad.write_bytes(b"this is not a JPEG" * 10)
    with pytest.raises(DataFormatError, match=_at(bad) + ": cannot read image header"):
        ImageSource([good, bad], [0, 0], 8)
    empty = tmp_path / "c" / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(DataFormatError, match=_at(empty)):
        ImageSource([empty], [0], 8)


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_truncated_image_raises_naming_the_file(tmp_path, ext):
    full = _write(tmp_path / "c" / f"full{ext}", _rgb(1, size=(64, 64)), **({"quality": 95} if ext == ".jpg" else {}))
    data = full.read_bytes()
    cut = tmp_path / "c" / f"cut{ext}"
    cut.write_bytes(data[: len(data) // 2])
    source = ImageSource([cut], [0], 64)  # the header is intact: found when decoded
    with pytest.raises(DataFormatError, match=_at(cut) + ": cannot decode image.*truncated"):
        source[0]
    with pytest.raises(DataFormatError, match=_at(cut)):
        ImageSource([cut], [0], 64, preload=True)


def test_unsupported_mode_is_refused(tmp_path):
    path = tmp_path / "c" / "float.tif"  # mode F: PNG cannot hold it; the reader is given it anyway
    _write(path, Image.fromarray(np.zeros((2, 2), np.float32), "F"))
    with pytest.raises(DataFormatError, match=_at(path) + ": image mode 'F' is not supported"):
        ImageSource([path], [0], 2)
    with pytest.raises(DataFormatError, match=_at(path) + ": image mode 'F' is not supported"):
        load_image(path, 2)
