"""The built-in aerial-scene set (NWPU-RESISC45 layout): layout, determinism, variation, difficulty.

References: Pillow decodes the files back; a regex of RESISC45's file names; sha256 compares
bytes; scikit-learn's LogisticRegression is the linear model of the mean-colour baseline.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxaudio.data.synth import manifest, scenes
from jaxaudio.data.synth.scenes import (CLASSES, SMOKE, ensure_dataset, generate, image_path, render_image,
                                        render_set)
from jaxaudio.errors import ConfigError

NAME = re.compile(r"^([a-z_]+)/([a-z_]+)_(\d{3})\.(jpg|png)$")
# Every class, few small images: what the in-memory checks render.
ALL_SMALL = dataclasses.replace(scenes.TINY, image_size=32)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, float]:
    start = time.perf_counter()
    root = generate(tmp_path_factory.mktemp("scenes") / "smoke", SMOKE, progress=False, workers=1)
    return root, time.perf_counter() - start


@pytest.fixture(scope="module")
def colour_set() -> tuple[np.ndarray, np.ndarray]:
    """24 images of 32x32 per class, all classes, in memory."""
    return render_set(ALL_SMALL, 24)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): manifest.sha256_file(p) for p in sorted(root.rglob("*.jpg"))}


def test_layout_matches_resisc45(smoke):
    root, _ = smoke
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*.jpg"))
    parsed = [NAME.match(f) for f in files]
    assert all(parsed) and all(m.group(1) == m.group(2) for m in parsed)
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(SMOKE.classes)
    for name in SMOKE.classes:
        numbers = sorted(int(m.group(3)) for m in parsed if m.group(1) == name)
        assert numbers == list(range(1, SMOKE.n_per_class + 1))  # 001 ... as RESISC45 numbers them
    for path in root.rglob("*.jpg"):
        with Image.open(path) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (SMOKE.image_size, SMOKE.image_size))
    listed = manifest.read_manifest(root)["files"]
    assert set(listed) == set(files) | {scenes.IMAGES_CSV}
    assert manifest.is_complete(root, scenes.identity(SMOKE), verify_hashes=True)


def test_the_image_reader_reads_it(smoke):
    images = pytest.importorskip("jaxaudio.data.images")
    found = images.scan_image_folder(smoke[0])
    assert found.classes == tuple(sorted(SMOKE.classes))
    assert found.counts() == {name: SMOKE.n_per_class for name in sorted(SMOKE.classes)}


def test_csv_records_each_image(smoke):
    root, _ = smoke
    with open(root / scenes.IMAGES_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(SMOKE.classes) * SMOKE.n_per_class
    for row in rows:
        assert (root / row["path"]).is_file()
        assert row["path"] == image_path(SMOKE, row["class"], int(row["index"]))
        assert SMOKE.zoom[0] - 1e-4 <= float(row["zoom"]) <= SMOKE.zoom[1] + 1e-4
        assert abs(float(row["rotation_deg"])) <= SMOKE.rotation_deg
        assert SMOKE.haze[0] <= float(row["haze"]) <= SMOKE.haze[1] + 1e-4
        params = json.loads(row["params"])
        assert params == {k: v for k, v in render_image(SMOKE, row["class"], int(row["index"])).facts.items()
                          if k in params} and params
    assert {r["class"] for r in rows if "occupancy" in json.loads(r["params"])} == {"dense_residential"}


def test_generation_is_deterministic_whatever_the_worker_count(smoke, tmp_path):
    root, _ = smoke
    again = generate(tmp_path / "again", SMOKE, progress=False, workers=2)
    assert _hashes(again) == _hashes(root)
    a, b = render_image(SMOKE, "lake", 3), render_image(SMOKE, "lake", 3)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.facts == b.facts
    encoded = io.BytesIO()  # the file holds exactly the rendered pixels, JPEG-encoded
    scenes.encode(SMOKE, a.image, encoded)
    assert (root / image_path(SMOKE, "lake", 3)).read_bytes() == encoded.getvalue()


def test_png_holds_exactly_the_rendered_pixels(tmp_path):
    config = dataclasses.replace(SMOKE, classes=("harbor",), n_per_class=2, image_format="png")
    root = generate(tmp_path / "png", config, progress=False, workers=1)
    for index in range(2):
        with Image.open(root / image_path(config, "harbor", index)) as im:
            np.testing.assert_array_equal(np.asarray(im), render_image(config, "harbor", index).image)


def test_an_image_depends_only_on_seed_class_and_index(smoke):
    root, _ = smoke
    other = dataclasses.replace(SMOKE, classes=("forest", "runway"), n_per_class=40)
    again = render_image(other, "forest", 5).image
    np.testing.assert_array_equal(render_image(SMOKE, "forest", 5).image, again)
    encoded = io.BytesIO()
    scenes.encode(other, again, encoded)
    assert (root / image_path(SMOKE, "forest", 5)).read_bytes() == encoded.getvalue()
    assert not np.array_equal(render_image(dataclasses.replace(SMOKE, seed=1), "forest", 5).image, again)


def test_images_vary_within_every_class(colour_set):
    images, labels = colour_set
    x = images.astype(np.float64) / 255
    for c, name in enumerate(CLASSES):
        own = x[labels == c][:12]
        flat = own.reshape(len(own), -1)
        distance = np.abs(flat[:, None] - flat[None]).mean(-1)
        assert distance[~np.eye(len(own), dtype=bool)].min() > 0.02, name  # no two alike
        assert own.std(axis=0).mean() > 0.05, name  # pixel by pixel, the class is no template
        assert own.std(axis=(1, 2)).mean() > 0.02, name  # no flat images


def _colour_features(images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float64) / 255
    return np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2))], axis=1)


def _halves(labels: np.ndarray, per_class: int) -> np.ndarray:
    return (np.arange(len(labels)) % per_class) < per_class // 2


def test_mean_colour_does_not_name_the_class(colour_set):
    """Nearest class mean and a logistic regression on each image's per-channel mean and std,
    fitted on half of each class, tested on the other half: far from perfect (15 classes)."""
    from sklearn.linear_model import LogisticRegression

    images, labels = colour_set
    features = _colour_features(images)
    train = _halves(labels, 24)
    features = (features - features[train].mean(0)) / features[train].std(0)
    means = np.stack([features[train & (labels == c)].mean(0) for c in range(len(CLASSES))])
    nearest = np.argmin(((features[~train, None] - means[None]) ** 2).sum(-1), axis=1)
    ncm = float(np.mean(nearest == labels[~train]))
    linear = LogisticRegression(max_iter=3000).fit(features[train], labels[train]).score(features[~train],
                                                                                          labels[~train])
    print(f"mean-colour baseline: nearest class mean {ncm:.3f}, logistic regression {linear:.3f}")
    assert 1.5 / len(CLASSES) < ncm < 0.6  # above chance (colour is not useless), well below perfect
    assert linear < 0.7


def _structure_features(images: np.ndarray) -> np.ndarray:
    """Colour-blind, rotation-blind texture statistics of the grey image, normalised to zero
    mean and unit spread: the share of spectral power per (log-spaced) radial band, the sorted
    share per orientation (stripes, roads: one strong direction), edge densities, kurtosis."""
    x = images.astype(np.float64).mean(-1)
    x = (x - x.mean((1, 2), keepdims=True)) / (x.std((1, 2), keepdims=True) + 1e-6)
    n, size = len(x), x.shape[1]
    power = (np.abs(np.fft.fft2(x)) ** 2).reshape(n, -1)
    fy, fx = (f.ravel() for f in np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij"))
    radius, angle = np.hypot(fx, fy), np.mod(np.arctan2(fy, fx), np.pi)
    edges = np.geomspace(1.0 / size, 0.5, 8)
    radial = np.stack([power[:, (radius >= a) & (radius < b)].sum(1) for a, b in zip(edges[:-1], edges[1:])], 1)
    mid = radius > 4.0 / size
    angular = np.stack([power[:, mid & (angle >= k * np.pi / 8) & (angle < (k + 1) * np.pi / 8)].sum(1)
                        for k in range(8)], 1)
    gy, gx = np.gradient(x, axis=(1, 2))
    magnitude = np.hypot(gx, gy).reshape(n, -1)
    return np.concatenate([np.log(radial / radial.sum(1, keepdims=True) + 1e-9),
                           np.sort(angular / angular.sum(1, keepdims=True), 1),
                           np.stack([(magnitude > t).mean(1) for t in (0.25, 0.5, 1.0, 2.0)], 1),
                           np.log((x ** 4).mean((1, 2)))[:, None]], axis=1)


def test_structure_tells_what_colour_cannot(colour_set):
    """Classes differ in structure: adding colour-blind texture statistics to the colour features
    lifts the same linear model well above colour alone (a CNN sees far more than these)."""
    from sklearn.linear_model import LogisticRegression

    images, labels = colour_set
    train = _halves(labels, 24)

    def score(features):
        features = (features - features[train].mean(0)) / (features[train].std(0) + 1e-9)
        model = LogisticRegression(max_iter=5000).fit(features[train], labels[train])
        return model.score(features[~train], labels[~train])

    colour = _colour_features(images)
    alone, both = score(colour), score(np.concatenate([colour, _structure_features(images)], axis=1))
    print(f"linear model: colour {alone:.3f}, colour + structure {both:.3f}")
    assert both > alone + 0.1


def test_confusable_pairs_share_their_colours(colour_set):
    """The pairs meant to be confused (dense vs sparse residential, meadow vs farmland, lake vs
    river vs harbour) overlap in mean colour: their class means lie closer than the spread of
    the images about them."""
    images, labels = colour_set
    features = _colour_features(images)[:, :3]
    for pair in (("dense_residential", "sparse_residential"), ("meadow", "rectangular_farmland"),
                 ("lake", "river"), ("lake", "harbor"), ("river", "harbor")):
        a, b = (features[labels == CLASSES.index(name)] for name in pair)
        spread = np.sqrt((a.var(0).sum() + b.var(0).sum()) / 2)
        assert np.linalg.norm(a.mean(0) - b.mean(0)) < 1.5 * spread, pair


def test_smoke_preset_is_quick(smoke):
    _, seconds = smoke
    assert seconds < 10.0


def test_ensure_dataset_reuses_and_replaces(tmp_path):
    config = dataclasses.replace(SMOKE, classes=("desert",), n_per_class=2)
    root = ensure_dataset(tmp_path / "set", config, progress=False, workers=1)
    stamp = (root / manifest.MANIFEST_NAME).stat().st_mtime_ns
    assert ensure_dataset(tmp_path / "set", config, progress=False, workers=1) == root
    assert (root / manifest.MANIFEST_NAME).stat().st_mtime_ns == stamp  # reused, not regenerated
    bigger = dataclasses.replace(config, n_per_class=3)
    ensure_dataset(tmp_path / "set", bigger, progress=False, workers=1)
    assert len(list((root / "desert").glob("*.jpg"))) == 3
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not a generated set")
    with pytest.raises(ConfigError, match="mine"):
        ensure_dataset(tmp_path / "mine", config, progress=False, workers=1)


@pytest.mark.parametrize("change,key", [
    ({"classes": ("forest", "volcano")}, "classes"), ({"classes": ()}, "classes"), ({"n_per_class": 0}, "n_per_class"),
    ({"image_format": "gif"}, "image_format"), ({"image_size": 8}, "image_size"), ({"haze": (0.5, 0.2)}, "haze"),
    ({"zoom": (0.0, 1.0)}, "zoom"), ({"seed": -1}, "seed"),
])
def test_bad_settings_are_named(change, key):
    with pytest.raises(ConfigError, match=f"ScenesConfig.{key}"):
        scenes.validate_config(dataclasses.replace(SMOKE, **change))
    with pytest.raises(ConfigError, match="volcano"):
        render_image(SMOKE, "volcano", 0)


def test_cli_writes_and_reports(tmp_path, capsys):
    assert scenes.cli(["--out", str(tmp_path / "cli"), "--preset", "smoke", "--workers", "1", "--quiet"]) == 0
    assert manifest.is_complete(tmp_path / "cli", scenes.identity(SMOKE))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x.txt").write_text("x")
    assert scenes.cli(["--out", str(tmp_path / "taken"), "--preset", "smoke", "--quiet"]) == 2
    assert "error:" in capsys.readouterr().err
