"""Image-batch augmentations as pure functions of a PRNG key (jax.numpy, jit-able).

Images are NHWC `(batch, height, width, channels)`, any float dtype (normalised or not: flips,
rotations, bilinear crops and mixup are all per-channel affine-invariant, so they commute with
``(x - mean) / std``). Every random choice is drawn per example from the key by a `*_params`
function that the random function calls, so a test or a caller can see what was applied; same
key, same output. Shapes are static: random decisions become selects and index arithmetic.

Overhead scenes (NWPU-RESISC45) have no canonical orientation, so flips and 90-degree rotations
are label-preserving there, unlike for ImageNet photos; `augment_scenes` composes them with a
random resized crop.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from jaxaudio.audio.augment import mixup_params
from jaxaudio.errors import ConfigError, ShapeError

# torchvision.transforms.RandomResizedCrop's defaults.
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
CROP_ATTEMPTS = 10


def _check_images(images: jax.Array, name: str, square: bool = False) -> None:
    if images.ndim != 4:
        raise ShapeError(f"{name}: expected images (batch, height, width, channels), got shape {images.shape}")
    if square and images.shape[1] != images.shape[2]:
        raise ShapeError(f"{name}: 90-degree rotations keep the shape only for square images, got "
                         f"{images.shape[1]} x {images.shape[2]}")


# ----------------------------------------------------------------------------- flips

def flip_mask(key: jax.Array, batch: int, prob: float = 0.5) -> jax.Array:
    """Boolean (batch,): which examples flip, each independently with probability `prob`."""
    return jax.random.uniform(key, (batch,)) < prob


def flip_where(images: jax.Array, mask: jax.Array, axis: int) -> jax.Array:
    """Flip the examples where `mask` (batch,) is True along `axis` (2: left-right, 1: up-down)."""
    return jnp.where(mask[:, None, None, None], jnp.flip(images, axis=axis), images)


def random_flip(key: jax.Array, images: jax.Array, horizontal: bool = True, prob: float = 0.5) -> jax.Array:
    """Flip each image left-right (`horizontal`, the width axis) or up-down with probability `prob`.

    prob 0.5 (torchvision's RandomHorizontalFlip/RandomVerticalFlip default) makes each
    orientation equally likely; both flips are label-preserving for overhead scenes.
    """
    _check_images(images, "random_flip")
    return flip_where(images, flip_mask(key, images.shape[0], prob), axis=2 if horizontal else 1)


# ----------------------------------------------------------------------------- 90-degree rotations

def rot90_turns(key: jax.Array, batch: int) -> jax.Array:
    """int32 (batch,): quarter turns per example, uniform on {0, 1, 2, 3}."""
    return jax.random.randint(key, (batch,), 0, 4)


def rot90_by(images: jax.Array, turns: jax.Array) -> jax.Array:
    """Rotate each square image by `turns[b]` quarter turns, as ``np.rot90(image, k, axes=(0, 1))``
    (counter-clockwise as displayed with row 0 at the top)."""
    _check_images(images, "rot90_by", square=True)
    rotated = jnp.stack([jnp.rot90(images, k, axes=(1, 2)) for k in range(4)])  # (4, batch, H, W, C)
    turns = jnp.mod(jnp.asarray(turns, jnp.int32), 4)
    return rotated[turns, jnp.arange(images.shape[0])]


def random_rot90(key: jax.Array, images: jax.Array) -> jax.Array:
    """Rotate each square image by a uniform number of quarter turns (0-3).

    With both flips this reaches all 8 symmetries of the square (the dihedral group), every
    one an equally valid view of an overhead scene; no interpolation, so no blur.
    """
    return rot90_by(images, rot90_turns(key, images.shape[0]))


# ----------------------------------------------------------------------------- random resized crop

def _check_range(name: str, values: Sequence[float], lowest: float) -> tuple[float, float]:
    low, high = (float(v) for v in values)
    if not lowest < low <= high:
        raise ConfigError(f"random_resized_crop: {name} must be ({lowest} <) low <= high, got {tuple(values)}")
    return low, high


def crop_boxes(key: jax.Array, batch: int, height: int, width: int, scale: Sequence[float] = CROP_SCALE,
               ratio: Sequence[float] = CROP_RATIO, attempts: int = CROP_ATTEMPTS) -> jax.Array:
    """int32 (batch, 4) boxes (top, left, box_height, box_width), torchvision's RandomResizedCrop draw.

    Per example, `attempts` tries of area fraction ~ U(scale) and aspect ratio w/h log-uniform
    on `ratio`, with w = round(sqrt(area * ratio)), h = round(sqrt(area / ratio)); the first try
    that fits the image is taken at a uniform position. If none fits, the fallback is
    torchvision's: the whole image, clamped to the ratio range, centred.
    """
    s_low, s_high = _check_range("scale", scale, 0.0)
    r_low, r_high = _check_range("ratio", ratio, 0.0)
    # One draw for everything (each random op costs XLA compile time): per try an area and a
    # ratio, then the top and left positions.
    u = jax.random.uniform(key, (batch, 2 * attempts + 2))
    area = height * width * (s_low + (s_high - s_low) * u[:, :attempts])
    aspect = jnp.exp(math.log(r_low) + (math.log(r_high) - math.log(r_low)) * u[:, attempts:2 * attempts])
    w = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)
    h = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = jnp.argmax(fits, axis=1)[:, None]
    found = jnp.any(fits, axis=1)
    # torchvision's fallback (a Python-side constant: it depends on shapes only).
    if width / height < r_low:
        w_fb, h_fb = width, int(round(width / r_low))
    elif width / height > r_high:
        w_fb, h_fb = int(round(height * r_high)), height
    else:
        w_fb, h_fb = width, height
    w = jnp.where(found, jnp.take_along_axis(w, first, axis=1)[:, 0], w_fb)
    h = jnp.where(found, jnp.take_along_axis(h, first, axis=1)[:, 0], h_fb)
    top_random = jnp.minimum(jnp.floor(u[:, -2] * (height - h + 1)), height - h).astype(jnp.int32)
    left_random = jnp.minimum(jnp.floor(u[:, -1] * (width - w + 1)), width - w).astype(jnp.int32)
    top = jnp.where(found, top_random, int(round((height - h_fb) / 2)))  # torchvision's rounding
    left = jnp.where(found, left_random, int(round((width - w_fb) / 2)))
    return jnp.stack([top, left, h, w], axis=1).astype(jnp.int32)


def _bilinear_axis(start: jax.Array, length: jax.Array, out: int):
    """Source rows (low, high) and the high row's weight for `out` samples of the box's rows
    [start, start + length), half-pixel centres (align_corners False), clamped at the box's edge
    (as cropping first and then resizing is: torchvision's resized_crop, jax.image.resize)."""
    last = start + length - 1
    pos = jnp.clip(start + (jnp.arange(out) + 0.5) * (length / out) - 0.5, start, last)
    low = jnp.floor(pos)
    high = jnp.minimum(low + 1, last)
    return low.astype(jnp.int32), high.astype(jnp.int32), pos - low


def crop_and_resize(images: jax.Array, boxes: jax.Array, out_height: Optional[int] = None,
                    out_width: Optional[int] = None) -> jax.Array:
    """Cut each box (top, left, box_height, box_width) out of its image and resize it bilinearly.

    Output (batch, out_height, out_width, channels), by default the input size. Bilinear with
    half-pixel centres (PIL's and jax.image.resize's convention) and no antialiasing: boxes lie
    inside the image, so for an output of the input's size the box is only ever enlarged.
    A box of the output's size is copied exactly.
    """
    _check_images(images, "crop_and_resize")
    _, height, width, _ = images.shape
    out_height = height if out_height is None else int(out_height)
    out_width = width if out_width is None else int(out_width)
    boxes = jnp.asarray(boxes).astype(jnp.float32)

    def one(image, box):
        y0, y1, wy = _bilinear_axis(box[0], box[2], out_height)
        x0, x1, wx = _bilinear_axis(box[1], box[3], out_width)
        rows = image[y0] * (1 - wy)[:, None, None] + image[y1] * wy[:, None, None]  # (out_h, W, C)
        return rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]

    return jax.vmap(one)(images, boxes).astype(images.dtype)


def random_resized_crop(key: jax.Array, images: jax.Array, scale: Sequence[float] = CROP_SCALE,
                        ratio: Sequence[float] = CROP_RATIO, out_size: Optional[int] = None) -> jax.Array:
    """torchvision's RandomResizedCrop per example: a random box (`crop_boxes`) resized to the input size.

    Defaults are torchvision's: scale (0.08, 1.0) of the area and aspect ratio (3/4, 4/3), from
    the Inception training recipe (Szegedy et al. 2015) that ImageNet CNNs were trained with.
    Scene images at 256 px keep their texture under crops down to a few percent of the area,
    but raise scale[0] (e.g. 0.25) when small objects define the class. `out_size` None keeps
    the input size. scale (1, 1) with ratio (1, 1) on square images is the identity.
    """
    _check_images(images, "random_resized_crop")
    batch, height, width, _ = images.shape
    boxes = crop_boxes(key, batch, height, width, scale, ratio)
    return crop_and_resize(images, boxes, out_size, out_size)


# ----------------------------------------------------------------------------- mixup

def mixup(key: jax.Array, images: jax.Array, labels: jax.Array, *, num_classes: Optional[int] = None,
          alpha: float = 0.2, prob: float = 1.0) -> tuple[jax.Array, jax.Array]:
    """Mixup (Zhang et al. 2018): lam * x + (1 - lam) * x[perm] and the same mix of one-hot labels.

    One lam ~ Beta(alpha, alpha) per batch and a batch permutation, both from
    `jaxaudio.audio.augment.mixup_params(key, batch, alpha, alpha, prob)`. alpha 0.2 is the
    paper's ImageNet value (it used 0.1-0.4 there; larger alphas under-fit at short schedules);
    with probability 1 - prob the batch is left unmixed (lam = 1). `labels` are class ids (batch,)
    (`num_classes` needed; a padded row's -1 becomes all zeros) or already soft (batch, classes).
    Returns (mixed images, float32 soft labels (batch, classes), each row summing to 1).
    """
    _check_images(images, "mixup")
    labels = jnp.asarray(labels)
    if labels.ndim == 1:
        if num_classes is None:
            raise ConfigError("mixup: integer labels (batch,) need num_classes to become one-hot")
        labels = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    elif labels.ndim != 2:
        raise ShapeError(f"mixup: labels must be class ids (batch,) or soft labels (batch, classes), "
                         f"got shape {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise ShapeError(f"mixup: {images.shape[0]} images but {labels.shape[0]} labels")
    lam, perm = mixup_params(key, images.shape[0], alpha, alpha, prob)
    labels = labels.astype(jnp.float32)
    lam_x = lam.astype(images.dtype)
    mixed = lam_x * images + (1 - lam_x) * images[perm]
    soft = lam * labels + (1 - lam) * labels[perm]
    return mixed, soft


# ----------------------------------------------------------------------------- the scene recipe

def augment_scenes(key: jax.Array, images: jax.Array, *, flips: bool = True, rot90: bool = True,
                   crop: bool = True, scale: Sequence[float] = CROP_SCALE,
                   ratio: Sequence[float] = CROP_RATIO) -> jax.Array:
    """The remote-sensing training recipe: random resized crop, then both flips and a quarter turn.

    Each part is drawn from its own split of `key`; `rot90` needs square images. Mixup, which
    changes the labels, is applied separately (`mixup`).
    """
    crop_key, h_key, v_key, rot_key = jax.random.split(key, 4)
    if crop:
        images = random_resized_crop(crop_key, images, scale, ratio)
    if flips:
        images = random_flip(h_key, images, horizontal=True)
        images = random_flip(v_key, images, horizontal=False)
    if rot90:
        images = random_rot90(rot_key, images)
    return images
