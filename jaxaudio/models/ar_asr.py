"""Autoregressive attention-encoder-decoder ASR (joint CTC / attention), the baseline for Paraformer on
the same Conformer encoder, after ESPnet ``espnet2/asr/espnet_model.py`` (``ESPnetASRModel``),
``espnet/nets/pytorch_backend/transformer/decoder.py`` / ``espnet2/asr/decoder/transformer_decoder.py``
(``TransformerDecoder``) and recipe ``egs2/aishell/asr1/conf/train_asr_conformer.yaml`` (encoder
conformer 12 blocks d 256, 4 heads, 2048 units, kernel 15; ``decoder_conf``: 6 blocks, 4 heads,
2048 units, dropout 0.1, positional dropout 0.1, attention dropouts 0; ``model_conf``:
ctc_weight 0.3, lsm_weight 0.1, length_normalized_loss false). FunASR's ``Conformer`` model
(``funasr/models/conformer``) is the same.

Pipeline (training, ESPnet ``forward`` / ``_calc_att_loss`` with ``add_sos_eos``)::

    enc, enc_mask = ConformerEncoder(feats, mask)                 (B, T', d)   the Paraformer encoder
    ctc_logits    = Linear_{d->V}(enc)                            ``ctc.ctc_lo``
    ys_in         = [<s>, y_1, ..., y_n]                          (B, L+1), mask: n + 1 positions
    ys_out        = [y_1, ..., y_n, </s>]                         (B, L+1), the CE targets
    logits        = decoder(ys_in, enc)                           causal self-attention, teacher forcing
    loss = 0.3 CTC + 0.7 CE_ls(0.1)

* ``ARDecoder`` (``TransformerDecoder``, ``input_layer="embed"``): ``embed`` = ``Embedding(V, d)``
  (``torch.nn.Embedding``: N(0, 1)) then ESPnet's ``PositionalEncoding``: ``x * sqrt(d) + PE`` with
  the absolute sinusoid table (``PE[p, 2i] = sin(p w_i)``, ``PE[p, 2i+1] = cos(p w_i)``,
  ``w_i = 10000^(-2i/d)``) and positional dropout (rate ``decoder_dropout``, as the recipe's
  ``positional_dropout_rate``); N pre-norm ``paraformer.DecoderLayer`` (self-attn, src-attn, ReLU FF)
  with ``causal=True`` (ESPnet ``tgt_mask = pad_mask & subsequent_mask``), ``after_norm``,
  ``output_layer`` (Linear d -> V). LayerNorm eps 1e-12, PyTorch default Linear init.
* Losses as ESPnet normalises them with ``length_normalized_loss: false``, the same functions as
  Paraformer's: CTC ``paraformer.ctc_loss`` (sum over utterances / B) and CE
  ``paraformer.label_smoothing_loss`` (sum of ``KL(q || p)`` over the ``n + 1`` valid positions / B);
  ``accuracy`` is ESPnet's ``acc`` (``th_accuracy``, the ``</s>`` position included).
* Decoding (no LM), eval mode, fixed shapes for ``jit``: ``greedy_decode`` and a batched ``beam_search``
  (rules in its docstring), attention only by default, joint CTC / attention with ``ctc_weight > 0``
  (ESPnet's ``CTCPrefixScorer`` weighting, the prefix scores from ``ctc_prefix.py``). Both recompute the
  decoder over the whole ``(max_tokens + 1)``-slot prefix buffer at every step (no key/value cache;
  the causal mask makes the not-yet-written slots invisible), and never emit ``<blank>`` (the
  padding id) or ``<s>``; ``</s>`` ends a hypothesis, ``<unk>`` is an ordinary token. After
  ``max_tokens`` tokens a hypothesis must take ``</s>``.

Choices where this module differs from ESPnet, or ESPnet leaves open:

1. Token ids follow ``jaxaudio/data/tokenizer.py`` (``<s>`` 1 and ``</s>`` 2 are distinct; ESPnet
   uses ``sos = eos = V - 1``). Padded decoder inputs hold 0 (ESPnet pads ``ys_in`` with ``eos``;
   either way they are masked).
2. ESPnet's beam search (``espnet/nets/beam_search.py``) moves ended hypotheses out of the beam and
   stops by ``end_detect``; here they stay in the beam with frozen scores (``beam_search``), and it
   stops when every hypothesis has ended or after ``max_tokens``.
3. ``length_penalty`` is ESPnet's ``penalty`` (a per-token bonus during the search); the final
   choice is length-normalised (ESPnet's ``normalize_length``, but dividing by tokens + 1 for
   ``</s>``, not by ``len(yseq)`` which also counts ``<s>``).
4. Joint decoding scores ESPnet's pre-beam (the decoder's ``int(1.5 * beam)`` best ids) plus ``</s>``
   always (ESPnet: ``</s>`` only when in the pre-beam), details in ``beam_search``.
5. As in Paraformer: ``optax.ctc_loss`` (finite ``log_epsilon``, no ``ignore_nan_grad``), no
   SpecAugment / CMVN (data side), padding-invariant encoder (``nn/conformer.py``).
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.models import ctc_prefix, paraformer
from jaxaudio.models.paraformer import BLANK, DecoderLayer, _linear, ctc_loss, label_smoothing_loss, token_accuracy
from jaxaudio.nn import attention
from jaxaudio.nn import conformer
from jaxaudio.nn.cnn import as_rngs
from jaxaudio.nn.conformer import ConformerConfig, ConformerEncoder
from jaxaudio.nn.relpos import sinusoidal_relative_table

SOS, EOS, UNK = 1, 2, 3  # jaxaudio.data.tokenizer: 0 <blank> (padding), 1 <s>, 2 </s>, 3 <unk>


@dataclasses.dataclass(frozen=True)
class ARASRConfig:
    """Sizes, loss weights and decoding; defaults are ESPnet's AISHELL-1 Conformer recipe.

    vocab_size: output classes, the four specials included (the default 4234 is a placeholder; set it
      from the tokenizer). decoder_*: ``TransformerDecoder`` ``num_blocks``, ``attention_heads``,
      ``linear_units``, ``dropout_rate`` (residuals, inside the FF and the positional dropout),
      attention dropouts (self and source). max_tokens: decoding buffer (tokens, ``</s>`` excluded).
    ctc_weight, label_smoothing (lsm_weight): ``model_conf``; the CE weight is ``1 - ctc_weight``.
    length_penalty: ``beam_search``'s default per-token bonus (ESPnet ``penalty``).
    """

    encoder: ConformerConfig = conformer.PAPER
    vocab_size: int = 4234
    decoder_layers: int = 6
    decoder_heads: int = 4
    decoder_ffn: int = 2048
    decoder_dropout: float = 0.1
    decoder_attention_dropout: float = 0.0
    norm_eps: float = 1e-12
    max_tokens: int = 64
    ctc_weight: float = 0.3
    label_smoothing: float = 0.1
    length_penalty: float = 0.0

    @property
    def ce_weight(self) -> float:
        return 1.0 - self.ctc_weight

    def __post_init__(self):
        def bad(key, problem):
            raise ConfigError(f"ARASRConfig.{key}: {problem}")

        for key in ("vocab_size", "decoder_layers", "decoder_heads", "decoder_ffn", "max_tokens"):
            if int(getattr(self, key)) < 1:
                bad(key, f"{getattr(self, key)}; expected >= 1")
        if self.vocab_size <= UNK + 1:
            bad("vocab_size", f"{self.vocab_size}; expected >= {UNK + 2} (<blank> <s> </s> <unk> and one token)")
        if self.encoder.d_model % self.decoder_heads:
            bad("decoder_heads", f"{self.decoder_heads} does not divide d_model={self.encoder.d_model}")
        for key in ("decoder_dropout", "decoder_attention_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                bad(key, f"{getattr(self, key)}; expected 0 <= rate < 1")
        for key in ("ctc_weight", "label_smoothing"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                bad(key, f"{getattr(self, key)}; expected in [0, 1]")
        if not math.isfinite(self.length_penalty):
            bad("length_penalty", f"{self.length_penalty}; expected a finite number")


PAPER = ARASRConfig()
# CPU-test sizes: Paraformer's TINY encoder (d 32, one block), one decoder layer, 12 classes, no dropout.
TINY = ARASRConfig(encoder=paraformer.TINY.encoder, vocab_size=12, decoder_layers=1, decoder_heads=2,
                   decoder_ffn=64, decoder_dropout=0.0, max_tokens=8)
PRESETS = {"paper": PAPER, "tiny": TINY}


def sinusoidal_positions(length: int, dim: int, dtype=jnp.float32) -> jax.Array:
    """ESPnet ``PositionalEncoding`` table ``(length, dim)`` for positions ``0 ... length-1``: the relative
    table's first ``length`` rows (offsets ``length-1 ... 0``, the same sin/cos layout) reversed."""
    return sinusoidal_relative_table(length, dim, dtype)[length - 1::-1]


class ARDecoder(nnx.Module):
    """ESPnet ``TransformerDecoder``: token ids ``(B, L)`` + encoder output -> logits ``(B, L, vocab)``."""

    def __init__(self, vocab_size: int, dim: int, *, layers: int, heads: int, ffn: int, dropout: float = 0.1,
                 attention_dropout: float = 0.0, norm_eps: float = 1e-12, rngs: nnx.Rngs):
        self.dim = dim
        self.embed = nnx.Embed(vocab_size, dim, embedding_init=nnx.initializers.normal(1.0), rngs=rngs)
        self.decoders = nnx.List([
            DecoderLayer(dim, heads, ffn, dropout=dropout, attention_dropout=attention_dropout, norm_eps=norm_eps,
                         rngs=rngs) for _ in range(layers)])
        self.after_norm = nnx.LayerNorm(dim, epsilon=norm_eps, rngs=rngs)
        self.output_layer = _linear(dim, vocab_size, rngs=rngs)
        self.dropout_rate = float(dropout)

    def __call__(self, tokens: jax.Array, token_mask: jax.Array, memory: jax.Array, memory_mask: jax.Array, *,
                 train: bool, rngs=None) -> jax.Array:
        """tokens ``(B, L)`` int; token_mask ``(B, L)``; memory ``(B, T', d)``; memory_mask ``(B, T')`` (bool)."""
        rngs = as_rngs(rngs)
        token_mask, memory_mask = token_mask.astype(bool), memory_mask.astype(bool)
        x = self.embed(tokens.astype(jnp.int32))
        x = x * math.sqrt(self.dim) + sinusoidal_positions(tokens.shape[1], self.dim, x.dtype)[None]
        x = attention.dropout(x, self.dropout_rate, train=train, rngs=rngs)
        for layer in self.decoders:
            x = layer(x, token_mask, memory, memory_mask, train=train, rngs=rngs, causal=True)
        return self.output_layer(self.after_norm(x))


def add_sos_eos(targets: jax.Array, target_lengths: jax.Array):
    """ESPnet ``add_sos_eos``: ``(ys_in, ys_out, mask)``, each ``(B, L+1)``: ``<s>`` + targets, targets +
    ``</s>`` at ``target_lengths``; mask True on the ``n + 1`` valid positions; 0 elsewhere."""
    batch, width = targets.shape
    positions = jnp.arange(width + 1)[None, :]
    lengths = jnp.asarray(target_lengths)[:, None]
    padded = jnp.concatenate([targets, jnp.zeros((batch, 1), targets.dtype)], axis=1).astype(jnp.int32)
    shifted = jnp.concatenate([jnp.full((batch, 1), SOS, jnp.int32), padded[:, :-1]], axis=1)
    mask = positions <= lengths
    ys_in = jnp.where(mask, shifted, BLANK)
    ys_out = jnp.where(positions < lengths, padded, jnp.where(positions == lengths, EOS, BLANK))
    return ys_in, ys_out, mask


class ARASR(nnx.Module):
    """Encoder, CTC head and autoregressive decoder (module docstring)."""

    def __init__(self, cfg: ARASRConfig = PAPER, *, rngs: nnx.Rngs):
        self.cfg = cfg
        d = cfg.encoder.d_model
        self.encoder = ConformerEncoder(cfg.encoder, rngs=rngs)
        self.ctc = _linear(d, cfg.vocab_size, rngs=rngs)  # ESPnet ctc.ctc_lo
        self.decoder = ARDecoder(cfg.vocab_size, d, layers=cfg.decoder_layers, heads=cfg.decoder_heads,
                                 ffn=cfg.decoder_ffn, dropout=cfg.decoder_dropout,
                                 attention_dropout=cfg.decoder_attention_dropout, norm_eps=cfg.norm_eps, rngs=rngs)

    def encode(self, feats: jax.Array, mask: jax.Array | None = None, *, train: bool, rngs=None):
        """``(enc (B, T', d), enc_mask (B, T'))``."""
        return self.encoder(feats, mask, train=train, rngs=as_rngs(rngs))

    def decode_logits(self, prev_tokens: jax.Array, prev_mask: jax.Array, enc: jax.Array, enc_mask: jax.Array, *,
                      train: bool, rngs=None) -> jax.Array:
        """Next-token logits ``(B, L, V)``: position ``i`` sees ``prev_tokens[:, :i+1]`` (``<s>`` first)."""
        return self.decoder(prev_tokens, prev_mask, enc, enc_mask, train=train, rngs=rngs)

    def __call__(self, feats: jax.Array, mask: jax.Array | None, targets: jax.Array, target_lengths: jax.Array, *,
                 train: bool, rngs=None) -> dict:
        """Training forward with teacher forcing. feats ``(B, T, F)``, mask ``(B, T)``; targets ``(B, L)``
        (any id on padding), target_lengths ``(B,)``. Returns ``ctc_logits``, ``enc_mask``, ``logits``
        ``(B, L+1, V)``, ``decoder_targets`` (targets + ``</s>``) and ``decoder_mask``, each ``(B, L+1)``."""
        rngs = as_rngs(rngs)
        enc, enc_mask = self.encode(feats, mask, train=train, rngs=rngs)
        ys_in, ys_out, ys_mask = add_sos_eos(targets, target_lengths)
        logits = self.decode_logits(ys_in, ys_mask, enc, enc_mask, train=train, rngs=rngs)
        return dict(ctc_logits=self.ctc(enc), enc_mask=enc_mask, logits=logits, decoder_targets=ys_out,
                    decoder_mask=ys_mask)


def ar_asr_loss(outputs: dict, targets: jax.Array, target_lengths: jax.Array, cfg: ARASRConfig) -> dict:
    """``dict(loss, ctc, ce, accuracy)`` from ``ARASR.__call__``'s outputs: ``loss = ctc_weight * ctc +
    (1 - ctc_weight) * ce``; both sums over the batch divided by B (module docstring)."""
    ctc = ctc_loss(outputs["ctc_logits"], outputs["enc_mask"], targets, target_lengths)
    ce = label_smoothing_loss(outputs["logits"], outputs["decoder_targets"], outputs["decoder_mask"],
                              cfg.label_smoothing)
    loss = cfg.ctc_weight * ctc + cfg.ce_weight * ce
    accuracy = token_accuracy(outputs["logits"], outputs["decoder_targets"], outputs["decoder_mask"])
    return dict(loss=loss, ctc=ctc, ce=ce, accuracy=accuracy)


def _emittable(vocab_size: int) -> jax.Array:
    """``(V,)`` bool: the ids a hypothesis may take (everything but ``<blank>``/padding and ``<s>``)."""
    ids = jnp.arange(vocab_size)
    return (ids != BLANK) & (ids != SOS)


def _step_log_probs(model: ARASR, buf: jax.Array, i: jax.Array, enc: jax.Array, enc_mask: jax.Array) -> jax.Array:
    """``log_softmax`` over the full vocabulary of the logits at slot ``i`` of the prefix buffer ``(N, L)``."""
    prefix_mask = jnp.broadcast_to(jnp.arange(buf.shape[1])[None, :] <= i, buf.shape)
    logits = model.decode_logits(buf, prefix_mask, enc, enc_mask, train=False)
    step = jax.lax.dynamic_index_in_dim(logits, i, axis=1, keepdims=False)
    return jax.nn.log_softmax(step.astype(jnp.float32), axis=-1)


def greedy_decode(model: ARASR, feats: jax.Array, mask: jax.Array | None = None, *, ctc_weight: float = 0.0) -> dict:
    """Eval-mode greedy decoding: ``dict(tokens (B, max_tokens) int32, 0 after the end; lengths (B,))``.

    Each step takes the most probable emittable id (``</s>`` included); ``</s>`` is forced after
    ``max_tokens`` tokens. The loop stops once every utterance has ended. ``ctc_weight > 0`` (static):
    ``beam_search`` with ``beam=1`` and that weight (joint score; candidates: the decoder's best token
    and ``</s>``, see there), its ``tokens`` and ``lengths``.
    """
    if float(ctc_weight) != 0.0:
        out = beam_search(model, feats, mask, beam=1, ctc_weight=ctc_weight)
        return dict(tokens=out["tokens"], lengths=out["lengths"])
    cfg = model.cfg
    n, vocab = cfg.max_tokens, cfg.vocab_size
    enc, enc_mask = model.encode(feats, mask, train=False)
    batch = enc.shape[0]
    slots = jnp.arange(n + 1)[None, :]
    emittable = _emittable(vocab)
    only_eos = jnp.arange(vocab) == EOS

    def body(state):
        i, buf, done, lengths = state
        logp = _step_log_probs(model, buf, i, enc, enc_mask)
        tok = jnp.argmax(jnp.where(jnp.where(i < n, emittable, only_eos), logp, -jnp.inf), axis=-1)
        emit = ~done & (tok != EOS)
        buf = jnp.where((slots == i + 1) & emit[:, None], tok[:, None].astype(jnp.int32), buf)
        return i + 1, buf, done | (tok == EOS), lengths + emit

    def cond(state):
        i, _, done, _ = state
        return (i <= n) & ~jnp.all(done)

    buf = jnp.zeros((batch, n + 1), jnp.int32).at[:, 0].set(SOS)
    state = (jnp.int32(0), buf, jnp.zeros(batch, bool), jnp.zeros(batch, jnp.int32))
    _, buf, _, lengths = jax.lax.while_loop(cond, body, state)
    return dict(tokens=buf[:, 1:], lengths=lengths)


def beam_search(model: ARASR, feats: jax.Array, mask: jax.Array | None = None, *, beam: int,
                length_penalty: float | None = None, ctc_weight: float = 0.0, ctc_tokens: int | None = None) -> dict:
    """Eval-mode batched beam search: ``dict(tokens (B, max_tokens) int32 (0 after the end), lengths (B,),
    scores (B,))`` for the chosen hypothesis of each utterance; fixed shapes, ``jit``-able (``beam`` static).

    Each utterance keeps ``beam`` hypotheses (a ``(B * beam, max_tokens + 1)`` buffer, ``<s>`` first),
    finished or not; the search starts from the single hypothesis ``<s>``. A hypothesis's search score
    is ``sum log p + length_penalty * (emitted ids, </s> included)`` with ``log p`` the decoder's
    ``log_softmax`` over the full vocabulary (disallowed ids are not candidates, not renormalised away).
    Each step, every unfinished hypothesis is extended by every emittable id (``</s>`` and the tokens;
    only ``</s>`` once it holds ``max_tokens`` tokens), every finished one is carried over once with its
    score frozen, and the ``beam`` best candidates by search score survive (ties: the lower
    ``(parent, id)`` index first, ``lax.top_k``). The search stops when every hypothesis has finished
    (at the latest after ``max_tokens + 1`` steps). The result is the finished hypothesis with the
    highest ``sum log p / (length + 1)`` (length = tokens, + 1 for ``</s>``); ``length_penalty`` thus
    steers the pruning only (after normalisation it is a constant). ``scores`` is its ``sum log p``
    (tokens and ``</s>``, no penalty). length_penalty None: ``cfg.length_penalty``.

    Joint CTC / attention decoding (ESPnet's, Watanabe et al. 2017), ``ctc_weight`` ``w`` > 0 (static):
    ``sum log p`` above becomes the joint ``(1 - w) * sum log p + w * log p_ctc(h)`` everywhere (search
    score, final normalised choice, ``scores``), with ``log p_ctc(h)`` the CTC prefix log-probability of
    the hypothesis's tokens over the utterance's valid encoder frames, and for a finished one (``</s>``
    taken) the full-sequence CTC log-probability of its tokens (``ctc_prefix``); the final choice is the
    finished hypothesis with the highest ``((1 - w) * sum log p + w * log p_ctc) / (length + 1)``.
    Candidates (ESPnet's pre-beam): per unfinished hypothesis only the ``ctc_tokens`` emittable ids other
    than ``</s>`` that the decoder scores highest, plus ``</s>`` always (ours: ESPnet pre-beams
    ``</s>`` like any id; keeping it lets the CTC end probability stop a decoder that ranks ``</s>``
    low, the only thing CTC can change at beam 1); the other ids are not candidates. ctc_tokens (static) None:
    ESPnet's ``int(1.5 * beam)``, all of them when ``w == 1`` (ESPnet: no pre-beam). The pool differs
    from ``w == 0``'s, so ties can break differently; ``w == 0`` runs the attention-only search above
    unchanged.
    """
    if int(beam) < 1:
        raise ConfigError(f"beam_search: beam={beam}; expected >= 1")
    w = float(ctc_weight)
    if not 0.0 <= w <= 1.0:
        raise ConfigError(f"beam_search: ctc_weight={ctc_weight}; expected in [0, 1]")
    cfg = model.cfg
    penalty = cfg.length_penalty if length_penalty is None else length_penalty
    k, n, vocab = int(beam), cfg.max_tokens, cfg.vocab_size
    n_tok = (vocab if w == 1 else max(1, int(1.5 * k))) if ctc_tokens is None else int(ctc_tokens)
    if n_tok < 1:
        raise ConfigError(f"beam_search: ctc_tokens={ctc_tokens}; expected >= 1")
    n_tok = min(n_tok, vocab - 3)  # the emittable ids but </s>
    enc, enc_mask = model.encode(feats, mask, train=False)
    batch = enc.shape[0]
    if w > 0:  # the prefix scorer over the valid encoder frames; candidates: carry, </s>, the pre-beam tokens
        scorer = ctc_prefix.prepare(model.ctc(enc), enc_mask, blank=BLANK, eos=EOS)
    enc, enc_mask = jnp.repeat(enc, k, axis=0), jnp.repeat(enc_mask, k, axis=0)  # hypothesis b * k + j
    slots = jnp.arange(n + 1)[None, None, :]
    emittable = _emittable(vocab)
    only_eos = jnp.arange(vocab) == EOS
    neg_inf = jnp.float32(-jnp.inf)

    def body(state):
        i, buf, score, logp_sum, lengths, finished, ctc = state
        logp = _step_log_probs(model, buf.reshape(batch * k, n + 1), i, enc, enc_mask).reshape(batch, k, vocab)
        allowed = jnp.where(i < n, emittable, only_eos)[None, None, :] & ~finished[..., None]
        step = jnp.where(allowed, logp, neg_inf)
        if w == 0:  # candidate column v = id v
            ids, cand_logp, cand_score = None, logp_sum[..., None] + step, score[..., None] + step + penalty
        else:  # (B, k, 2 + n_tok) candidates: <blank> (carry), </s>, pre-beam tokens; joint score from scratch
            ids = ctc_prefix.pre_beam(step, n_tok, blank=BLANK, eos=EOS)
            step = jnp.take_along_axis(step, ids, axis=-1)
            cand_logp = logp_sum[..., None] + step
            psi, r = ctc_prefix.score(scorer, ctc, ids)
            joint = w * psi + (0.0 if w == 1 else (1 - w) * cand_logp) + penalty * (lengths[..., None] + 1)
            cand_score = jnp.where((step > neg_inf) & (score[..., None] > neg_inf), joint, neg_inf)  # dead stay dead
        # A finished hypothesis is carried over in the <blank> column (column 0), which is never an extension.
        cand_logp = cand_logp.at[..., BLANK].set(jnp.where(finished, logp_sum, neg_inf))
        cand_score = cand_score.at[..., BLANK].set(jnp.where(finished, score, neg_inf))
        width = cand_score.shape[-1]
        score, flat = jax.lax.top_k(cand_score.reshape(batch, k * width), k)
        parent = flat // width
        tok = flat % vocab if ids is None else jnp.take_along_axis(ids.reshape(batch, k * width), flat, axis=1)
        if ids is not None:
            ctc = ctc_prefix.select(scorer, ctc, ids, psi, r, flat)
        logp_sum = jnp.take_along_axis(cand_logp.reshape(batch, k * width), flat, axis=1)
        buf = jnp.take_along_axis(buf, parent[..., None], axis=1)
        emit = (tok != BLANK) & (tok != EOS)
        buf = jnp.where((slots == i + 1) & emit[..., None], tok[..., None].astype(jnp.int32), buf)
        lengths = jnp.take_along_axis(lengths, parent, axis=1) + emit
        finished = jnp.take_along_axis(finished, parent, axis=1) | (tok == EOS)
        return i + 1, buf, score, logp_sum, lengths, finished, ctc

    def cond(state):
        i, _, score, _, _, finished, _ = state
        return (i <= n) & jnp.any(~finished & (score > neg_inf))  # dead slots (-inf) never count

    buf = jnp.zeros((batch, k, n + 1), jnp.int32).at[..., 0].set(SOS)
    start = jnp.full((batch, k), neg_inf).at[:, 0].set(0.0)
    ctc = ctc_prefix.init_state(scorer, k) if w > 0 else ()
    state = (jnp.int32(0), buf, start, start, jnp.zeros((batch, k), jnp.int32), jnp.zeros((batch, k), bool), ctc)
    _, buf, _, logp_sum, lengths, finished, ctc = jax.lax.while_loop(cond, body, state)
    if w > 0:  # the joint score, penalty excluded; ctc.log_psi is the full-sequence CTC term once finished
        logp_sum = w * ctc.log_psi + (0.0 if w == 1 else (1 - w) * logp_sum)
    normalised = jnp.where(finished, logp_sum / (lengths + 1).astype(jnp.float32), neg_inf)
    best = jnp.argmax(normalised, axis=1)[:, None]
    pick = lambda x: jnp.take_along_axis(x, best, axis=1)[:, 0]  # noqa: E731
    return dict(tokens=jnp.take_along_axis(buf, best[..., None], axis=1)[:, 0, 1:], lengths=pick(lengths),
                scores=pick(logp_sum))


__all__ = [
    "ARASRConfig", "PAPER", "TINY", "PRESETS", "SOS", "EOS", "UNK", "sinusoidal_positions", "ARDecoder",
    "add_sos_eos", "ARASR", "ar_asr_loss", "greedy_decode", "beam_search",
]
