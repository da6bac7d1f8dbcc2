"""Global-local fusion of an encoder (MAT-SED, PMAM): whole clip and sliding windows, averaged.

The stage-2 teacher and inference of both recipes encode a clip twice: once whole (global) and
once as windows of ``window`` input frames, ``step`` apart, whose encodings are averaged where
they overlap (local); the context network sees ``w * local + (1 - w) * global``, ``w = 0.5``.
A window sees a shorter context, so the local branch carries detail that the global pass
smooths over. This module keeps the placement of Transformer4SED
(``src/models/encoder_slide_window.py``, ``EncoderSlideWindow.__call__``; same in
``src/models/passt/passt_win.py`` of branch ``mat-sed-origin``):

* Starts are ``range(0, T + step - window, step)``: every multiple of ``step`` up to and
  including the first one at or past ``T - window``. The last window is *not* moved to end at
  ``T``; it is cut at ``T`` (shorter than ``window``) when ``T - window`` is not a multiple of ``step``.
* "Frames" are input (mel) frames. A window starting at input frame ``s`` is placed on the output
  grid at ``round(s * out_len / T)`` (Python's round, half to even) and covers as many output
  frames as the encoder returned for it; the output length is observed, not assumed. This
  assumes the encoder's output frames are evenly spread over its input (``out_len / T`` per input
  frame): exact for PaSST after its x10 interpolation (scale 1), a rounding for a downsampling
  encoder whose stride does not divide the starts.
* Each output frame is divided by the number of windows that reached it; frames that none
  reached are 0 in the local branch (the reference divides 0 by 0 and zeroes the NaNs), so the
  fusion there is ``(1 - w) * global``. With PaSST on 1000 frames this hits the last 10 (step 49)
  or 14 (step 31) frames; ``fill_uncovered=True`` puts the global encoding there instead.
* A clip not longer than ``window`` gives the global encoding (the reference's one window is then
  the whole clip). Divergence: when ``T <= window - step`` the reference's range is empty and its
  local branch all zero; we still return the global encoding.

Windows of full length run as one encoder call (stacked into the batch); a cut last window, if
any, is a second call, since its length differs. Everything is static, so it jits with
``window``/``step`` fixed.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxaudio.errors import ConfigError

Encoder = Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class GlobalLocal:
    """One setting of the fusion: windows of ``window`` input frames, ``step`` apart, and the
    local branch's weight (the reference: 512 / 49 for the stage-2 teacher, 512 / 31 at
    validation and inference, 0.5)."""

    window: int
    step: int
    local_weight: float = 0.5


def _positive(**values: int) -> None:
    for name, value in values.items():
        if int(value) != value or value < 1:
            raise ConfigError(f"global-local {name}={value!r}; expected a whole number >= 1")


def window_starts(total: int, window: int, step: int) -> tuple[int, ...]:
    """First input frame of each window over a clip of ``total`` frames (see the module docstring).

    Transformer4SED ``src/models/encoder_slide_window.py``: ``range(0, total + step - window, step)``;
    a window may run past ``total`` and is then cut there. Never empty: ``(0,)`` when the clip is
    not longer than ``window - step`` (the reference has no window there).
    """
    _positive(total=total, window=window, step=step)
    return tuple(range(0, total + step - window, step)) or (0,)


def _sliding(encode: Encoder, x: jax.Array, window: int, step: int, out_len: int | None,
             time_axis: int) -> tuple[jax.Array, np.ndarray]:
    """Overlap average and the static per-output-frame window count."""
    total = x.shape[time_axis]
    out_len = total if out_len is None else out_len
    _positive(window=window, step=step, out_len=out_len)
    starts = window_starts(total, window, step)
    full = [s for s in starts if s + window <= total]
    cut = [s for s in starts if s + window > total]  # at most the last one
    scale = out_len / total  # as the reference: round(start * scale)
    placed = []  # (output starts, encodings (batch, windows, frames, ...)): full windows as one block
    if full:
        stacked = jnp.stack([jax.lax.slice_in_dim(x, s, s + window, axis=time_axis) for s in full])
        enc = encode(stacked.reshape((-1,) + stacked.shape[2:]))
        enc = jnp.moveaxis(enc.reshape((len(full), x.shape[0]) + enc.shape[1:]), 0, 1)  # (batch, n, frames, ...)
        placed.append((np.array([round(s * scale) for s in full]), enc))
    for s in cut:
        enc = encode(jax.lax.slice_in_dim(x, s, total, axis=time_axis))
        placed.append((np.array([round(s * scale)]), enc[:, None]))
    ref = placed[0][1]
    acc = jnp.zeros((ref.shape[0], out_len) + ref.shape[3:], ref.dtype)
    count = np.zeros(out_len, np.int32)
    for lefts, enc in placed:
        n = enc.shape[2]
        if lefts[-1] + n > out_len:
            raise ConfigError(f"global-local out_len={out_len}: a window gives {n} frames placed from {lefts[-1]}, "
                              f"past the end; out_len must be the length of the encoder's output grid")
        pos = lefts[:, None] + np.arange(n)  # (windows, frames), static
        np.add.at(count, pos.ravel(), 1)
        acc = acc.at[:, pos].add(enc)
    denom = np.maximum(count, 1).reshape((1, out_len) + (1,) * (acc.ndim - 2))
    return acc / jnp.asarray(denom, acc.dtype), count


def sliding_encode(encode: Encoder, x: jax.Array, *, window: int, step: int, out_len: int | None = None,
                   time_axis: int = 1) -> jax.Array:
    """Local branch: ``encode`` on every window of ``x``, overlap-averaged onto ``out_len`` output frames.

    encode: batch of inputs (batch first, windows' time on ``time_axis``) -> ``(batch, frames, ...)``.
    out_len: length of the output grid (the whole-clip encoding's frames); default the input length.
    Frames no window reaches are 0, as in the reference.
    """
    return _sliding(encode, x, window, step, out_len, time_axis)[0]


def global_local(encode: Encoder, x: jax.Array, *, window: int, step: int, local_weight: float = 0.5,
                 time_axis: int = 1, global_encoding: jax.Array | None = None,
                 fill_uncovered: bool = False) -> jax.Array:
    """``local_weight * sliding_encode(x) + (1 - local_weight) * encode(x)``; the global encoding if ``T <= window``.

    global_encoding: the whole-clip encoding if the caller has it already (its frames fix the output
      grid). The reference's PaSST pads its global 99 patch columns to 100 before the x10
      interpolation but not the windows', so there the global pass is not ``encode(x)``.
    fill_uncovered: frames that no window reaches take the global encoding in the local branch
      (fusion = global there) instead of 0 (fusion = ``(1 - local_weight) * global``, the reference).
    """
    if not 0.0 <= local_weight <= 1.0:
        raise ConfigError(f"global-local local_weight={local_weight!r}; expected a fraction in [0, 1]")
    _positive(window=window, step=step)
    g = encode(x) if global_encoding is None else global_encoding
    if x.shape[time_axis] <= window:
        return g
    local, count = _sliding(encode, x, window, step, g.shape[1], time_axis)
    if fill_uncovered:
        covered = (count > 0).reshape((1, -1) + (1,) * (g.ndim - 2))
        local = jnp.where(covered, local, g)
    return local_weight * local + (1.0 - local_weight) * g
