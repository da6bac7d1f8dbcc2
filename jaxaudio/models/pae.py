"""GeCo's predictive autoencoder (PAE): every log-mel frame predicted from its neighbours by self-attention.

GeCo (arXiv 2305.12111, spec/papers.md §3) pre-trains one PAE per machine type on normal clips;
its predicted spectrogram (the "reconstruction" sample) is what GeCo's feature extractor learns to
tell apart from the original. The PAE "performs frame-level prediction" with self-attention and is
motivated by IDNN (Suefusa et al., 2020: predict a *removed* centre frame from the frames around
it). The paper gives no sizes, so the layout below and every default in ``PAEConfig`` are ours::

    mel (batch, frames, n_mels)
     -> input projection Linear(n_mels -> dim), frame by frame
     -> for every frame t the window t-k .. t+k (k = ``context``): one static gather, no loop
     -> the centre (t itself) replaced by a learnable mask token: IDNN's removed frame
     -> + learned position embedding over the 2k+1 window positions
     -> ``layers`` pre-norm Transformer blocks (``nn/attention.TransformerEncoder``) inside each window
     -> the centre position's output -> Linear(dim -> n_mels) = the prediction of frame t
    prediction (batch, frames, n_mels)

Why the prediction of frame t can never see frame t: its value enters window t only at the centre,
which the mask token replaces. **Clip edges**: window positions outside the clip (and, with a
``mask``, past a clip's last real frame) are gathered by edge replication -- the nearest real
frame, so every value stays finite -- and then hidden from attention by the key mask (weight
exactly 0). Replication alone would break the predictive property: for t = 0 the replicated left
neighbours *are* frame 0, the target. So near an edge a frame is predicted from the real
neighbours it has (at least one when the clip has two or more frames).

The window gather is applied after the (frame-wise, linear) input projection, which gives the same
numbers as projecting each window and costs 2k+1 times less. ``predict(mel)`` is a whole clip in
one jit-able call; ``pae_loss`` is the training MSE and ``pae_score`` the per-clip anomaly score
when the PAE is used as an ASD baseline of its own (higher = more anomalous).

Inputs should be roughly standardised (e.g. ``FrontEndConfig.norm_mean/norm_std``): the head
predicts the frames in the input's own units. Call convention as every model:
``__call__(mel, *, train, rngs=None, mask=None)``; ``rngs`` (key or ``nnx.Rngs``) is needed only
for dropout in train mode.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from jaxaudio.errors import ConfigError, ShapeError
from jaxaudio.nn.attention import TransformerEncoder
from jaxaudio.nn.cnn import as_rngs


@dataclasses.dataclass(frozen=True)
class PAEConfig:
    """All values are our choice: GeCo states none of them (spec/papers.md §3, "Not retrieved").

    n_mels: mel bins of the input and of the prediction.
    context: frames each side of the predicted one (2 -> a 5-frame window, the DCASE2020 AE's and
      IDNN's window).
    dim, layers, heads: width, depth and heads of the window Transformer (small enough for a CPU).
    mlp_ratio: MLP hidden width / dim.
    dropout, attention_dropout: Transformer dropout (0: the PAE is small and sees every frame of
      every clip as a training example).
    norm_eps: LayerNorm epsilon (PyTorch's default).
    init_std: std of the mask token and position embedding at init (BERT / ViT's 0.02).
    """

    n_mels: int = 128  # our choice: STgram-MFN's 128 mel bins (GeCo's front end is not stated)
    context: int = 2  # our choice
    dim: int = 64  # our choice
    layers: int = 2  # our choice
    heads: int = 4  # our choice
    mlp_ratio: float = 2.0  # our choice
    dropout: float = 0.0  # our choice
    attention_dropout: float = 0.0  # our choice
    norm_eps: float = 1e-5  # our choice (torch.nn.LayerNorm default)
    init_std: float = 0.02  # our choice

    def __post_init__(self):
        for key in ("n_mels", "dim", "layers", "heads"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"PAEConfig.{key}={getattr(self, key)!r}; expected a positive integer")
        if int(self.context) < 1:
            raise ConfigError(f"PAEConfig.context={self.context!r}; expected >= 1 frame each side")
        if self.dim % self.heads:
            raise ConfigError(f"PAEConfig.dim={self.dim} must be divisible by PAEConfig.heads={self.heads}")
        if self.mlp_ratio <= 0:
            raise ConfigError(f"PAEConfig.mlp_ratio={self.mlp_ratio}; expected > 0")
        for key in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"PAEConfig.{key}={getattr(self, key)}; expected a rate in [0, 1)")

    @property
    def window(self) -> int:
        """Frames per window, 2 * context + 1; the predicted frame sits at index ``context``."""
        return 2 * self.context + 1

    @property
    def mlp_dim(self) -> int:
        return max(1, int(round(self.dim * self.mlp_ratio)))


def _check_mask(mask: jax.Array | None, batch: int, frames: int, where: str) -> jax.Array | None:
    if mask is None:
        return None
    if mask.shape != (batch, frames):
        raise ShapeError(f"{where}: mask has shape {tuple(mask.shape)}; expected (batch, frames) = {(batch, frames)}")
    return mask.astype(bool)


def context_windows(x: jax.Array, context: int, lengths: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """The window of ``context`` frames each side of every frame, as one static gather.

    x: ``(batch, frames, features)``; lengths: ``(batch,)`` real frames per clip (the rest is
    padding), None = all ``frames``.
    Returns ``windows (batch, frames, 2*context+1, features)`` with ``windows[b, t, j] =
    x[b, clip(t + j - context, 0, lengths[b] - 1)]`` (edge replication) and ``valid (batch, frames,
    2*context+1)`` bool, True where ``t + j - context`` is a real frame of clip b.
    """
    if x.ndim != 3:
        raise ShapeError(f"context_windows: x has shape {tuple(x.shape)}; expected (batch, frames, features)")
    batch, frames, _ = x.shape
    offsets = jnp.arange(frames)[:, None] + jnp.arange(-context, context + 1)[None, :]  # (frames, window)
    if lengths is None:
        lengths = jnp.full((batch,), frames, dtype=jnp.int32)
    last = (jnp.maximum(lengths, 1) - 1).astype(jnp.int32)[:, None, None]  # (batch, 1, 1)
    index = jnp.clip(offsets[None], 0, last)  # (batch, frames, window)
    valid = (offsets[None] >= 0) & (offsets[None] <= last)
    windows = jnp.take_along_axis(x, index.reshape(batch, -1, 1), axis=1)
    return windows.reshape(batch, frames, 2 * context + 1, x.shape[-1]), valid


class PAE(nnx.Module):
    """Predictive autoencoder: ``(batch, frames, n_mels) -> (batch, frames, n_mels)`` (module docstring)."""

    def __init__(self, cfg: PAEConfig = PAEConfig(), *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.input_proj = nnx.Linear(cfg.n_mels, cfg.dim, rngs=rngs)
        self.mask_token = nnx.Param(cfg.init_std * jax.random.normal(rngs.params(), (cfg.dim,)))
        self.pos_embedding = nnx.Param(cfg.init_std * jax.random.normal(rngs.params(), (cfg.window, cfg.dim)))
        self.encoder = TransformerEncoder(
            cfg.layers, cfg.dim, cfg.heads, cfg.mlp_dim, dropout=cfg.dropout,
            attention_dropout=cfg.attention_dropout, norm_eps=cfg.norm_eps, rngs=rngs,
        )
        self.head = nnx.Linear(cfg.dim, cfg.n_mels, rngs=rngs)

    def __call__(self, mel: jax.Array, *, train: bool, rngs=None, mask: jax.Array | None = None) -> jax.Array:
        """mel: ``(batch, frames, n_mels)``; mask: ``(batch, frames)`` bool, True on real frames,
        which must come first in each clip (padding at the end). Returns the prediction of every
        frame from its neighbours, ``(batch, frames, n_mels)``; padded frames' predictions are
        meaningless (``pae_loss`` / ``pae_score`` leave them out)."""
        cfg = self.cfg
        if mel.ndim != 3 or mel.shape[-1] != cfg.n_mels:
            raise ShapeError(f"PAE input has shape {tuple(mel.shape)}; expected (batch, frames, "
                             f"PAEConfig.n_mels={cfg.n_mels})")
        rngs = as_rngs(rngs)
        if train and (cfg.dropout > 0 or cfg.attention_dropout > 0) and rngs is None:
            raise ConfigError("PAEConfig.dropout / attention_dropout > 0 need `rngs` (a key) when train=True")
        batch, frames, _ = mel.shape
        mask = _check_mask(mask, batch, frames, "PAE")
        lengths = None if mask is None else jnp.sum(mask, axis=1)
        x = self.input_proj(mel)  # (batch, frames, dim)
        windows, valid = context_windows(x, cfg.context, lengths)  # (batch, frames, window, dim)
        centre = jnp.arange(cfg.window) == cfg.context  # (window,)
        windows = jnp.where(centre[:, None], self.mask_token[...].astype(x.dtype), windows)
        windows = windows + self.pos_embedding[...].astype(x.dtype)
        valid = valid | centre  # the mask token is always there (a frame past a clip's end too)
        h = self.encoder(windows.reshape(batch * frames, cfg.window, cfg.dim), valid.reshape(batch * frames, -1),
                         train=train, rngs=rngs)
        return self.head(h[:, cfg.context]).reshape(batch, frames, cfg.n_mels)

    def predict(self, mel: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """Evaluation-mode prediction of a whole clip: the "reconstruction" sample GeCo feeds on."""
        return self(mel, train=False, mask=mask)


def _squared_error(pred: jax.Array, target: jax.Array, mask: jax.Array | None, where: str):
    """Checked shapes -> float32 ``(pred - target)**2`` and the checked frame mask (or None)."""
    if pred.shape != target.shape or pred.ndim != 3:
        raise ShapeError(f"{where}: prediction {tuple(pred.shape)} and target {tuple(target.shape)}; "
                         "expected the same (batch, frames, n_mels)")
    mask = _check_mask(mask, pred.shape[0], pred.shape[1], where)
    return jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32)), mask


def prediction_error(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean squared error per clip over its real frames and all bins: ``(batch, frames, n_mels)`` -> ``(batch,)``."""
    squared, mask = _squared_error(pred, target, mask, "prediction_error")
    if mask is None:
        return jnp.mean(squared, axis=(1, 2))
    squared = jnp.where(mask[..., None], squared, 0.0)
    count = jnp.sum(mask, axis=1).astype(jnp.float32) * pred.shape[-1]
    return jnp.sum(squared, axis=(1, 2)) / jnp.maximum(count, 1.0)


def pae_loss(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Training MSE: the mean over every real (frame, bin) element of the batch (padded frames out).

    Every frame weighs the same whatever its clip's length (not a mean of per-clip means). 0 when no
    frame is real.
    """
    squared, mask = _squared_error(pred, target, mask, "pae_loss")
    if mask is None:
        return jnp.mean(squared)
    squared = jnp.where(mask[..., None], squared, 0.0)
    return jnp.sum(squared) / jnp.maximum(jnp.sum(mask).astype(jnp.float32) * pred.shape[-1], 1.0)


def pae_score(model: PAE, mel: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Anomaly score per clip, ``(batch,)``: the mean squared prediction error of the evaluation-mode PAE
    over the clip's real frames (a clip the PAE, trained on normal sounds, predicts badly is anomalous)."""
    return prediction_error(model.predict(mel, mask), mel, mask)


__all__ = ["PAEConfig", "PAE", "context_windows", "prediction_error", "pae_loss", "pae_score"]
