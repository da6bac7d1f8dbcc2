"""The Conformer encoder of Paraformer's AISHELL-1 recipe, after FunASR / ESPnet.

FunASR ``funasr/models/conformer/encoder.py`` (``ConformerEncoder``, ``EncoderLayer``,
``ConvolutionModule``), ``funasr/models/transformer/attention.py``
(``RelPositionMultiHeadedAttention``), ``.../embedding.py`` (``RelPositionalEncoding``) and
``.../utils/subsampling.py`` (``Conv2dSubsampling``); recipe
``examples/aishell/paraformer/conf/paraformer_conformer_12e_6d_2048_256.yaml``: 12 blocks,
d 256, 4 heads, FFN 2048, conv2d subsampling, rel-pos self-attention, macaron, swish, conv
kernel 15, pre-norm, dropout 0.1, positional dropout 0.1, attention dropout 0.

* ``Conv2dSubsampling4``: ``(B, T, F)`` as a one-channel image -> Conv2d(1, d, 3, stride 2)
  -> ReLU -> Conv2d(d, d, 3, stride 2) -> ReLU -> flatten ``(channel, freq)`` channel-major
  (torch's ``x.transpose(1, 2).view(b, t, c * f)``) -> Linear(d * F', d) with
  ``F' = ((F - 1) // 2 - 1) // 2``; then ESPnet's ``RelPositionalEncoding``: ``x * sqrt(d)``
  and the ``(2T'-1, d)`` relative sinusoid table (``relpos.sinusoidal_relative_table``, offsets
  ``T'-1 ... -(T'-1)``), each through its own positional dropout (FunASR drops both). There is
  no other dropout in the subsampling (FunASR's ``dropout_rate`` argument is unused there).
  ``T' = ((T - 1) // 2 - 1) // 2``; at least 7 frames are needed (FunASR's ``check_short_utt``).
* ``RelPositionAttention``: ESPnet's "latest" rel_pos (``rel_pos_type: latest``)::

      score[i, j] = ((q_i + u) . k_j + rel_shift((q + v) p^T)[i, j]) / sqrt(d_k)
      p = linear_pos(table) (no bias),  rel_shift(...)[i, j] = ((q_i + v) . p)[T-1-i+j] <-> offset i-j

  with ``u = pos_bias_u``, ``v = pos_bias_v`` of shape ``(heads, d_k)``; the scores go through
  the package's attention core, ``attention.attend(q + u, k, v, bias=position_scores)``.
* ``ConformerBlock`` (pre-norm, macaron)::

      x = x + 0.5 * drop(FF_macaron(norm_ff_macaron(x)))
      x = x + drop(MHSA(norm_mha(x)))
      x = x + drop(Conv(norm_conv(x)))
      x = x + 0.5 * drop(FF(norm_ff(x)))
      x = norm_final(x)

  FF: Linear(d, ffn) -> swish -> dropout -> Linear(ffn, d). Conv: pointwise Conv1d(d, 2d) ->
  GLU over channels -> depthwise Conv1d(d, kernel, padding (kernel-1)/2, groups d) ->
  BatchNorm1d -> swish -> pointwise Conv1d(d, d).
* ``ConformerEncoder``: subsampling -> blocks -> ``after_norm`` (the pre-norm encoder's final
  LayerNorm). Returns ``(encoder_out (B, T', d), out_mask (B, T'))``; padded output frames are
  computed but meaningless.

Numerics as FunASR: LayerNorm eps 1e-12 (FunASR's ``LayerNorm``); BatchNorm eps 1e-5,
momentum 0.1 in torch's convention (NNX ``momentum = 0.9``; torch keeps the unbiased batch
variance in its running estimate, NNX the biased one); swish = SiLU; PyTorch's default
Linear/Conv init ``U(+-1/sqrt(fan_in))``, xavier-uniform ``pos_bias_u/v``.

Padding (``ConformerConfig.funasr_padding``). By default a padded batch gives, on each
utterance's valid frames, the same output as the utterance alone (eval mode); three deliberate
differences from FunASR make it so, and ``funasr_padding=True`` restores FunASR's behaviour:

1. Output mask: FunASR slices ``mask[:, :-2:2][:, :-2:2]``, which keeps, per stride-2 conv, the
   frame at the *start* of each 3-frame window. That is exact for the longest row, but a padded
   row of length T keeps ``(T + 1) // 2`` frames instead of the conv's ``(T - 1) // 2``, so up to
   2 output frames whose receptive field reaches into the padding count as valid (and are
   attended to). Here a frame is valid when its whole window is: length ``((T-1)//2 - 1)//2``.
2. FunASR's ``ConvolutionModule.forward(x)`` takes no mask, so the depthwise conv mixes padded
   frames into the last ``(kernel-1)/2`` valid ones. Here the GLU output is zeroed on padded
   frames right before the depthwise conv (what its zero padding gives an utterance alone).
3. In training, the BatchNorm statistics are taken over valid frames only (FunASR: all frames).

Parameter names (a FunASR ``encoder.*`` state dict maps 1:1; torch Linear weights are
``(out, in)`` -> ``kernel = W.T``; Conv2d ``(O, I, kh, kw)`` -> ``W.transpose(2, 3, 1, 0)``;
Conv1d ``(O, I/groups, k)`` -> ``W.transpose(2, 1, 0)``; LayerNorm / BatchNorm ``weight`` ->
``scale``, ``running_mean`` / ``running_var`` -> ``mean`` / ``var``, ``num_batches_tracked``
dropped; the conv2d time axis is torch's H (kh), frequency its W (kw))::

    embed.conv.0.{weight,bias}                      embed/conv1/{kernel,bias}
    embed.conv.2.{weight,bias}                      embed/conv2/{kernel,bias}
    embed.out.0.{weight,bias}                       embed/out/{kernel,bias}
    encoders.N.self_attn.linear_q.{weight,bias}     encoders/N/attention/query/{kernel,bias}
    encoders.N.self_attn.linear_k.{weight,bias}     encoders/N/attention/key/{kernel,bias}
    encoders.N.self_attn.linear_v.{weight,bias}     encoders/N/attention/value/{kernel,bias}
    encoders.N.self_attn.linear_out.{weight,bias}   encoders/N/attention/out/{kernel,bias}
    encoders.N.self_attn.linear_pos.weight          encoders/N/attention/linear_pos/kernel
    encoders.N.self_attn.pos_bias_{u,v}             encoders/N/attention/pos_bias_{u,v}   (heads, d_k) as is
    encoders.N.feed_forward_macaron.w_{1,2}.*       encoders/N/feed_forward_macaron/{fc_in,fc_out}/*
    encoders.N.feed_forward.w_{1,2}.*               encoders/N/feed_forward/{fc_in,fc_out}/*
    encoders.N.conv_module.pointwise_conv1.*        encoders/N/conv_module/pointwise_conv1/*
    encoders.N.conv_module.depthwise_conv.*         encoders/N/conv_module/depthwise_conv/*
    encoders.N.conv_module.norm.*                   encoders/N/conv_module/norm/{scale,bias,mean,var}
    encoders.N.conv_module.pointwise_conv2.*        encoders/N/conv_module/pointwise_conv2/*
    encoders.N.norm_{ff_macaron,mha,conv,ff,final}  encoders/N/norm_{ff_macaron,mha,conv,ff,final}/{scale,bias}
    after_norm.{weight,bias}                        after_norm/{scale,bias}

The renames (``self_attn/linear_{q,k,v,out}`` -> ``attention/{query,key,value,out}``,
``w_1/w_2`` -> ``fc_in/fc_out``) follow the package's sharding names: the default rules shard
the attention projections; ``SHARDING_RULES`` adds the feed-forward layers.

Legacy relative positions (``ConformerConfig.rel_pos = "legacy"``). FunASR's ``rel_pos_type``
defaults to ``"legacy"`` and the AISHELL-1 recipe does not set it, so FunASR's own run of that
recipe (and every checkpoint it writes) uses ``LegacyRelPositionalEncoding`` /
``LegacyRelPositionMultiHeadedAttention`` (ESPnet before PR #2816): the same parameters, other
position scores. Here ``LegacyRelPositionAttention`` and ``legacy_relative_table``::

      table[m] = sinusoid(P - 1 - m),  m = 0 .. T-1,   P = max(pos_max_len, T)   (T rows, not 2T-1)
      bd       = (q + v) p^T                               (B, heads, T, T), p = linear_pos(table)
      legacy_rel_shift(bd): prepend a zero column, view (T, T+1) as (T+1, T), drop the first row:
          out[i, j] = bd[i, T-1-(i-j)]   for j <= i      (table position P - T + (i - j))
          out[i, j] = 0                  for j == i + 1
          out[i, j] = bd[i+1, j-i-2]     for j >  i + 1  (the next query's row, position P + 1 + (i - j))

  ``sinusoid(r) = [sin(r w_0), cos(r w_0), sin(r w_1), ...]`` as ``PositionalEncoding(reverse=True)``;
  FunASR builds that table once for ``max_len = 5000`` positions (``4999 ... 0``) and slices its first
  ``T`` rows, so the positions are ``4999 ... 5000-T``, not ``T-1 ... 0``: the score of offset
  ``i - j`` depends on ``T``, the *padded* length of the batch. That is FunASR's behaviour (its
  checkpoints were trained with it) and is reproduced, so under "legacy" an utterance's output
  depends slightly on how far its batch is padded, in FunASR and here alike (the padding
  invariance described above holds for "latest" only). Beyond ``T > pos_max_len`` FunASR rebuilds
  its table for ``T`` positions and keeps it for later calls (state across calls); here ``P = T``
  for that call only, which is what a freshly built FunASR module gives. ``zero_triu`` (off in FunASR's
  defaults) is not modelled. Dropout, ``x * sqrt(d)`` and everything else are as for "latest".

Checked against FunASR itself (random weights) by ``tests/convert/test_funasr_paraformer_vs_funasr.py``.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.nn import attention
from jaxaudio.nn.cnn import as_rngs, torch_uniform
from jaxaudio.nn.relpos import rel_shift, sinusoidal_relative_table

# Frames the two stride-2, kernel-3 convs need for one output frame (FunASR ``check_short_utt``).
MIN_FRAMES = 7

# ConformerConfig.rel_pos: ESPnet's current relative positions, or FunASR's default (module docstring).
REL_POS_TYPES = ("latest", "legacy")
# FunASR's PositionalEncoding max_len: the legacy table's positions are 4999 ... 5000-T.
LEGACY_MAX_LEN = 5000

# Feed-forward layers as the package's MLP (``attention/*`` is covered by the default rules).
SHARDING_RULES: tuple[tuple[str, str], ...] = (
    (r"(^|/)feed_forward(_macaron)?/fc_in/(kernel|bias)$", "tensor_out"),
    (r"(^|/)feed_forward(_macaron)?/fc_out/kernel$", "tensor_in"),
)


@dataclasses.dataclass(frozen=True)
class ConformerConfig:
    """Sizes and options; defaults are FunASR's AISHELL-1 Paraformer encoder (conformer 12e).

    input_dim: feature bins (80-d fbank). d_model, heads, ffn_dim, blocks, kernel: FunASR's
      output_size, attention_heads, linear_units, num_blocks, cnn_module_kernel.
    dropout: residual branches and inside the FF (dropout_rate). attention_dropout: on the
      attention weights. pos_dropout: on ``x * sqrt(d)`` and on the position table.
    norm_eps: LayerNorm eps (FunASR 1e-12). bn_epsilon, bn_momentum_torch: the conv module's
      BatchNorm in torch's convention.
    funasr_padding: reproduce FunASR's handling of padded frames (module docstring).
    rel_pos: "latest" (ESPnet's current relative positions) or "legacy" (FunASR's default
      ``rel_pos_type``, what its AISHELL-1 recipe trains; module docstring). Same parameters.
    pos_max_len: the legacy table's ``max_len`` (FunASR's 5000); unused by "latest".
    """

    input_dim: int = 80
    d_model: int = 256
    heads: int = 4
    ffn_dim: int = 2048
    blocks: int = 12
    kernel: int = 15
    dropout: float = 0.1
    attention_dropout: float = 0.0
    pos_dropout: float = 0.1
    norm_eps: float = 1e-12
    bn_epsilon: float = 1e-5
    bn_momentum_torch: float = 0.1
    funasr_padding: bool = False
    rel_pos: str = "latest"
    pos_max_len: int = LEGACY_MAX_LEN

    def __post_init__(self):
        def bad(key, problem):
            raise ConfigError(f"ConformerConfig.{key}: {problem}")

        for key in ("input_dim", "d_model", "heads", "ffn_dim", "blocks", "kernel"):
            if int(getattr(self, key)) < 1:
                bad(key, f"{getattr(self, key)}; expected >= 1")
        if self.d_model % self.heads:
            bad("d_model", f"{self.d_model} is not divisible by heads={self.heads}")
        if self.d_model % 2:
            bad("d_model", f"{self.d_model}; expected even (sin/cos pairs of the position table)")
        if self.kernel % 2 == 0:
            bad("kernel", f"{self.kernel}; expected odd ('same' padding (kernel - 1) / 2)")
        if self.input_dim < MIN_FRAMES:
            bad("input_dim", f"{self.input_dim}; the subsampling needs >= {MIN_FRAMES} feature bins")
        for key in ("dropout", "attention_dropout", "pos_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                bad(key, f"{getattr(self, key)}; expected 0 <= rate < 1")
        if self.rel_pos not in REL_POS_TYPES:
            bad("rel_pos", f"{self.rel_pos!r}; expected one of {REL_POS_TYPES}")
        if int(self.pos_max_len) < 1:
            bad("pos_max_len", f"{self.pos_max_len}; expected >= 1")


PAPER = ConformerConfig()
# CPU-test sizes: 20 bins -> F' = 4, 2 blocks of d 16.
TINY = ConformerConfig(input_dim=20, d_model=16, heads=2, ffn_dim=32, blocks=2, kernel=5)
PRESETS = {"paper": PAPER, "tiny": TINY}


def subsampled_length(length):
    """Output frames of the two stride-2 kernel-3 convs: ``((T - 1) // 2 - 1) // 2`` (ints or arrays)."""
    return ((length - 1) // 2 - 1) // 2


def subsample_mask(mask: jax.Array, *, espnet_slicing: bool = False) -> jax.Array:
    """``(B, T)`` bool -> ``(B, T')``, one stride-2 kernel-3 step twice.

    Default: an output frame is valid when its whole 3-frame window is (for a prefix mask of
    length ``L``: ``subsampled_length(L)`` frames). ``espnet_slicing``: FunASR's
    ``mask[:, :-2:2][:, :-2:2]`` (the window's first frame; module docstring).
    """
    for _ in range(2):
        n = (mask.shape[1] - 1) // 2
        if espnet_slicing:
            mask = mask[:, :-2:2]
        else:
            mask = mask[:, 0:2 * n - 1:2] & mask[:, 1:2 * n:2] & mask[:, 2:2 * n + 1:2]
    return mask


def legacy_relative_table(length: int, dim: int, max_len: int = LEGACY_MAX_LEN, dtype=jnp.float32) -> jax.Array:
    """FunASR's ``LegacyRelPositionalEncoding`` table: ``(length, dim)`` sinusoids of positions
    ``P-1, P-2, ..., P-length`` with ``P = max(max_len, length)`` (module docstring).

    Float32 ``position * div_term`` as torch computes it. The angles reach ``5000`` rad, where one
    float32 ulp of ``div_term`` moves an entry by up to ``2.4e-4``, so ``div_term`` is a
    ``dim / 2`` constant: torch's float32 exponents through a correctly rounded exp (float64, then
    float32). Torch's float32 exp is correctly rounded on all but 1-2 of the 128 entries at
    ``d = 256`` (those one or two frequencies' columns then differ from torch's table by up to
    ``2.4e-4``; the encoder output stays within ``2e-5`` of FunASR's at the recipe's size);
    XLA's float32 exp misses ~17.
    """
    if dim % 2:
        raise ConfigError(f"legacy relative position dim={dim} must be even (sin/cos pairs)")
    top = max(int(max_len), int(length)) - 1
    positions = jnp.arange(top, top - length, -1, dtype=jnp.float32)[:, None]
    exponents = np.arange(0, dim, 2, dtype=np.float32) * np.float32(-(math.log(10000.0) / dim))  # float32, as torch
    freqs = jnp.asarray(np.exp(exponents.astype(np.float64)).astype(np.float32))
    angles = positions * freqs  # (T, dim/2)
    return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(length, dim).astype(dtype)


def legacy_rel_shift(x: jax.Array) -> jax.Array:
    """FunASR's ``LegacyRelPositionMultiHeadedAttention.rel_shift``, ``(..., T, T) -> (..., T, T)``:
    prepend a zero column, view ``(T, T+1)`` as ``(T+1, T)``, drop the first row (module docstring)."""
    *lead, time, width = x.shape
    if width != time:
        raise ConfigError(f"legacy_rel_shift input has shape {x.shape}; expected (..., T, T)")
    padded = jnp.concatenate([jnp.zeros((*lead, time, 1), x.dtype), x], axis=-1)
    return padded.reshape(*lead, time + 1, time)[..., 1:, :]


def _linear(fan_in: int, fan_out: int, *, use_bias: bool = True, rngs: nnx.Rngs) -> nnx.Linear:
    init = torch_uniform(fan_in)
    return nnx.Linear(fan_in, fan_out, use_bias=use_bias, kernel_init=init, bias_init=init, rngs=rngs)


def _conv(in_ch: int, out_ch: int, kernel: tuple[int, ...], *, strides=1, padding="VALID", groups: int = 1,
          rngs: nnx.Rngs) -> nnx.Conv:
    init = torch_uniform(in_ch // groups * math.prod(kernel))
    return nnx.Conv(in_ch, out_ch, kernel, strides=strides, padding=padding, feature_group_count=groups,
                    kernel_init=init, bias_init=init, rngs=rngs)


class Conv2dSubsampling4(nnx.Module):
    """``(B, T, F) -> (x (B, T', d) scaled by sqrt(d), pos_emb, mask (B, T') or None)``; pos_emb is
    ``(2T'-1, d)`` for ``rel_pos="latest"``, ``(T', d)`` for "legacy" (``legacy_relative_table``)."""

    def __init__(self, input_dim: int, d_model: int, *, pos_dropout: float = 0.1, espnet_slicing: bool = False,
                 rel_pos: str = "latest", pos_max_len: int = LEGACY_MAX_LEN, rngs: nnx.Rngs):
        if rel_pos not in REL_POS_TYPES:
            raise ConfigError(f"Conv2dSubsampling4: rel_pos={rel_pos!r}; expected one of {REL_POS_TYPES}")
        self.d_model = d_model
        self.conv1 = _conv(1, d_model, (3, 3), strides=(2, 2), rngs=rngs)
        self.conv2 = _conv(d_model, d_model, (3, 3), strides=(2, 2), rngs=rngs)
        self.out = _linear(d_model * subsampled_length(input_dim), d_model, rngs=rngs)
        self.pos_dropout = float(pos_dropout)
        self.espnet_slicing = espnet_slicing
        self.rel_pos, self.pos_max_len = rel_pos, int(pos_max_len)

    def __call__(self, x: jax.Array, mask: jax.Array | None = None, *, train: bool, rngs=None):
        """x ``(B, T, F)``, T >= 7; mask ``(B, T)`` bool, True on real frames."""
        if x.shape[1] < MIN_FRAMES:
            raise ConfigError(f"Conv2dSubsampling4: {x.shape[1]} frames; it needs >= {MIN_FRAMES}")
        rngs = as_rngs(rngs)
        h = jax.nn.relu(self.conv1(x[..., None]))
        h = jax.nn.relu(self.conv2(h))  # (B, T', F', d)
        batch, time, freq, channels = h.shape
        h = self.out(h.transpose(0, 1, 3, 2).reshape(batch, time, channels * freq))  # torch's (c, f) order
        if self.rel_pos == "legacy":
            table = legacy_relative_table(time, self.d_model, self.pos_max_len, h.dtype)
        else:
            table = sinusoidal_relative_table(time, self.d_model, h.dtype)
        h = attention.dropout(h * math.sqrt(self.d_model), self.pos_dropout, train=train, rngs=rngs)
        table = attention.dropout(table, self.pos_dropout, train=train, rngs=rngs)
        if mask is not None:
            mask = subsample_mask(mask.astype(bool), espnet_slicing=self.espnet_slicing)
        return h, table, mask


class MultiHeadAttention(nnx.Module):
    """FunASR ``MultiHeadedAttention``: ``query (B, Lq, d)`` attends to ``memory (B, Lk, d)``
    (Paraformer's decoder); its q/k/v/out layers are also the relative-position attention's."""

    def __init__(self, dim: int, heads: int, *, dropout: float = 0.0, rngs: nnx.Rngs):
        if dim % heads:
            raise ConfigError(f"{type(self).__name__}: dim={dim} is not divisible by heads={heads}")
        self.num_heads, self.head_dim = heads, dim // heads
        self.query = _linear(dim, dim, rngs=rngs)
        self.key = _linear(dim, dim, rngs=rngs)
        self.value = _linear(dim, dim, rngs=rngs)
        self.out = _linear(dim, dim, rngs=rngs)
        self.dropout_rate = float(dropout)

    def _heads(self, y: jax.Array) -> jax.Array:
        return y.reshape(*y.shape[:-1], self.num_heads, self.head_dim)

    def __call__(self, x: jax.Array, memory: jax.Array, memory_mask: jax.Array | None = None, *, train: bool,
                 rngs=None, causal: bool = False) -> jax.Array:
        """memory_mask ``(B, Lk)`` bool, True on real keys; causal: query i sees keys <= i only
        (self-attention of an autoregressive decoder, ``memory`` being ``x``)."""
        batch, length, dim = x.shape
        mask = None if memory_mask is None else attention.key_padding_mask(memory_mask.astype(bool))
        if causal:
            lower = jnp.tril(jnp.ones((length, memory.shape[1]), bool))[None, None]
            mask = lower if mask is None else mask & lower
        y = attention.attend(self._heads(self.query(x)), self._heads(self.key(memory)), self._heads(self.value(memory)),
                             mask=mask, dropout_rate=self.dropout_rate, train=train, rngs=rngs, weights_dtype=x.dtype)
        return self.out(y.reshape(batch, length, dim))


class RelPositionAttention(MultiHeadAttention):
    """ESPnet's "latest" relative-position self-attention over ``(B, T, d)`` (module docstring)."""

    def __init__(self, dim: int, heads: int, *, dropout: float = 0.0, rngs: nnx.Rngs):
        super().__init__(dim, heads, dropout=dropout, rngs=rngs)
        self.linear_pos = _linear(dim, dim, use_bias=False, rngs=rngs)
        xavier = nnx.initializers.xavier_uniform()  # torch xavier_uniform_ on (heads, d_k)
        self.pos_bias_u = nnx.Param(xavier(rngs.params(), (heads, self.head_dim)))
        self.pos_bias_v = nnx.Param(xavier(rngs.params(), (heads, self.head_dim)))

    def __call__(self, x: jax.Array, pos_emb: jax.Array, mask: jax.Array | None = None, *, train: bool,
                 rngs=None) -> jax.Array:
        """x ``(B, T, d)``; pos_emb ``(2T-1, d)``; mask ``(B, T)`` bool, True on real frames (keys)."""
        batch, time, dim = x.shape
        if pos_emb.shape != (2 * time - 1, dim):
            raise ConfigError(f"RelPositionAttention: pos_emb has shape {pos_emb.shape}; "
                              f"expected {(2 * time - 1, dim)}")
        q = self._heads(self.query(x))
        k = self._heads(self.key(x))
        v = self._heads(self.value(x))
        p = self._heads(self.linear_pos(pos_emb.astype(x.dtype)))  # (2T-1, heads, d_k)
        position = rel_shift(jnp.einsum("bihd,rhd->bhir", q + self.pos_bias_v[...], p))  # (B, heads, T, T)
        y = attention.attend(q + self.pos_bias_u[...], k, v, bias=position,
                             mask=None if mask is None else attention.key_padding_mask(mask.astype(bool)),
                             dropout_rate=self.dropout_rate, train=train, rngs=as_rngs(rngs), weights_dtype=x.dtype)
        return self.out(y.reshape(batch, time, dim))


class LegacyRelPositionAttention(RelPositionAttention):
    """FunASR's ``LegacyRelPositionMultiHeadedAttention`` over ``(B, T, d)`` (module docstring):
    the parameters of ``RelPositionAttention``, a ``(T, d)`` position table and ``legacy_rel_shift``."""

    def __call__(self, x: jax.Array, pos_emb: jax.Array, mask: jax.Array | None = None, *, train: bool,
                 rngs=None) -> jax.Array:
        """x ``(B, T, d)``; pos_emb ``(T, d)`` (``legacy_relative_table``); mask ``(B, T)`` bool, True on real keys."""
        batch, time, dim = x.shape
        if pos_emb.shape != (time, dim):
            raise ConfigError(f"LegacyRelPositionAttention: pos_emb has shape {pos_emb.shape}; expected {(time, dim)}")
        q = self._heads(self.query(x))
        k = self._heads(self.key(x))
        v = self._heads(self.value(x))
        p = self._heads(self.linear_pos(pos_emb.astype(x.dtype)))  # (T, heads, d_k)
        position = legacy_rel_shift(jnp.einsum("bihd,rhd->bhir", q + self.pos_bias_v[...], p))  # (B, heads, T, T)
        y = attention.attend(q + self.pos_bias_u[...], k, v, bias=position,
                             mask=None if mask is None else attention.key_padding_mask(mask.astype(bool)),
                             dropout_rate=self.dropout_rate, train=train, rngs=as_rngs(rngs), weights_dtype=x.dtype)
        return self.out(y.reshape(batch, time, dim))


class FeedForward(nnx.Module):
    """FunASR ``PositionwiseFeedForward``: fc_in -> activation (swish in the Conformer, ReLU in
    Paraformer's decoder) -> dropout -> fc_out."""

    def __init__(self, dim: int, hidden_dim: int, *, dropout: float = 0.0, activation=jax.nn.silu,
                 rngs: nnx.Rngs):
        self.fc_in = _linear(dim, hidden_dim, rngs=rngs)
        self.fc_out = _linear(hidden_dim, dim, rngs=rngs)
        self.dropout_rate = float(dropout)
        self.activation = activation

    def __call__(self, x: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        h = attention.dropout(self.activation(self.fc_in(x)), self.dropout_rate, train=train, rngs=as_rngs(rngs))
        return self.fc_out(h)


class ConvolutionModule(nnx.Module):
    """pointwise conv (d -> 2d) -> GLU -> [zero padding] -> depthwise conv -> BatchNorm -> swish -> pointwise conv.

    mask_padding: zero the padded frames before the depthwise conv and keep them out of the
    BatchNorm statistics (False: FunASR, which does neither).
    """

    def __init__(self, dim: int, kernel: int, *, bn_epsilon: float = 1e-5, bn_momentum_torch: float = 0.1,
                 mask_padding: bool = True, rngs: nnx.Rngs):
        if kernel % 2 == 0:
            raise ConfigError(f"ConvolutionModule: kernel={kernel}; expected odd")
        pad = (kernel - 1) // 2
        self.pointwise_conv1 = _conv(dim, 2 * dim, (1,), rngs=rngs)
        self.depthwise_conv = _conv(dim, dim, (kernel,), padding=((pad, pad),), groups=dim, rngs=rngs)
        self.norm = nnx.BatchNorm(dim, epsilon=bn_epsilon, momentum=1.0 - bn_momentum_torch, rngs=rngs)
        self.pointwise_conv2 = _conv(dim, dim, (1,), rngs=rngs)
        self.mask_padding = mask_padding

    def __call__(self, x: jax.Array, mask: jax.Array | None = None, *, train: bool, rngs=None) -> jax.Array:
        """x ``(B, T, d)``; mask ``(B, T)`` bool, True on real frames. No dropout inside (rngs unused)."""
        h = jax.nn.glu(self.pointwise_conv1(x), axis=-1)  # first half * sigmoid(second half), as torch's glu
        frames = None
        if mask is not None and self.mask_padding:
            frames = mask.astype(bool)[..., None]
            h = jnp.where(frames, h, jnp.zeros((), h.dtype))
        h = self.depthwise_conv(h)
        h = jax.nn.silu(self.norm(h, use_running_average=not train, mask=frames))
        return self.pointwise_conv2(h)


class ConformerBlock(nnx.Module):
    """FunASR ``EncoderLayer`` with macaron FF, conv module and pre-norm (module docstring)."""

    def __init__(self, cfg: ConformerConfig, *, rngs: nnx.Rngs):
        d, eps = cfg.d_model, cfg.norm_eps
        self.norm_ff_macaron = nnx.LayerNorm(d, epsilon=eps, rngs=rngs)
        self.feed_forward_macaron = FeedForward(d, cfg.ffn_dim, dropout=cfg.dropout, rngs=rngs)
        self.norm_mha = nnx.LayerNorm(d, epsilon=eps, rngs=rngs)
        attention_class = LegacyRelPositionAttention if cfg.rel_pos == "legacy" else RelPositionAttention
        self.attention = attention_class(d, cfg.heads, dropout=cfg.attention_dropout, rngs=rngs)
        self.norm_conv = nnx.LayerNorm(d, epsilon=eps, rngs=rngs)
        self.conv_module = ConvolutionModule(d, cfg.kernel, bn_epsilon=cfg.bn_epsilon,
                                             bn_momentum_torch=cfg.bn_momentum_torch,
                                             mask_padding=not cfg.funasr_padding, rngs=rngs)
        self.norm_ff = nnx.LayerNorm(d, epsilon=eps, rngs=rngs)
        self.feed_forward = FeedForward(d, cfg.ffn_dim, dropout=cfg.dropout, rngs=rngs)
        self.norm_final = nnx.LayerNorm(d, epsilon=eps, rngs=rngs)
        self.dropout_rate = float(cfg.dropout)

    def __call__(self, x: jax.Array, pos_emb: jax.Array, mask: jax.Array | None = None, *, train: bool,
                 rngs=None) -> jax.Array:
        """x ``(B, T, d)``; pos_emb ``(2T-1, d)`` ("latest") or ``(T, d)`` ("legacy"); mask ``(B, T)``
        bool, True on real frames."""
        rngs = as_rngs(rngs)

        def drop(y):
            return attention.dropout(y, self.dropout_rate, train=train, rngs=rngs)

        x = x + 0.5 * drop(self.feed_forward_macaron(self.norm_ff_macaron(x), train=train, rngs=rngs))
        x = x + drop(self.attention(self.norm_mha(x), pos_emb, mask, train=train, rngs=rngs))
        x = x + drop(self.conv_module(self.norm_conv(x), mask, train=train, rngs=rngs))
        x = x + 0.5 * drop(self.feed_forward(self.norm_ff(x), train=train, rngs=rngs))
        return self.norm_final(x)


class ConformerEncoder(nnx.Module):
    """``(B, T, input_dim)`` features -> ``(encoder_out (B, T', d), out_mask (B, T'))``, ``T' = ((T-1)//2-1)//2``."""

    def __init__(self, cfg: ConformerConfig = PAPER, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed = Conv2dSubsampling4(cfg.input_dim, cfg.d_model, pos_dropout=cfg.pos_dropout,
                                        espnet_slicing=cfg.funasr_padding, rel_pos=cfg.rel_pos,
                                        pos_max_len=cfg.pos_max_len, rngs=rngs)
        self.encoders = nnx.List([ConformerBlock(cfg, rngs=rngs) for _ in range(cfg.blocks)])
        self.after_norm = nnx.LayerNorm(cfg.d_model, epsilon=cfg.norm_eps, rngs=rngs)

    def __call__(self, x: jax.Array, mask: jax.Array | None = None, *, train: bool, rngs=None):
        """x ``(B, T, input_dim)``, T >= 7; mask ``(B, T)`` bool, True on real frames (None: all real)."""
        if x.shape[-1] != self.cfg.input_dim:
            raise ConfigError(f"ConformerEncoder: input has {x.shape[-1]} bins; ConformerConfig.input_dim="
                              f"{self.cfg.input_dim}")
        rngs = as_rngs(rngs)  # once, so that every layer draws its own dropout masks from it
        x, pos_emb, out_mask = self.embed(x, mask, train=train, rngs=rngs)
        for block in self.encoders:
            x = block(x, pos_emb, out_mask, train=train, rngs=rngs)
        if out_mask is None:
            out_mask = jnp.ones(x.shape[:2], bool)
        return self.after_norm(x), out_mask


__all__ = [
    "ConformerConfig", "PAPER", "TINY", "PRESETS", "SHARDING_RULES", "MIN_FRAMES", "REL_POS_TYPES", "LEGACY_MAX_LEN",
    "subsampled_length", "subsample_mask", "legacy_relative_table", "legacy_rel_shift", "Conv2dSubsampling4",
    "MultiHeadAttention", "RelPositionAttention", "LegacyRelPositionAttention", "FeedForward",
    "ConvolutionModule", "ConformerBlock", "ConformerEncoder",
]
