"""The DCASE2020 task-2 baseline autoencoder (y-kawagu/dcase2020_task2_baseline) in NNX.

Facts from the official repository at its final commit (``keras_model.py``, ``baseline.yaml``,
``common.py``, ``00_train.py``, ``01_test.py``; read, not copied):

* features (``common.file_to_vector_array``): ``librosa.feature.melspectrogram`` of the 16 kHz
  clip with n_fft 1024, hop 512, **128 mels**, power 2.0 (librosa 0.6.0 defaults otherwise: periodic
  Hann window, centred frames with reflect padding, Slaney mel scale and area normalisation, 0 Hz to
  Nyquist), then ``20 / power * log10(mel + sys.float_info.epsilon)`` = ``10 log10(mel + eps)``;
  ``DCASE2020_T2_FRONTEND`` is that front end for ``jaxaudio.audio.features.log_mel``;
* vectors: ``frames`` (5) consecutive frames concatenated, frame-major: vector i is
  ``[frame i | frame i+1 | ... | frame i+4]``, each block all mels of one frame, so
  ``n_frames - 4`` vectors of ``n_mels * 5`` values per clip, no padding (``context_vectors``);
* network: Dense 128 -> BatchNorm -> ReLU four times, the Dense 8 bottleneck -> BatchNorm -> ReLU,
  Dense 128 -> BatchNorm -> ReLU four times, Dense back to the input size (linear); Keras defaults:
  Glorot-uniform kernels, zero biases, BatchNormalization momentum 0.99, epsilon 1e-3;
* training: MSE between each vector and its reconstruction, Adam, 100 epochs, batch 512, shuffle,
  ``validation_split`` 0.1, one model per machine type (``AEFitConfig``);
* score (``01_test.py``): per vector the mean over its dimensions of the squared error, then the mean
  over the clip's vectors (``ae_score``); evaluated with ``roc_auc_score`` (AUC and pAUC, max_fpr 0.1).

**64 or 128 mels.** The first upload (2020-01-31) had ``n_mels: 64`` and a 64-64-8-64-64 Dense AE
without BatchNorm; commit c1f8791 ("Make AE deeper", 2020-02-03) made the network the 128x4-8-128x4
BatchNorm one above and raised ``n_mels`` to 128 (input 640) together. The released baseline, whose
results the task reports, is therefore 128 mels / 640 inputs, our default;
``ASDAEConfig(n_mels=64)`` gives the 320-d variant (spec/papers.md §3 quotes 64 mels, from the
first upload).

**BatchNorm, train vs eval.** ``train=True`` normalises with the statistics of the batch (over every
vector in it: a ``(batch, n_vectors, dim)`` input counts batch * n_vectors samples) and moves the
running averages, as Keras ``fit`` does; ``train=False`` uses the running averages, as Keras
``predict`` and the validation loss do. Scoring must use ``train=False`` (``ae_score`` does):
in train mode one clip's score would depend on the other clips in its batch. Two small
differences from Keras remain: Keras may store the unbiased batch variance in its running estimate
(NNX the biased one; a factor n/(n-1), 1.002 at batch 512), and Keras's Adam applies its epsilon
(1e-7) to the bias-uncorrected second moment.
"""
from __future__ import annotations

import dataclasses
import sys

import jax
import jax.numpy as jnp
from flax import nnx

from jaxaudio.audio.features import FrontEndConfig
from jaxaudio.errors import ConfigError, ShapeError

# common.file_to_vector_array: librosa 0.6.0 melspectrogram (periodic Hann, centred, reflect pad, Slaney mels with
# area norm, 0 Hz..Nyquist), 10 log10(mel + eps). Our 'db' log takes max(mel, amin) instead of mel + eps: the same
# value except where mel is within a few eps of 0 (digital silence), where the two differ by at most 3 dB at -156 dB.
DCASE2020_T2_FRONTEND = FrontEndConfig(
    sample_rate=16000, n_fft=1024, win_length=1024, hop_length=512, n_mels=128,
    fmin=0.0, fmax=None, mel_scale="slaney", mel_norm="slaney", window="hann", window_periodic=True,
    center=True, pad_mode="reflect", power=2.0, log="db", amin=sys.float_info.epsilon,
)


@dataclasses.dataclass(frozen=True)
class AEFitConfig:
    """The baseline's training values (dcase2020_task2_baseline ``baseline.yaml`` ``fit:`` and Keras 2.1.6 defaults).

    optimizer: ``adam`` (baseline.yaml ``fit.compile.optimizer``) with Keras's defaults: lr 0.001,
      beta_1 0.9, beta_2 0.999, epsilon 1e-7 (``K.epsilon()``); loss ``mean_squared_error``.
    epochs 100, batch_size 512, shuffle True, validation_split 0.1 (baseline.yaml ``fit``). Keras
      takes the validation part as the *last* 10 % of the vector array, before shuffling.
    """

    optimizer: str = "adam"  # baseline.yaml fit.compile.optimizer
    learning_rate: float = 1e-3  # Keras Adam default (baseline.yaml sets none)
    beta1: float = 0.9  # Keras Adam default
    beta2: float = 0.999  # Keras Adam default
    eps: float = 1e-7  # Keras Adam default (K.epsilon())
    loss: str = "mean_squared_error"  # baseline.yaml fit.compile.loss
    epochs: int = 100  # baseline.yaml fit.epochs
    batch_size: int = 512  # baseline.yaml fit.batch_size
    shuffle: bool = True  # baseline.yaml fit.shuffle
    validation_split: float = 0.1  # baseline.yaml fit.validation_split


@dataclasses.dataclass(frozen=True)
class ASDAEConfig:
    """n_mels, frames: the vector is ``frames`` consecutive frames of ``n_mels`` (baseline.yaml ``feature``);
    hidden, depth: ``depth`` Dense(hidden)-BatchNorm-ReLU layers on each side of the bottleneck
    (keras_model.py); bottleneck: its width; bn_momentum / bn_epsilon: Keras BatchNormalization
    defaults (NNX's momentum is the same decay of the running average); fit: training values."""

    n_mels: int = 128  # baseline.yaml feature.n_mels (final commit; 64 in the first upload)
    frames: int = 5  # baseline.yaml feature.frames
    hidden: int = 128  # keras_model.py
    depth: int = 4  # keras_model.py: four 128-wide layers each side
    bottleneck: int = 8  # keras_model.py
    bn_momentum: float = 0.99  # Keras BatchNormalization default
    bn_epsilon: float = 1e-3  # Keras BatchNormalization default
    fit: AEFitConfig = dataclasses.field(default_factory=AEFitConfig)

    def __post_init__(self):
        for key in ("n_mels", "frames", "hidden", "depth", "bottleneck"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"ASDAEConfig.{key}={getattr(self, key)!r}; expected a positive integer")
        if not 0.0 <= self.bn_momentum < 1.0:
            raise ConfigError(f"ASDAEConfig.bn_momentum={self.bn_momentum}; expected a decay in [0, 1)")
        if not 0.0 <= self.fit.validation_split < 1.0:
            raise ConfigError(f"ASDAEConfig.fit.validation_split={self.fit.validation_split}; expected [0, 1)")

    @property
    def input_dim(self) -> int:
        return self.n_mels * self.frames


PAPER = ASDAEConfig()


def context_vectors(log_mel: jax.Array, frames: int = 5) -> jax.Array:
    """The baseline's vector array: ``(batch, n_frames, n_mels) -> (batch, n_frames - frames + 1, n_mels * frames)``.

    Vector i holds frames i .. i+frames-1 one after the other (``common.file_to_vector_array``:
    ``vector[:, n_mels*t : n_mels*(t+1)] = frame i+t``); one static gather, no loop over frames.
    A clip shorter than ``frames`` has no vector (the baseline skips it); that raises here.
    """
    if log_mel.ndim != 3:
        raise ShapeError(f"context_vectors: log_mel has shape {tuple(log_mel.shape)}; expected (batch, frames, mel)")
    batch, n_frames, n_mels = log_mel.shape
    n_vectors = n_frames - frames + 1
    if frames < 1 or n_vectors < 1:
        raise ShapeError(f"context_vectors: {n_frames} frames give no vector of frames={frames} "
                         "(the baseline skips clips this short)")
    index = jnp.arange(n_vectors)[:, None] + jnp.arange(frames)[None, :]  # (n_vectors, frames)
    return log_mel[:, index, :].reshape(batch, n_vectors, frames * n_mels)


def vector_mask(mask: jax.Array, frames: int = 5) -> jax.Array:
    """``(batch, n_frames)`` real-frame mask -> ``(batch, n_vectors)``: a vector is real when all its frames are."""
    windows = context_vectors(mask.astype(jnp.float32)[..., None], frames)
    return jnp.min(windows, axis=-1) > 0.5


class DenseBNReLU(nnx.Module):
    """Keras ``Dense(width)`` -> ``BatchNormalization()`` -> ``Activation('relu')``."""

    def __init__(self, fan_in: int, width: int, cfg: ASDAEConfig, *, rngs: nnx.Rngs):
        self.dense = nnx.Linear(fan_in, width, kernel_init=nnx.initializers.glorot_uniform(),
                                bias_init=nnx.initializers.zeros_init(), rngs=rngs)
        self.norm = nnx.BatchNorm(width, momentum=cfg.bn_momentum, epsilon=cfg.bn_epsilon, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        return jax.nn.relu(self.norm(self.dense(x), use_running_average=not train))


class ASDAutoencoder(nnx.Module):
    """``(..., n_mels * frames) -> (..., n_mels * frames)``: typically ``(batch, n_vectors, 640)`` from
    ``context_vectors`` or the flat training vectors ``(batch, 640)``. No dropout, so ``rngs`` is unused."""

    def __init__(self, cfg: ASDAEConfig = PAPER, *, rngs: nnx.Rngs):
        self.cfg = cfg
        widths = [cfg.hidden] * cfg.depth + [cfg.bottleneck] + [cfg.hidden] * cfg.depth
        fan_ins = [cfg.input_dim] + widths[:-1]
        self.layers = nnx.List([DenseBNReLU(i, o, cfg, rngs=rngs) for i, o in zip(fan_ins, widths)])
        self.out = nnx.Linear(widths[-1], cfg.input_dim, kernel_init=nnx.initializers.glorot_uniform(),
                              bias_init=nnx.initializers.zeros_init(), rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        if x.ndim < 1 or x.shape[-1] != self.cfg.input_dim:
            raise ShapeError(f"ASDAutoencoder input has shape {tuple(x.shape)}; expected (..., n_mels * frames = "
                             f"{self.cfg.input_dim}) (ASDAEConfig n_mels={self.cfg.n_mels}, frames={self.cfg.frames})")
        for layer in self.layers:
            x = layer(x, train=train)
        return self.out(x)


def reconstruction_errors(recon: jax.Array, target: jax.Array) -> jax.Array:
    """Per-vector error of ``01_test.py``: the mean over the last axis of the squared difference."""
    if recon.shape != target.shape:
        raise ShapeError(f"reconstruction_errors: reconstruction {tuple(recon.shape)} != target {tuple(target.shape)}")
    return jnp.mean(jnp.square(recon.astype(jnp.float32) - target.astype(jnp.float32)), axis=-1)


def ae_loss(recon: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Keras ``mean_squared_error`` averaged over the batch: the mean of every element.

    mask: bool, the shape of ``recon`` less its last axis, True on real vectors (the others left out).
    """
    errors = reconstruction_errors(recon, target)
    if mask is None:
        return jnp.mean(errors)
    if mask.shape != errors.shape:
        raise ShapeError(f"ae_loss: mask has shape {tuple(mask.shape)}; expected {tuple(errors.shape)}")
    mask = mask.astype(bool)
    return jnp.sum(jnp.where(mask, errors, 0.0)) / jnp.maximum(jnp.sum(mask).astype(jnp.float32), 1.0)


def ae_score(model: ASDAutoencoder, log_mel: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Anomaly score per clip ``(batch,)``: mean reconstruction error over the clip's vectors, eval-mode BatchNorm.

    log_mel: ``(batch, n_frames, n_mels)``, the baseline's features; mask: ``(batch, n_frames)`` bool,
    True on real frames (a vector counts when all its frames are real; a clip without one scores 0).
    """
    vectors = context_vectors(log_mel, model.cfg.frames)
    errors = reconstruction_errors(model(vectors, train=False), vectors)  # (batch, n_vectors)
    if mask is None:
        return jnp.mean(errors, axis=-1)
    if mask.shape != log_mel.shape[:2]:
        raise ShapeError(f"ae_score: mask has shape {tuple(mask.shape)}; expected (batch, n_frames) = "
                         f"{tuple(log_mel.shape[:2])}")
    real = vector_mask(mask, model.cfg.frames)
    count = jnp.sum(real, axis=-1).astype(jnp.float32)
    return jnp.sum(jnp.where(real, errors, 0.0), axis=-1) / jnp.maximum(count, 1.0)


__all__ = ["DCASE2020_T2_FRONTEND", "AEFitConfig", "ASDAEConfig", "PAPER", "context_vectors", "vector_mask",
           "ASDAutoencoder", "reconstruction_errors", "ae_loss", "ae_score"]
