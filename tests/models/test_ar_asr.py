"""AR ASR baseline: decoder causality, teacher forcing and losses against NumPy / torch, greedy and beam
search against a plain-Python beam search, padding invariance, and a tiny model learning 4 utterances."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.models import ar_asr as A
from jaxaudio.models import paraformer as P

GREEDY = nnx.jit(A.greedy_decode)
BEAM = nnx.jit(A.beam_search, static_argnames="beam")
DECODE = nnx.jit(lambda model, *args: model.decode_logits(*args, train=False))
# vocab 8 (ids 4..7 are tokens), 5 decoding slots: small enough for an exhaustive-ish Python reference.
SMALL = dataclasses.replace(A.TINY, vocab_size=8, max_tokens=5)


def key(seed):
    """RBG keys: XLA compiles their random ops faster than threefry's (busy CI CPUs)."""
    return jax.random.key(seed, impl="rbg")


def lengths_mask(lengths, width):
    return jnp.arange(width)[None, :] < jnp.asarray(lengths)[:, None]


def sharpened(cfg, seed, *, eos_bias=0.0):
    """A random model whose outputs depend on the audio (token embeddings scaled down, a fresh model's
    sqrt(d)-scaled embeddings drown the cross-attention) and are peaked (output layer x 2), with ``eos_bias``
    added to the </s> logit: hypotheses then differ across utterances and end at different lengths."""
    model = A.ARASR(cfg, rngs=nnx.Rngs(seed))
    model.decoder.embed.embedding[...] = model.decoder.embed.embedding[...] * 0.3
    out = model.decoder.output_layer
    out.kernel[...] = out.kernel[...] * 2.0
    out.bias[...] = out.bias[...].at[A.EOS].add(eos_bias)
    return model


def test_positional_table_is_espnets():
    length, dim = 7, 8
    pe = np.zeros((length, dim))
    position = np.arange(length)[:, None]
    div_term = np.exp(np.arange(0, dim, 2) * -(math.log(10000.0) / dim))
    pe[:, 0::2], pe[:, 1::2] = np.sin(position * div_term), np.cos(position * div_term)
    np.testing.assert_allclose(np.asarray(A.sinusoidal_positions(length, dim)), pe, atol=1e-6)


def test_decoder_is_causal():
    model = A.ARASR(A.TINY, rngs=nnx.Rngs(0))
    enc = jax.random.normal(key(0), (2, 6, 32))
    enc_mask = lengths_mask([6, 4], 6)
    tokens = jax.random.randint(key(1), (2, 7), 4, 12)
    mask = jnp.ones((2, 7), bool)
    base = DECODE(model, tokens, mask, enc, enc_mask)
    k = 3
    changed = tokens.at[:, k:].set((tokens[:, k:] - 4 + 3) % 8 + 4)  # another token at every position >= k
    other = DECODE(model, changed, mask, enc, enc_mask)
    np.testing.assert_allclose(np.asarray(other[:, :k]), np.asarray(base[:, :k]), atol=1e-6)
    assert float(jnp.abs(other[:, k:] - base[:, k:]).max(axis=-1).min()) > 1e-4  # every later position moves
    # the first position is not blind to the embedding: <s> vs another first token changes it
    first = DECODE(model, tokens.at[:, 0].set(A.SOS), mask, enc, enc_mask)
    assert float(jnp.abs(first[:, 0] - base[:, 0]).max()) > 1e-4
    # positions are encoded: one token repeated (identical keys, values at every step) still gives each
    # position its own logits, which causal attention alone could not
    same = DECODE(model, jnp.full((2, 7), 5), mask, enc, enc_mask)
    assert float(jnp.abs(same[:, 1:] - same[:, :1]).max(axis=-1).min()) > 1e-4


def test_teacher_forcing_and_loss_match_numpy_and_torch():
    cfg = A.TINY
    model = A.ARASR(cfg, rngs=nnx.Rngs(1))
    feats = jax.random.normal(key(2), (3, 32, 20))
    mask = lengths_mask([32, 28, 24], 32)
    targets = np.array([[4, 5, 6, 7], [8, 9, 3, 11], [10, 4, 0, 0]])
    target_lengths = np.array([4, 2, 1])  # padded entries hold arbitrary ids
    forward = nnx.jit(lambda model, *args: model(*args, train=False))
    out = forward(model, feats, mask, jnp.asarray(targets), jnp.asarray(target_lengths))
    width = targets.shape[1] + 1
    ys_in = np.zeros((3, width), int)
    ys_out = np.zeros((3, width), int)
    for b, n in enumerate(target_lengths):
        ys_in[b, :n + 1] = [A.SOS, *targets[b, :n]]
        ys_out[b, :n + 1] = [*targets[b, :n], A.EOS]
    valid = np.arange(width)[None, :] <= target_lengths[:, None]
    np.testing.assert_array_equal(np.asarray(out["decoder_targets"]), ys_out)
    np.testing.assert_array_equal(np.asarray(out["decoder_mask"]), valid)
    enc, enc_mask = nnx.jit(lambda model, *args: model.encode(*args, train=False))(model, feats, mask)
    by_hand = DECODE(model, jnp.asarray(ys_in), jnp.asarray(valid), enc, enc_mask)
    np.testing.assert_allclose(np.asarray(out["logits"])[valid], np.asarray(by_hand)[valid], atol=1e-5)

    losses = jax.jit(A.ar_asr_loss, static_argnums=3)(out, jnp.asarray(targets), jnp.asarray(target_lengths), cfg)
    logits = np.asarray(out["logits"], np.float64)
    eps, vocab, total, correct = cfg.label_smoothing, cfg.vocab_size, 0.0, 0
    for b in range(3):
        for i in range(target_lengths[b] + 1):
            z = logits[b, i] - logits[b, i].max()
            logp = z - np.log(np.exp(z).sum())
            q = np.full(vocab, eps / (vocab - 1))
            q[ys_out[b, i]] = 1 - eps
            total += float(np.sum(q * (np.log(q) - logp)))
            correct += int(np.argmax(logits[b, i]) == ys_out[b, i])
    np.testing.assert_allclose(float(losses["ce"]), total / 3, rtol=1e-5)
    np.testing.assert_allclose(float(losses["accuracy"]), correct / valid.sum(), rtol=1e-6)

    ctc_logits = torch.from_numpy(np.array(out["ctc_logits"], np.float32))
    frames = torch.from_numpy(np.asarray(out["enc_mask"]).sum(1))
    flat = torch.cat([torch.from_numpy(targets[b, :n]) for b, n in enumerate(target_lengths)])
    ref_ctc = torch.nn.functional.ctc_loss(torch.log_softmax(ctc_logits, -1).transpose(0, 1), flat, frames,
                                           torch.from_numpy(target_lengths), blank=0, reduction="sum") / 3
    np.testing.assert_allclose(float(losses["ctc"]), ref_ctc.item(), rtol=1e-5)
    np.testing.assert_allclose(float(losses["loss"]), 0.3 * ref_ctc.item() + 0.7 * total / 3, rtol=1e-5)


def test_beam_one_is_greedy():
    model = sharpened(A.TINY, 7)
    feats = jax.random.normal(key(4), (4, 32, 20))
    mask = lengths_mask([32, 30, 26, 20], 32)
    greedy = GREEDY(model, feats, mask)
    beam = BEAM(model, feats, mask, beam=1)
    lengths = np.asarray(greedy["lengths"])
    assert len(set(lengths.tolist())) > 1, lengths  # utterances end at different steps
    np.testing.assert_array_equal(np.asarray(beam["tokens"]), np.asarray(greedy["tokens"]))
    np.testing.assert_array_equal(np.asarray(beam["lengths"]), lengths)
    tokens = np.asarray(greedy["tokens"])
    assert (tokens[np.arange(8)[None, :] >= lengths[:, None]] == 0).all()
    assert not np.isin(tokens[np.arange(8)[None, :] < lengths[:, None]], [P.BLANK, A.SOS, A.EOS]).any()


ENCODE = nnx.jit(lambda model, feats, mask: model.encode(feats, mask, train=False))
NEXT = nnx.jit(lambda model, prefix, enc, enc_mask: model.decode_logits(prefix, jnp.ones(prefix.shape, bool), enc,
                                                                        enc_mask, train=False)[0, -1])


def reference_beam_search(model, enc, enc_mask, beam, penalty):
    """Plain Python over one utterance's encoder output ``(1, T', d)``: lists of (search score, sum log p,
    tokens, finished), the decoder run on each growing prefix, sort, prune; ``beam_search``'s documented
    rule. Also says whether the length normalisation changed the choice and whether finished and open
    hypotheses ever shared the beam."""
    cfg = model.cfg
    hyps, mixed = [(0.0, 0.0, (), False)], False
    for step in range(cfg.max_tokens + 1):
        if all(h[3] for h in hyps):
            break
        mixed |= any(h[3] for h in hyps)
        candidates = []
        for score, logp_sum, tokens, finished in hyps:
            if finished:
                candidates.append((score, logp_sum, tokens, True))
                continue
            logits = np.asarray(NEXT(model, jnp.asarray([[A.SOS, *tokens]]), enc, enc_mask), np.float64)
            logp = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
            ids = [A.EOS] if step == cfg.max_tokens else range(2, cfg.vocab_size)  # no <blank>, no <s>
            for v in ids:
                candidates.append((score + logp[v] + penalty, logp_sum + logp[v],
                                   tokens if v == A.EOS else tokens + (v,), v == A.EOS))
        hyps = sorted(candidates, key=lambda h: -h[0])[:beam]
    best = max(hyps, key=lambda h: h[1] / (len(h[2]) + 1))
    raw_best = max(hyps, key=lambda h: h[1])
    return best[2], best[1], best[2] != raw_best[2], mixed


@pytest.mark.parametrize("penalty", [0.0, 1.0])
def test_beam_search_matches_python_reference(penalty):
    model = sharpened(SMALL, 5)
    lengths = [32, 27, 22, 18]
    feats = jax.random.normal(key(6), (4, 32, 20))
    mask = lengths_mask(lengths, 32)
    out = BEAM(model, feats, mask, beam=3, length_penalty=penalty)
    enc, enc_mask = ENCODE(model, feats, mask)  # one padded batch: the same shapes for every utterance
    normalisation_mattered, mixed, ends, penalty_mattered = False, False, set(), False
    for b in range(len(lengths)):
        tokens, score, mattered, shared = reference_beam_search(model, enc[b:b + 1], enc_mask[b:b + 1], 3, penalty)
        normalisation_mattered, mixed = normalisation_mattered | mattered, mixed | shared
        ends.add(len(tokens))
        if penalty:
            penalty_mattered |= reference_beam_search(model, enc[b:b + 1], enc_mask[b:b + 1], 3, 0.0)[0] != tokens
        n = int(out["lengths"][b])
        assert np.asarray(out["tokens"][b, :n]).tolist() == list(tokens), (b, out["tokens"][b], tokens)
        assert (np.asarray(out["tokens"][b, n:]) == 0).all()
        np.testing.assert_allclose(float(out["scores"][b]), score, atol=1e-5)
    # the cases exercise what they should: finished hypotheses kept in the beam next to open ones; without
    # a penalty, choices of different lengths, some changed by the length normalisation; with one, some
    # choices changed by the penalty
    assert mixed
    if penalty:
        assert penalty_mattered
    else:
        assert len(ends) > 1 and normalisation_mattered, ends


def test_decoding_padding_invariance():
    model = sharpened(A.TINY, 3, eos_bias=-0.5)
    long = jax.random.normal(key(8), (1, 48, 20))
    short = jax.random.normal(key(9), (1, 32, 20))
    batch = jnp.concatenate([long, jnp.pad(short, ((0, 0), (0, 16), (0, 0)), constant_values=3.0)])
    mask = lengths_mask([48, 32], 48)
    for decode in (GREEDY, lambda m, x, mk: BEAM(m, x, mk, beam=3)):
        alone = decode(model, short, jnp.ones((1, 32), bool))
        both = decode(model, batch, mask)
        assert int(alone["lengths"][0]) >= 1
        np.testing.assert_array_equal(np.asarray(both["tokens"][1]), np.asarray(alone["tokens"][0]))
        np.testing.assert_array_equal(np.asarray(both["lengths"][1]), np.asarray(alone["lengths"][0]))
        if "scores" in alone:
            np.testing.assert_allclose(float(both["scores"][1]), float(alone["scores"][0]), atol=1e-5)


def test_tiny_ar_asr_learns_four_utterances():
    cfg = A.TINY
    model = A.ARASR(cfg, rngs=nnx.Rngs(0))
    feats = jax.random.normal(key(0), (4, 44, 20))
    mask = lengths_mask([44, 40, 44, 36], 44)
    targets = jnp.array([[4, 5, 6, 0, 0], [7, 8, 9, 10, 0], [11, 4, 8, 6, 5], [9, 5, 11, 7, 0]])
    target_lengths = jnp.array([3, 4, 5, 4])
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        def loss_fn(model):
            out = model(feats, mask, targets, target_lengths, train=True)
            losses = A.ar_asr_loss(out, targets, target_lengths, cfg)
            return losses["loss"], losses

        (_, losses), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        return losses

    history = [float(step(model, optimizer)["loss"]) for _ in range(200)]
    expected = np.zeros((4, cfg.max_tokens), int)
    expected[:, :5] = np.asarray(targets)
    for decoded in (GREEDY(model, feats, mask), BEAM(model, feats, mask, beam=3)):
        assert np.asarray(decoded["lengths"]).tolist() == target_lengths.tolist(), history[::50]
        np.testing.assert_array_equal(np.asarray(decoded["tokens"]), expected)
    assert np.mean(history[-10:]) <= 0.3 * np.mean(history[:5]), history[::50]


def test_config_errors_name_the_key():
    cfg = A.PAPER
    assert (cfg.decoder_layers, cfg.decoder_heads, cfg.decoder_ffn, cfg.decoder_dropout) == (6, 4, 2048, 0.1)
    assert (cfg.ctc_weight, cfg.label_smoothing, cfg.ce_weight) == (0.3, 0.1, pytest.approx(0.7))
    assert (cfg.encoder.blocks, cfg.encoder.d_model, cfg.encoder.heads, cfg.encoder.ffn_dim,
            cfg.encoder.kernel) == (12, 256, 4, 2048, 15)
    assert A.TINY.encoder == P.TINY.encoder and A.PRESETS == {"paper": A.PAPER, "tiny": A.TINY}
    for kwargs, name in [(dict(decoder_heads=3), "decoder_heads"), (dict(vocab_size=4), "vocab_size"),
                         (dict(decoder_layers=0), "decoder_layers"), (dict(max_tokens=0), "max_tokens"),
                         (dict(ctc_weight=1.5), "ctc_weight"), (dict(label_smoothing=-0.1), "label_smoothing"),
                         (dict(decoder_dropout=1.0), "decoder_dropout"),
                         (dict(decoder_attention_dropout=-0.1), "decoder_attention_dropout"),
                         (dict(length_penalty=float("nan")), "length_penalty")]:
        with pytest.raises(ConfigError, match=f"ARASRConfig.{name}"):
            A.ARASRConfig(**kwargs)
    with pytest.raises(ConfigError, match="beam"):
        A.beam_search(A.ARASR(A.TINY, rngs=nnx.Rngs(0)), jnp.zeros((1, 16, 20)), beam=0)
