"""Image augmentations: flips and quarter turns against numpy, the random resized crop against
slicing and jax.image.resize (and its identity case), torchvision's box statistics, and mixup's
soft labels as lam * y1 + (1 - lam) * y2."""
import jax
import numpy as np
import pytest

from jaxaudio.audio.augment import mixup_params
from jaxaudio.data.image_augment import (
    augment_scenes,
    crop_and_resize,
    crop_boxes,
    flip_mask,
    mixup,
    random_flip,
    random_resized_crop,
    random_rot90,
    rot90_by,
    rot90_turns,
)
from jaxaudio.errors import ConfigError, ShapeError

# RBG keys: XLA compiles their random ops several times faster than threefry's (busy CI CPUs).
KEY = jax.random.key(0, impl="rbg")


def _images(batch=8, size=6, channels=3, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, size, size, channels)).astype(np.float32)


@pytest.mark.parametrize("horizontal, axis", [(True, 1), (False, 0)])
def test_random_flip_matches_numpy(horizontal, axis):
    x = _images()
    out = np.asarray(jax.jit(random_flip, static_argnums=2)(KEY, x, horizontal))
    mask = np.asarray(flip_mask(KEY, len(x)))
    assert 0 < mask.sum() < len(x)  # both cases occur with this key
    for b in range(len(x)):
        np.testing.assert_array_equal(out[b], np.flip(x[b], axis=axis) if mask[b] else x[b])


def test_rot90_matches_numpy():
    x = _images(batch=4)
    turns = np.array([0, 1, 2, 3])
    out = np.asarray(jax.jit(rot90_by)(x, turns))
    for b, k in enumerate(turns):
        np.testing.assert_array_equal(out[b], np.rot90(x[b], k, axes=(0, 1)))
    drawn = np.asarray(rot90_turns(KEY, 8))
    out = np.asarray(jax.jit(random_rot90)(KEY, _images()))
    for b, k in enumerate(drawn):
        np.testing.assert_array_equal(out[b], np.rot90(_images()[b], k, axes=(0, 1)))
    with pytest.raises(ShapeError, match="square"):
        rot90_by(np.zeros((1, 4, 5, 3)), np.zeros(1, np.int32))


def test_resized_crop_identity_and_box_resize():
    x = _images(size=10)
    resize = jax.jit(crop_and_resize, static_argnums=(2, 3))
    identity = jax.jit(lambda key, x: random_resized_crop(key, x, scale=(1.0, 1.0), ratio=(1.0, 1.0)))
    np.testing.assert_allclose(np.asarray(identity(KEY, x)), x, atol=1e-6)
    # A box of the output's size is copied exactly; a smaller one is jax.image.resize's bilinear
    # enlargement of the cut-out box (edges clamped at the box, as crop-then-resize does).
    square, tall = np.array([[2, 3, 5, 5]] * len(x)), np.array([[0, 1, 10, 4]] * len(x))
    np.testing.assert_allclose(np.asarray(resize(x, square, 5, 5)), x[:, 2:7, 3:8], atol=1e-6)
    for boxes, cut in ((square, x[:, 2:7, 3:8]), (tall, x[:, :, 1:5])):
        want = np.asarray(jax.image.resize(cut, (len(x), 10, 10, 3), "bilinear"))
        np.testing.assert_allclose(np.asarray(resize(x, boxes, 10, 10)), want, atol=1e-5)


def test_crop_boxes_follow_torchvision_ranges():
    height, width = 64, 48
    draw = jax.jit(crop_boxes, static_argnums=(1, 2, 3, 4, 5))
    boxes = np.asarray(draw(KEY, 2000, height, width))
    top, left, h, w = boxes.T
    assert (h >= 1).all() and (w >= 1).all() and (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()
    area = h * w / (height * width)
    assert area.min() > 0.06 and area.max() <= 1.0 and np.median(area) > 0.3
    ratio = w / h
    assert ratio.min() > 0.65 and ratio.max() < 1.5  # (3/4, 4/3) up to the rounding of small boxes
    assert len({tuple(b) for b in boxes}) > 1500  # boxes differ per example
    # No try fits (every ratio wider than the image allows at full area): torchvision's centred fallback.
    fallback = np.asarray(draw(KEY, 4, 10, 10, (1.0, 1.0), (2.0, 2.0)))
    np.testing.assert_array_equal(fallback, [[2, 0, 5, 10]] * 4)
    with pytest.raises(ConfigError, match="scale"):
        crop_boxes(KEY, 1, 8, 8, scale=(0.5, 0.1))


def test_mixup_soft_labels():
    x = _images()
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    one_hot = np.eye(4, dtype=np.float32)[labels]

    @jax.jit
    def run(key, x, labels, one_hot):  # one jit: XLA merges the identical Beta draws (slow to compile)
        mixed, soft = mixup(key, x, labels, num_classes=4, alpha=0.4)
        _, from_soft = mixup(key, x, one_hot, alpha=0.4)  # soft labels in: the same rule
        return mixed, soft, from_soft, *mixup_params(key, x.shape[0], 0.4, 0.4, 1.0)

    mixed, soft, from_soft, lam, perm = (np.asarray(a) for a in run(KEY, x, labels, one_hot))
    lam = float(lam)
    assert 0 < lam < 1 and not (perm == np.arange(len(x))).all()
    np.testing.assert_allclose(soft, lam * one_hot + (1 - lam) * one_hot[perm], atol=1e-6)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(from_soft, soft, atol=1e-6)
    np.testing.assert_allclose(mixed, lam * x + (1 - lam) * x[perm], atol=1e-5)
    with pytest.raises(ConfigError, match="num_classes"):
        mixup(KEY, x, labels)


def test_augment_scenes_is_jittable_and_keyed():
    x = _images(size=8)
    run = jax.jit(augment_scenes)
    first, again = np.asarray(run(KEY, x)), np.asarray(run(KEY, x))
    np.testing.assert_array_equal(first, again)
    assert first.shape == x.shape and np.isfinite(first).all()
    assert not np.allclose(first, np.asarray(run(jax.random.key(1, impl="rbg"), x)))
