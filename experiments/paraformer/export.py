"""The export form of Paraformer: one zero-padded waveform -> token ids, token count and CIF fire frames.

    python experiments/run.py --exp=paraformer --mode=export --workdir=W [--formats float32,int8]

Input: ``inputs (1, samples)`` float32 in [-1, 1] at ``config.data.sample_rate``, the utterance
followed by zeros. ``samples`` is fixed when the model is built (``input_samples``: the longest
training bucket or the longest test utterance, whichever is longer, in whole tenths of a second).
The utterance's length is read from the waveform itself: it ends at its last nonzero sample
(``audio_length``). Why not a second input: the exporter, its verification and its timing feed
one input per model (``jaxaudio.export``), and a caller that zero-pads needs no other convention.
What that costs: exact zeros at the very end of the utterance count as padding, and the fbank
loses its last frame when they straddle a frame boundary; they are silence. In the built-in tiny
corpus 15 of its 4,600 utterances end on a zero sample (16-bit, with background noise), one of
them loses a frame, and none of the 400 test utterances does.

Outputs (``jaxaudio.export.Output``, read by name through the TFLite signature):

  tokens       TOKEN_IDS  (1, max_tokens) int32, the greedy decode, blank (0) past ``token_len``;
               the labels are the run's token list.
  token_len    INTEGERS   (1,) int32, ``min(floor(sum alpha), max_tokens)`` (FunASR's token count).
  fire_frames  INTEGERS   (1, max_tokens) int32, the encoder frame (40 ms at a 10 ms hop) at which
               each token fired, -1 past ``token_len``; the tail frame is the utterance's encoder length.

These are the System's ``decode`` outputs, so the held-out score is the run's own ``ASREvaluator``
(CER and its parts) on the test voices, with the same references and tokenizer as training's
final evaluation.

Export-only forms (``export=True``; training and evaluation keep theirs):

* Front end: ``jaxaudio.export.frontend.log_mel``, the DFT as a matrix (Kaldi's DC removal and
  pre-emphasis folded into it); training uses ``jnp.fft``.
* CIF: ``closed_form_integrate_and_fire`` replaces the ``lax.scan`` of ``nn/cif.py`` (one fire
  per frame, threshold 1) by comparisons of the cumulative weights with the integers, and the
  embeddings by one matmul with a (tokens, frames) weight matrix: no loop, no scatter.
* Decoder: the token slots past the count hold a +-1 pattern instead of zeros
  (``fill_empty_slots``: float16 would turn their LayerNorm into NaN), then ``ParaformerDecoder``
  runs layer by layer as its ``__call__`` does, with the output layer and the argmax
  (``first_argmax``, which keeps its name scope) under ``HEAD_SCOPE``. The valid slots decode
  exactly as ``greedy_decode``'s.

int8 keeps in float: the front end (and, as the exporter does, everything upstream of it: the
waveform, the length), ``CIF_SCOPE`` (the predictor's weights alpha, the tail, the cumulative sums,
the fire decisions and the weighted sums; an int8 alpha moves in steps of 1/256, and its sum over
a hundred frames decides the token count), ``HEAD_SCOPE`` (the output layer and argmax: int8
logits tie, and argmax then picks the smaller id) and, by ``FLOAT_RANGE_LIMIT``, the attention's
masking: its logits are filled with the lowest float32 on padded keys (``nn/attention.py``), and
an int8 tensor spanning -3.4e38 rounds every real logit to one level (uniform attention: the
tiny run's int8 test CER was 0.52 against JAX's 0.14 before this rule).
"""
from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxaudio.audio import features
from jaxaudio.errors import ConfigError
from jaxaudio.nn import cif

TOKENS, TOKEN_LEN, FIRE_FRAMES = "tokens", "token_len", "fire_frames"
CIF_SCOPE = "paraformer_cif"
HEAD_SCOPE = "paraformer_head"
# int8 keeps in float the ops around tensors whose calibrated range passes this
# (``InferenceModel.float_range_limit``): the lowest-float fill of masked attention logits (one
# SELECT's int8 scale of 1.3e36 rounds every logit to one level and the attention to uniform
# weights). Ordinary activations (the residual stream, up to a few hundred; a LayerNorm's sum of
# squares, 2e4 in the tiny run) stay int8.
FLOAT_RANGE_LIMIT = 1e5
# Listed in the export report next to CER (ASREvaluator's keys).
REPORT_METRICS = ("sub", "del", "ins", "sentence_error_rate")


# ----------------------------------------------------------------------------- CIF without a loop

def cumulative_sum(x: jax.Array) -> jax.Array:
    """``cumsum`` over the last axis as a ``reduce_window`` (each output the sum of its prefix):
    ``jnp.cumsum`` lowers on CPU to an associative scan of slices and pads, which the TFLite
    converter keeps as dozens of ops."""
    time = x.shape[-1]
    dims = (1,) * (x.ndim - 1) + (time,)
    strides = (1,) * x.ndim
    padding = ((0, 0),) * (x.ndim - 1) + ((time - 1, 0),)
    return jax.lax.reduce_window(x, jnp.zeros((), x.dtype), jax.lax.add, dims, strides, padding)


def closed_form_integrate_and_fire(hidden: jax.Array, alpha: jax.Array, max_tokens: int):
    """``nn.cif.integrate_and_fire`` with threshold 1 for weights ``0 <= alpha <= 1``, without ``lax.scan``.

    With ``S_t`` the cumulative weight after frame t (``S_{-1} = 0``), token n (0-based) fires at
    the first frame with ``S_t >= n + 1`` ("exactly at the threshold" fires, as in FunASR), and
    frame t gives token n the part of its weight that lies in ``[n, n + 1)`` of the cumulative axis:

        w[n, t] = max(0, min(S_t, n + 1) - max(S_{t-1}, n)),     embedding_n = sum_t w[n, t] h_t

    which is the scan's split at a fire: ``1 - acc`` completes the firing token, the rest
    ``alpha_t - (1 - acc)`` starts the next one (``acc = S_{t-1} - n``). With ``alpha_t <= 1`` a
    frame crosses at most one integer, so a frame fires at most once, as in the scan. The two
    agree exactly in exact arithmetic; in float32 the scan accumulates a remainder below 1 while
    ``S_t`` grows, so a fire whose crossing lies within a few ulp of ``S_t`` (about 1e-6 for a
    hundred frames) can move by a frame, and the embeddings differ by rounding.

    Returns ``(embeddings (B, max_tokens, D), token_mask (B, max_tokens) bool, fire_positions
    (B, max_tokens) int32)`` as ``integrate_and_fire``: slot n holds the n-th fired token; slots
    that never fire are zero, False and -1.
    """
    batch, time, _ = hidden.shape
    alpha = alpha.astype(hidden.dtype)
    total = cumulative_sum(alpha)                                                  # S_t
    before = jnp.concatenate([jnp.zeros_like(total[:, :1]), total[:, :-1]], axis=1)  # S_{t-1}
    n = jax.lax.iota(hidden.dtype, max_tokens)[None, :, None]                       # (1, N, 1)
    upper = jnp.minimum(total[:, None, :], n + 1.0)
    lower = jnp.maximum(before[:, None, :], n)
    weights = jnp.maximum(upper - lower, 0.0)                                       # (B, N, T)
    reached = total[:, None, :] >= n + 1.0                                          # (B, N, T)
    token_mask = reached[:, :, -1]
    embeddings = jnp.einsum("bnt,btd->bnd", weights, hidden, precision="highest")
    embeddings = embeddings * token_mask[..., None].astype(hidden.dtype)
    first = time - jnp.sum(reached.astype(jnp.int32), axis=-1)   # the first frame with S_t >= n + 1
    fire_positions = jnp.where(token_mask, first, -1).astype(jnp.int32)
    return embeddings, token_mask, fire_positions


def closed_form_cif_inference(hidden: jax.Array, alpha: jax.Array, mask: jax.Array, max_tokens: int,
                              threshold: float = cif.THRESHOLD, tail_threshold: float = cif.TAIL_THRESHOLD):
    """``nn.cif.cif_inference`` through ``closed_form_integrate_and_fire``: ``add_tail``, then the
    fires; ``token_num`` is ``floor`` of the last cumulative weight, so it always equals the number
    of fires (``cif_inference`` floors ``jnp.sum``, which can differ from its scan by rounding).
    Returns ``(embeddings, token_mask, token_num (B,) int32, fire_positions)``."""
    if float(threshold) != 1.0:
        raise ConfigError(f"paraformer.threshold={threshold}: the export form of CIF fires at integer crossings of "
                          "the cumulative weight, i.e. threshold 1 (FunASR's); export a model trained with 1.0")
    hidden, alpha, _ = cif.add_tail(hidden, alpha, mask, tail_threshold)
    embeddings, token_mask, fire_positions = closed_form_integrate_and_fire(hidden, alpha, max_tokens)
    total = cumulative_sum(alpha.astype(hidden.dtype))[:, -1]
    token_num = jnp.floor(total).astype(jnp.int32)
    return embeddings, token_mask, token_num, fire_positions


# ----------------------------------------------------------------------------- the graph

def audio_length(waveform: jax.Array) -> jax.Array:
    """``(B, samples) -> (B,) int32``: one past the last nonzero sample (0 for silence)."""
    positions = jax.lax.iota(jnp.int32, waveform.shape[-1]) + 1
    return jnp.max(jnp.where(waveform != 0, positions, 0), axis=-1)


def first_argmax(x: jax.Array) -> jax.Array:
    """``argmax`` over the last axis (the first index of the maximum, as ``jnp.argmax``), spelled
    with ``lax`` reductions: ``jnp.argmax`` / ``lax.argmax`` lower to a variadic reduce that the
    converter turns into an ARG_MAX carrying no name scope, so int8 would quantize the logits it
    reads (and near-ties would then tie). A row without a maximum (NaN) gives the last index, a
    valid id, where ``jnp.argmax`` gives the NaN's."""
    last = x.ndim - 1
    top = jax.lax.broadcast_in_dim(jax.lax.reduce_max(x, (last,)), x.shape, tuple(range(last)))
    index = jax.lax.broadcasted_iota(jnp.int32, x.shape, last)
    beyond = jnp.full(x.shape, x.shape[-1] - 1, jnp.int32)
    return jax.lax.reduce_min(jax.lax.select(jax.lax.eq(x, top), index, beyond), (last,))


def decoder_logits_and_ids(decoder, acoustic, token_mask, enc, enc_mask):
    """``ParaformerDecoder.__call__`` (eval mode) and the masked argmax, the output layer and the
    argmax under ``HEAD_SCOPE``: ``(logits (B, L, V), ids (B, L) int32)``."""
    from jaxaudio.models.paraformer import BLANK

    token_mask, enc_mask = token_mask.astype(bool), enc_mask.astype(bool)
    x = acoustic
    for layer in decoder.decoders:
        x = layer(x, token_mask, enc, enc_mask, train=False)
    x = decoder.after_norm(x)
    with jax.named_scope(HEAD_SCOPE):
        logits = decoder.output_layer(x)
        ids = jnp.where(token_mask, first_argmax(logits), BLANK).astype(jnp.int32)
    return logits, ids


def fill_empty_slots(acoustic: jax.Array, token_mask: jax.Array) -> jax.Array:
    """The slots past the token count hold +-1 (alternating over the channels) instead of zeros.

    Why: the decoder's first LayerNorm of an all-zero row divides 0 by ``sqrt(eps)``, eps 1e-12;
    the float16 variant stores that constant as 0 (it underflows), so the row turns to 0/0 = NaN,
    and the attention spreads it to every slot (a masked key's weight is 0, but 0 * NaN is NaN);
    int8 would calibrate ``1/sqrt(eps) = 1e6`` into that op's range. The valid slots' outputs do
    not change: the self-attention gives masked keys exactly zero weight, and every other layer
    works slot by slot.
    """
    sign = 1.0 - 2.0 * (jax.lax.iota(jnp.int32, acoustic.shape[-1]) % 2).astype(acoustic.dtype)
    return jnp.where(token_mask[..., None], acoustic, sign)


def export_decode(model, feats: jax.Array, mask: jax.Array) -> dict:
    """``system.decode`` with the export forms: ``{tokens, token_len, fire_frames}``."""
    cfg = model.cfg
    enc, enc_mask = model.encoder(feats, mask, train=False)
    with jax.named_scope(CIF_SCOPE):
        alpha = model.predictor(enc, enc_mask, train=False)
        acoustic, token_mask, token_num, fire_positions = closed_form_cif_inference(
            enc, alpha, enc_mask, cfg.max_tokens, cfg.threshold, cfg.tail_threshold)
        acoustic = fill_empty_slots(acoustic, token_mask)
    _, ids = decoder_logits_and_ids(model.decoder, acoustic, token_mask, enc, enc_mask)
    return {TOKENS: ids, TOKEN_LEN: jnp.minimum(token_num, cfg.max_tokens).astype(jnp.int32),
            FIRE_FRAMES: fire_positions}


def export_features(config, waveform: jax.Array):
    """Normalised fbank and its mask from the zero-padded waveform, all under the front end's scope
    (``experiments/asr/data.py: device_features`` with the export log-mel and ``audio_length``)."""
    from experiments.asr import data as asr_data
    from jaxaudio.export import frontend as export_frontend

    fe = asr_data.frontend_config(config)
    mean, std = asr_data.cmvn_arrays(config)
    with jax.named_scope(features.FRONTEND_SCOPE):
        length = audio_length(waveform)
        feats = export_frontend.log_mel(waveform, fe)
        mask = jax.lax.iota(jnp.int32, feats.shape[1])[None, :] < asr_data.fbank_frames(length, fe)[:, None]
        feats = (feats - mean) / std * mask[..., None].astype(feats.dtype)
    return feats, mask


def input_samples(config, test_samples: int) -> int:
    """The exported input length: the longest training bucket or ``test_samples``, whichever is
    longer, rounded up to a tenth of a second."""
    rate = int(config.data.sample_rate)
    tenth = rate // 10
    bucket = int(round(max(config.data.buckets_s) * rate))
    return int(math.ceil(max(bucket, int(test_samples)) / tenth) * tenth)


def padded(wave: np.ndarray, samples: int) -> np.ndarray:
    out = np.zeros(samples, np.float32)
    out[: len(wave)] = wave
    return out


def graphdef_of(config):
    """The ``nnx`` graph of the run's Paraformer (no weights are initialised)."""
    from experiments.paraformer import system as paraformer_system
    from jaxaudio.models import paraformer as paraformer_model

    mcfg = paraformer_system.model_config(config)
    return nnx.split(nnx.eval_shape(lambda: paraformer_model.Paraformer(mcfg, rngs=nnx.Rngs(0))), nnx.Param, ...)[0]


def forward(config, graphdef, *, export: bool = True):
    """``fn(variables {params, model_state}, waveform (B, samples)) -> {tokens, token_len, fire_frames}``.

    ``export=False``: the training-time graph (``experiments/asr/data.py: device_features`` with
    the ``jnp.fft`` fbank, ``system.decode``: ``greedy_decode`` with the ``lax.scan`` CIF), the same
    input (its length by ``audio_length``) and outputs, for checking the export form against.
    """
    from experiments.asr import data as asr_data
    from experiments.paraformer import system as paraformer_system

    def fn(variables, waveform):
        model = nnx.merge(graphdef, variables["params"], variables["model_state"])
        if export:
            return export_decode(model, *export_features(config, waveform))
        feats, mask = asr_data.device_features(config, waveform, audio_length(waveform))
        out = paraformer_system.decode(model, feats, mask)
        return {TOKENS: out["tokens"], TOKEN_LEN: out["token_len"].astype(jnp.int32), FIRE_FRAMES: out["fire_frames"]}

    return fn


def declared_outputs(tokens):
    """The ``Output`` declarations; ``tokens``: the run's token list (the labels of the ids)."""
    from jaxaudio.export.model import INTEGERS, TOKEN_IDS, Output

    return (Output(TOKENS, TOKEN_IDS, tuple(tokens)), Output(TOKEN_LEN, INTEGERS), Output(FIRE_FRAMES, INTEGERS))


# What int8 keeps in float besides the front end (module docstring).
INT8_OPTIONS = {"float_scopes": (CIF_SCOPE, HEAD_SCOPE), "float_range_limit": FLOAT_RANGE_LIMIT}


def inference_model(config, workdir: str, *, export: bool = True):
    """The finished final stage (its teacher if the run has one) as zero-padded waveform ->
    ``{tokens, token_len, fire_frames}`` (``forward``). Held out: the test split (the held-out
    voices) in its order, scored by the run's test ``ASREvaluator``; calibration: training
    utterances spread evenly over the split (those that fit the input)."""
    from experiments.asr import data as asr_data
    from experiments.paraformer import system as paraformer_system
    from jaxaudio.export.model import HeldOut, InferenceModel
    from jaxaudio.train.trainer import restore_final

    system = paraformer_system.SYSTEM
    _, state, _ = restore_final(system, config, workdir)
    if state.teacher is not None:
        who, params, model_state = "teacher", state.teacher["params"], state.teacher["model_state"]
    else:
        who, params, model_state = "student", state.params, state.model_state
    data = asr_data.ASRData(config)
    evaluator = asr_data.evaluators(config)["test"]
    samples = input_samples(config, evaluator.source.samples)
    step = int(np.asarray(jax.device_get(state.step)))

    def calibration(n: int) -> np.ndarray:
        source = data.source("train")
        fits = np.flatnonzero(np.asarray(source.lengths) <= samples)
        picks = fits[np.linspace(0, len(fits) - 1, num=min(n, len(fits))).round().astype(int)]
        return np.stack([padded(source.audio(int(i)), samples) for i in picks])

    def held_out(max_examples: int) -> HeldOut:
        source = evaluator.source
        count = len(source) if max_examples <= 0 else min(max_examples, len(source))
        positions = np.arange(count)
        waves = np.stack([padded(source.audio(int(i)), samples) for i in positions])
        ids = tuple(str(source.files[int(i)]) for i in positions)
        return HeldOut(waves, ids, lambda outputs: evaluator.score_arrays(
            {TOKENS: outputs[TOKENS], TOKEN_LEN: outputs[TOKEN_LEN]}, positions))

    return InferenceModel(
        name="paraformer", fn=forward(config, graphdef_of(config), export=export),
        variables={"params": params, "model_state": model_state}, input_shape=(samples,),
        outputs=declared_outputs(data.tokenizer.tokens), primary_metric="cer", higher_is_better=False,
        report_metrics=REPORT_METRICS, sample_rate=int(config.data.sample_rate), calibration=calibration,
        held_out=held_out, source=f"{os.path.abspath(workdir)} ({system.final_stage(config)} {who}, step {step})",
        **INT8_OPTIONS)
