"""Paraformer (Gao et al., Interspeech 2022): non-autoregressive ASR with a CIF predictor and a
glancing-language-model sampler, after FunASR ``funasr/models/paraformer/model.py`` (``Paraformer``)
and ``decoder.py`` (``ParaformerSANDecoder``); recipe
``examples/aishell/paraformer/conf/paraformer_conformer_12e_6d_2048_256.yaml`` (``model_conf``:
ctc_weight 0.3, lsm_weight 0.1, length_normalized_loss false, predictor_weight 1.0,
sampling_ratio 0.4; ``decoder_conf``: 6 blocks, 4 heads, 2048 units, dropout 0.1, attention
dropouts 0).

Pipeline (training, FunASR ``forward`` / ``_calc_att_loss`` / ``sampler``)::

    enc, enc_mask = ConformerEncoder(feats, mask)                       (B, T', d)
    ctc_logits    = Linear_{d->V}(enc)                                  FunASR ``ctc.ctc_lo``
    alpha         = CIFPredictor(enc, enc_mask)                         (B, T')
    acoustic      = integrate_and_fire(enc, scale_alpha(alpha, N))      (B, L, d), L = targets.shape[1]
    first         = stop_gradient(decoder(acoustic))                    pass 1 (FunASR ``torch.no_grad``)
    semantic      = glancing_sample(acoustic, first, targets, ...)      GLM sampler
    logits        = decoder(semantic)                                   pass 2, the CE term
    loss = 0.3 CTC + 0.7 CE_ls(0.1) + 1.0 quantity_loss(alpha, N)

* ``ParaformerDecoder`` (``ParaformerSANDecoder`` = ``BaseTransformerDecoder`` with
  ``x = tgt``, no ``self.embed`` call): N pre-norm layers ``x + drop(self_attn(norm1 x))``,
  ``x + drop(src_attn(norm2 x, enc))``, ``x + drop(ff(norm3 x))``; ``after_norm``, then
  ``output_layer`` (Linear d -> V). The self-attention mask is the token padding mask only (FunASR
  ``tgt_mask = ~make_pad_mask(ys_in_lens)[:, None, :]``, no ``subsequent_mask``); the cross-attention
  mask is the encoder padding mask. Feed-forward: FunASR ``PositionwiseFeedForward`` (ReLU,
  dropout inside). LayerNorm eps 1e-12; PyTorch default Linear init; ``embed`` ~ N(0, 1) as
  ``torch.nn.Embedding``. All attention goes through ``attention.attend``.
* ``glancing_sample``: FunASR ``sampler``; per utterance ``n = floor(float(L - #correct) * ratio)``
  (``.long()`` truncates), ``n`` random valid positions get the target token's embedding instead of
  the acoustic one, everything is zeroed outside the target mask (``sematic_embeds * tgt_mask``).
  Static shapes: the positions are the ``n`` smallest of uniform scores over valid slots.
* Losses, as FunASR normalises them with ``length_normalized_loss: false``:
  CTC (``funasr/models/ctc/ctc.py``: ``CTCLoss(reduction="none")``, then ``loss.sum() / B``) = sum
  over utterances of the CTC negative log-likelihood over encoder frames (blank 0), divided by
  the batch size; CE (``funasr/losses/label_smoothing_loss.py``) = sum over valid positions of
  ``KL(q || softmax(logits))``, ``q = 1 - eps`` on the target and ``eps / (V - 1)`` on every other
  class, divided by the batch size; quantity: ``cif.quantity_loss``. ``acc``: FunASR's
  ``th_accuracy`` on the *first-pass* logits (``decoder_out_1st``): correct / valid tokens.
* ``greedy_decode`` (FunASR ``inference`` with beam 1, no CTC): ``cif_inference`` (tail 0.45,
  ``floor(sum alpha)`` tokens), one decoder pass, argmax per slot, masked by the token count.

Choices FunASR leaves open, or where this module differs on purpose:

1. Token buffer. Training uses ``targets.shape[1]`` slots (the targets' padded width; FunASR
   sizes it by ``round(sum(alpha))``, which equals ``max(N)`` after the scaling); inference uses
   ``cfg.max_tokens`` (static shapes). Fires beyond the buffer are dropped (``nn/cif.py``).
2. The last training token may not fire (float rounding, ``nn/cif.py`` docstring); its slot is then
   zero and stays in the decoder mask (the target mask), as in FunASR.
3. Glancing embeddings: FunASR's ``decoder.embed`` is ``Sequential(Embedding, PositionalEncoding)``
   (``funasr/models/transformer/decoder.py``, ``input_layer == "embed"``), so its replaced rows are
   ``sqrt(d) * E[y] + PE`` (with positional dropout). Here they are the plain table rows ``E[y]``
   (the decoder sees no positions anywhere else either). ``share_embedding`` is not modelled.
4. The sampler's randomness is an explicit ``key``: ``Paraformer.__call__`` samples only when a
   ``key`` is given and ``sampling_ratio > 0`` (FunASR samples in validation too, since it never
   checks ``self.training``; pass a key in eval to reproduce that). Pass 1 runs with the same
   ``train`` flag as pass 2 (FunASR: same module mode, dropout on in training).
5. ``use_1st_decoder_loss`` is stored but unused in FunASR (``pre_loss_att`` is always None);
   there is no first-pass loss here either.
6. CTC: ``optax.ctc_loss`` (log-softmax inside, ``log_epsilon`` -1e5 instead of ``-inf``); FunASR's
   ``ignore_nan_grad`` (dropping utterances whose loss is infinite, e.g. too few frames) is not
   modelled: such an utterance contributes a large finite loss. Targets' padded entries may hold
   any id (FunASR pads with ``ignore_id = -1``); only ``target_lengths`` decides validity.
7. Padding: the encoder, CIF and decoder masks make a padded batch give each utterance's results
   alone (the encoder's and CIF's deliberate differences from FunASR are in their modules).
8. ``fire_positions`` index encoder frames (4x subsampled: 40 ms at a 10 ms hop); a token fired by
   the inference tail frame has the position ``T'_b`` (the utterance's encoder length).
9. No SpecAugment / CMVN here (data side), no CTC prefix beam search. MWER (not in FunASR) is
   ``jaxaudio/objectives/mwer.py``, a fine-tuning stage of ``experiments/paraformer``.
"""
from __future__ import annotations

import dataclasses
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.nn import attention
from jaxaudio.nn import conformer
from jaxaudio.nn.cif import CIFPredictor, cif_inference, integrate_and_fire, quantity_loss, scale_alpha
from jaxaudio.nn.cnn import as_rngs, torch_uniform
from jaxaudio.nn.conformer import ConformerConfig, ConformerEncoder, MultiHeadAttention

BLANK = 0  # jaxaudio.data.tokenizer: 0 <blank> (CTC blank and padding id), 1 <s>, 2 </s>, 3 <unk>


@dataclasses.dataclass(frozen=True)
class ParaformerConfig:
    """Sizes and loss weights; defaults are FunASR's AISHELL-1 Paraformer (conformer 12e, 6d).

    vocab_size: output classes, blank 0 included (the default 4234 is a placeholder; set it from the tokenizer).
    decoder_*: ParaformerSANDecoder ``num_blocks``, ``attention_heads``, ``linear_units``,
      ``dropout_rate`` (residuals and inside the FF), attention dropouts (self and source).
    predictor_dropout, threshold, tail_threshold: ``CifPredictor``. max_tokens: inference slots.
    ctc_weight, predictor_weight, label_smoothing (lsm_weight), sampling_ratio: ``model_conf``;
      the CE weight is ``1 - ctc_weight``.
    """

    encoder: ConformerConfig = conformer.PAPER
    vocab_size: int = 4234
    decoder_layers: int = 6
    decoder_heads: int = 4
    decoder_ffn: int = 2048
    decoder_dropout: float = 0.1
    decoder_attention_dropout: float = 0.0
    norm_eps: float = 1e-12
    predictor_dropout: float = 0.1
    threshold: float = 1.0
    tail_threshold: float = 0.45
    max_tokens: int = 64
    ctc_weight: float = 0.3
    predictor_weight: float = 1.0
    label_smoothing: float = 0.1
    sampling_ratio: float = 0.4

    @property
    def ce_weight(self) -> float:
        return 1.0 - self.ctc_weight

    def __post_init__(self):
        def bad(key, problem):
            raise ConfigError(f"ParaformerConfig.{key}: {problem}")

        for key in ("vocab_size", "decoder_layers", "decoder_heads", "decoder_ffn", "max_tokens"):
            if int(getattr(self, key)) < 1:
                bad(key, f"{getattr(self, key)}; expected >= 1")
        if self.vocab_size < 2:
            bad("vocab_size", f"{self.vocab_size}; expected >= 2 (blank and one token)")
        if self.encoder.d_model % self.decoder_heads:
            bad("decoder_heads", f"{self.decoder_heads} does not divide d_model={self.encoder.d_model}")
        for key in ("decoder_dropout", "decoder_attention_dropout", "predictor_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                bad(key, f"{getattr(self, key)}; expected 0 <= rate < 1")
        for key in ("ctc_weight", "sampling_ratio", "label_smoothing"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                bad(key, f"{getattr(self, key)}; expected in [0, 1]")
        if self.predictor_weight < 0:
            bad("predictor_weight", f"{self.predictor_weight}; expected >= 0")


PAPER = ParaformerConfig()
# CPU-test sizes: d 32, one conformer block, one decoder layer, 12 classes, no dropout.
TINY = ParaformerConfig(
    encoder=ConformerConfig(input_dim=20, d_model=32, heads=2, ffn_dim=64, blocks=1, kernel=5, dropout=0.0,
                            pos_dropout=0.0),
    vocab_size=12, decoder_layers=1, decoder_heads=2, decoder_ffn=64, decoder_dropout=0.0, predictor_dropout=0.0,
    max_tokens=8)
PRESETS = {"paper": PAPER, "tiny": TINY}


def _linear(fan_in: int, fan_out: int, *, rngs: nnx.Rngs) -> nnx.Linear:
    init = torch_uniform(fan_in)
    return nnx.Linear(fan_in, fan_out, kernel_init=init, bias_init=init, rngs=rngs)


class DecoderLayer(nnx.Module):
    """FunASR ``DecoderLayer`` (normalize_before, no concat_after): self-attn, src-attn, FF, pre-norm."""

    def __init__(self, dim: int, heads: int, ffn: int, *, dropout: float, attention_dropout: float,
                 norm_eps: float, rngs: nnx.Rngs):
        self.norm1 = nnx.LayerNorm(dim, epsilon=norm_eps, rngs=rngs)
        self.self_attn = MultiHeadAttention(dim, heads, dropout=attention_dropout, rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, epsilon=norm_eps, rngs=rngs)
        self.src_attn = MultiHeadAttention(dim, heads, dropout=attention_dropout, rngs=rngs)
        self.norm3 = nnx.LayerNorm(dim, epsilon=norm_eps, rngs=rngs)
        self.feed_forward = conformer.FeedForward(dim, ffn, dropout=dropout, activation=jax.nn.relu, rngs=rngs)
        self.dropout_rate = float(dropout)

    def __call__(self, x, token_mask, memory, memory_mask, *, train: bool, rngs=None, causal: bool = False):
        """causal: False for Paraformer (padding mask only); True for an autoregressive decoder."""
        def drop(y):
            return attention.dropout(y, self.dropout_rate, train=train, rngs=rngs)

        h = self.norm1(x)
        x = x + drop(self.self_attn(h, h, token_mask, train=train, rngs=rngs, causal=causal))
        x = x + drop(self.src_attn(self.norm2(x), memory, memory_mask, train=train, rngs=rngs))
        return x + drop(self.feed_forward(self.norm3(x), train=train, rngs=rngs))


class ParaformerDecoder(nnx.Module):
    """``ParaformerSANDecoder``: acoustic/semantic embeddings ``(B, L, d)`` -> logits ``(B, L, vocab)``.

    ``embed`` (``(vocab, d)`` table) is used only by the glancing sampler, never on the input.
    """

    def __init__(self, vocab_size: int, dim: int, *, layers: int, heads: int, ffn: int, dropout: float = 0.1,
                 attention_dropout: float = 0.0, norm_eps: float = 1e-12, rngs: nnx.Rngs):
        self.embed = nnx.Embed(vocab_size, dim, embedding_init=nnx.initializers.normal(1.0), rngs=rngs)
        self.decoders = nnx.List([
            DecoderLayer(dim, heads, ffn, dropout=dropout, attention_dropout=attention_dropout, norm_eps=norm_eps,
                         rngs=rngs) for _ in range(layers)])
        self.after_norm = nnx.LayerNorm(dim, epsilon=norm_eps, rngs=rngs)
        self.output_layer = _linear(dim, vocab_size, rngs=rngs)

    def __call__(self, x: jax.Array, token_mask: jax.Array, memory: jax.Array, memory_mask: jax.Array, *,
                 train: bool, rngs=None) -> jax.Array:
        """x ``(B, L, d)``; token_mask ``(B, L)``; memory ``(B, T', d)``; memory_mask ``(B, T')`` (bool)."""
        rngs = as_rngs(rngs)
        token_mask, memory_mask = token_mask.astype(bool), memory_mask.astype(bool)
        for layer in self.decoders:
            x = layer(x, token_mask, memory, memory_mask, train=train, rngs=rngs)
        return self.output_layer(self.after_norm(x))


def _lookup(embed, ids: jax.Array) -> jax.Array:
    if callable(embed):  # nnx.Embed or a function
        return embed(ids)
    return jnp.take(jnp.asarray(embed), ids, axis=0)


def glancing_sample(acoustic: jax.Array, first_pass_logits: jax.Array, targets: jax.Array, target_mask: jax.Array,
                    embed, ratio: float, key: jax.Array):
    """FunASR's GLM ``sampler``: returns ``(semantic (B, L, d), replaced (B, L) bool)``.

    acoustic ``(B, L, d)`` CIF embeddings; first_pass_logits ``(B, L, V)`` (gradient stopped here);
    targets ``(B, L)`` int (any id on padding); target_mask ``(B, L)`` True on valid positions;
    embed: a ``(V, d)`` table, an ``nnx.Embed`` or a callable ``ids -> (B, L, d)``. Per utterance
    ``floor(float32(L_b - #correct_b) * ratio)`` valid positions, drawn uniformly without
    replacement, take ``embed[target]``; the rest keep ``acoustic``; padding is zeroed.
    """
    mask = target_mask.astype(bool)
    ids = jnp.where(mask, targets, 0).astype(jnp.int32)
    pred = jnp.argmax(jax.lax.stop_gradient(first_pass_logits), axis=-1)
    lengths = jnp.sum(mask, axis=1)
    correct = jnp.sum((pred == ids) & mask, axis=1)
    n_sample = ((lengths - correct).astype(jnp.float32) * jnp.float32(ratio)).astype(jnp.int32)  # .long()
    scores = jnp.where(mask, jax.random.uniform(key, mask.shape), 2.0)  # padding ranks last
    rank = jnp.argsort(jnp.argsort(scores, axis=1), axis=1)
    replaced = (rank < n_sample[:, None]) & mask
    tokens = _lookup(embed, ids).astype(acoustic.dtype)
    semantic = jnp.where(replaced[..., None], tokens, acoustic)
    return semantic * mask[..., None].astype(acoustic.dtype), replaced


class Paraformer(nnx.Module):
    """Encoder, CTC head, CIF predictor and decoder (module docstring)."""

    def __init__(self, cfg: ParaformerConfig = PAPER, *, rngs: nnx.Rngs):
        self.cfg = cfg
        d = cfg.encoder.d_model
        self.encoder = ConformerEncoder(cfg.encoder, rngs=rngs)
        self.ctc = _linear(d, cfg.vocab_size, rngs=rngs)  # FunASR ctc.ctc_lo
        self.predictor = CIFPredictor(d, dropout=cfg.predictor_dropout, rngs=rngs)
        self.decoder = ParaformerDecoder(cfg.vocab_size, d, layers=cfg.decoder_layers, heads=cfg.decoder_heads,
                                         ffn=cfg.decoder_ffn, dropout=cfg.decoder_dropout,
                                         attention_dropout=cfg.decoder_attention_dropout, norm_eps=cfg.norm_eps,
                                         rngs=rngs)

    def encode(self, feats: jax.Array, mask: jax.Array | None = None, *, train: bool, rngs=None):
        """``(enc (B, T', d), enc_mask (B, T'), alpha (B, T'))``."""
        rngs = as_rngs(rngs)
        enc, enc_mask = self.encoder(feats, mask, train=train, rngs=rngs)
        alpha = self.predictor(enc, enc_mask, train=train, rngs=rngs)
        return enc, enc_mask, alpha

    def __call__(self, feats: jax.Array, mask: jax.Array | None, targets: jax.Array, target_lengths: jax.Array, *,
                 train: bool, rngs=None, key: jax.Array | None = None) -> dict:
        """Training forward. feats ``(B, T, F)``, mask ``(B, T)``; targets ``(B, L)``, target_lengths ``(B,)``.

        key: the glancing sampler's randomness (no sampling without it). Returns a dict of
        ``ctc_logits``, ``enc_mask``, ``alpha`` (unscaled), ``target_mask``, ``first_pass_logits``
        (gradient stopped), ``logits`` (pass 2), ``replaced`` (glanced positions), ``fire_positions``,
        ``enc`` and ``acoustic`` (the CIF embeddings, for a first pass with gradient: MWER).
        """
        rngs = as_rngs(rngs)
        cfg = self.cfg
        enc, enc_mask, alpha = self.encode(feats, mask, train=train, rngs=rngs)
        width = targets.shape[1]
        target_mask = jnp.arange(width)[None, :] < target_lengths[:, None]
        acoustic, _, fire_positions = integrate_and_fire(enc, scale_alpha(alpha, enc_mask, target_lengths), width,
                                                         cfg.threshold)
        first = jax.lax.stop_gradient(self.decoder(acoustic, target_mask, enc, enc_mask, train=train, rngs=rngs))
        if key is not None and cfg.sampling_ratio > 0:
            semantic, replaced = glancing_sample(acoustic, first, targets, target_mask, self.decoder.embed,
                                                 cfg.sampling_ratio, key)
        else:
            semantic, replaced = acoustic, jnp.zeros(target_mask.shape, bool)
        logits = self.decoder(semantic, target_mask, enc, enc_mask, train=train, rngs=rngs)
        return dict(ctc_logits=self.ctc(enc), enc_mask=enc_mask, alpha=alpha, target_mask=target_mask,
                    first_pass_logits=first, logits=logits, replaced=replaced, fire_positions=fire_positions,
                    enc=enc, acoustic=acoustic)


def ctc_loss(logits: jax.Array, logit_mask: jax.Array, targets: jax.Array, target_lengths: jax.Array) -> jax.Array:
    """FunASR ``CTC``: ``sum_b NLL_b / B`` over frames ``logit_mask`` (True = real), blank 0."""
    label_mask = jnp.arange(targets.shape[1])[None, :] < target_lengths[:, None]
    per_utt = optax.ctc_loss(logits.astype(jnp.float32), 1.0 - logit_mask.astype(jnp.float32),
                             jnp.where(label_mask, targets, 0).astype(jnp.int32),
                             1.0 - label_mask.astype(jnp.float32), blank_id=BLANK)
    return jnp.sum(per_utt) / logits.shape[0]


def label_smoothing_loss(logits: jax.Array, targets: jax.Array, target_mask: jax.Array,
                         smoothing: float) -> jax.Array:
    """FunASR ``LabelSmoothingLoss(normalize_length=False)``: ``sum KL(q || softmax) / B`` over valid positions.

    ``q = 1 - smoothing`` on the target and ``smoothing / (V - 1)`` elsewhere; ``0 log 0 = 0``.
    """
    vocab = logits.shape[-1]
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    ids = jnp.where(target_mask, targets, 0).astype(jnp.int32)
    q = jnp.where(jax.nn.one_hot(ids, vocab, dtype=bool), 1.0 - smoothing, smoothing / (vocab - 1))
    kl = jnp.sum(jax.scipy.special.xlogy(q, q) - q * logp, axis=-1)
    return jnp.sum(jnp.where(target_mask, kl, 0.0)) / logits.shape[0]


def token_accuracy(logits: jax.Array, targets: jax.Array, target_mask: jax.Array) -> jax.Array:
    """FunASR ``th_accuracy``: correct argmax over valid positions / valid positions."""
    correct = (jnp.argmax(logits, axis=-1) == targets) & target_mask
    return jnp.sum(correct) / jnp.maximum(jnp.sum(target_mask), 1)


def paraformer_loss(outputs: dict, targets: jax.Array, target_lengths: jax.Array, cfg: ParaformerConfig) -> dict:
    """``dict(loss, ctc, ce, quantity, acc)`` from ``Paraformer.__call__``'s outputs (module docstring)."""
    ctc = ctc_loss(outputs["ctc_logits"], outputs["enc_mask"], targets, target_lengths)
    ce = label_smoothing_loss(outputs["logits"], targets, outputs["target_mask"], cfg.label_smoothing)
    quantity = quantity_loss(outputs["alpha"], outputs["enc_mask"], target_lengths)
    loss = cfg.ctc_weight * ctc + cfg.ce_weight * ce + cfg.predictor_weight * quantity
    acc = token_accuracy(outputs["first_pass_logits"], targets, outputs["target_mask"])
    return dict(loss=loss, ctc=ctc, ce=ce, quantity=quantity, acc=acc)


def greedy_decode(model: Paraformer, feats: jax.Array, mask: jax.Array | None = None, *,
                  every_frame: bool = False) -> dict:
    """Eval-mode greedy decoding: ``dict(ids (B, slots) int32 (0 outside the mask), token_mask,
    token_num (B,), fire_positions (B, slots) (-1 outside), logits (B, slots, V))``.

    slots: ``cfg.max_tokens``; ``every_frame`` (static): one per encoder frame plus CIF's tail frame,
    which always suffices (CIF's weights are sigmoids, at most 1 a frame, so a frame fires at most
    once): for inputs longer than training's, whose tokens ``max_tokens`` would cut off. The valid
    slots decode alike either way (the decoder masks the others and has no positions)."""
    cfg = model.cfg
    enc, enc_mask, alpha = model.encode(feats, mask, train=False)
    slots = enc.shape[1] + 1 if every_frame else cfg.max_tokens
    acoustic, token_mask, token_num, fire_positions = cif_inference(enc, alpha, enc_mask, slots,
                                                                    cfg.threshold, cfg.tail_threshold)
    logits = model.decoder(acoustic, token_mask, enc, enc_mask, train=False)
    ids = jnp.where(token_mask, jnp.argmax(logits, axis=-1), BLANK).astype(jnp.int32)
    return dict(ids=ids, token_mask=token_mask, token_num=token_num, fire_positions=fire_positions, logits=logits)


__all__ = [
    "ParaformerConfig", "PAPER", "TINY", "PRESETS", "MultiHeadAttention", "DecoderLayer",
    "ParaformerDecoder", "Paraformer", "glancing_sample", "ctc_loss", "label_smoothing_loss", "token_accuracy",
    "paraformer_loss", "greedy_decode",
]
