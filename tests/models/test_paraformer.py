"""Paraformer: losses against torch / NumPy, the glancing sampler by hand, decoder masks, padding
invariance of greedy decoding, and a tiny model learning 4 utterances."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

from jaxaudio.models import paraformer as P


def key(seed):
    """RBG keys: XLA compiles their random ops faster than threefry's (busy CI CPUs)."""
    return jax.random.key(seed, impl="rbg")


def lengths_mask(lengths, width):
    return jnp.arange(width)[None, :] < jnp.asarray(lengths)[:, None]


def test_ctc_matches_torch_sum_over_batch():
    rng = np.random.default_rng(0)
    batch, frames, vocab = 3, 12, 7
    logits = rng.normal(size=(batch, frames, vocab)).astype(np.float32)
    frame_lengths = np.array([12, 9, 7])
    targets = np.array([[1, 2, 2, 3], [4, 5, 6, 6], [6, 1, 3, 2]])  # padded entries hold arbitrary ids
    target_lengths = np.array([4, 2, 3])
    ours = P.ctc_loss(jnp.asarray(logits), lengths_mask(frame_lengths, frames), jnp.asarray(targets),
                      jnp.asarray(target_lengths))
    log_probs = torch.log_softmax(torch.from_numpy(logits), -1).transpose(0, 1)
    flat = torch.cat([torch.from_numpy(targets[i, :n]) for i, n in enumerate(target_lengths)])
    ref = torch.nn.functional.ctc_loss(log_probs, flat, torch.from_numpy(frame_lengths),
                                       torch.from_numpy(target_lengths), blank=0, reduction="sum") / batch
    np.testing.assert_allclose(float(ours), ref.item(), rtol=1e-5)


@pytest.mark.parametrize("eps", [0.1, 0.0])
def test_label_smoothing_matches_numpy(eps):
    rng = np.random.default_rng(1)
    batch, length, vocab = 2, 4, 6
    logits = rng.normal(size=(batch, length, vocab)).astype(np.float64)
    targets = np.array([[1, 5, 2, 0], [3, 3, 4, 4]])
    valid = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
    total = 0.0
    for b in range(batch):
        for i in range(length):
            if not valid[b, i]:
                continue
            z = logits[b, i] - logits[b, i].max()
            logp = z - np.log(np.exp(z).sum())
            q = np.full(vocab, eps / (vocab - 1))
            q[targets[b, i]] = 1 - eps
            total += sum(q[c] * (np.log(q[c]) - logp[c]) for c in range(vocab) if q[c] > 0)
    ours = P.label_smoothing_loss(jnp.asarray(logits, jnp.float32), jnp.asarray(targets), jnp.asarray(valid), eps)
    np.testing.assert_allclose(float(ours), total / batch, rtol=1e-5)


def _glance_case():
    vocab, dim = 6, 3
    table = jnp.arange(vocab * dim, dtype=jnp.float32).reshape(vocab, dim) + 100.0
    targets = jnp.array([[1, 2, 3, 4, 5], [2, 3, 4, 5, 0], [5, 4, 3, 0, 0]])
    mask = lengths_mask([5, 4, 3], 5)
    predicted = jnp.array([[0, 0, 0, 0, 0],   # 0 of 5 right -> floor(5 * 0.4) = 2 replaced
                           [2, 0, 0, 0, 1],   # 1 of 4 right -> floor(3 * 0.4) = 1
                           [5, 4, 3, 1, 1]])  # all right -> 0
    first = jax.nn.one_hot(predicted, vocab) * 5.0
    acoustic = jax.random.normal(key(0), (3, 5, dim))
    return table, targets, mask, first, acoustic


def test_glancing_sample_hand_case():
    table, targets, mask, first, acoustic = _glance_case()
    seen = set()
    for seed in range(8):
        semantic, replaced = P.glancing_sample(acoustic, first, targets, mask, table, 0.4, key(seed))
        replaced = np.asarray(replaced)
        assert replaced.sum(1).tolist() == [2, 1, 0]
        assert not (replaced & ~np.asarray(mask)).any()
        rows = np.asarray(semantic)
        np.testing.assert_array_equal(rows[replaced], np.asarray(table)[np.asarray(targets)][replaced])
        keep = ~replaced & np.asarray(mask)
        np.testing.assert_array_equal(rows[keep], np.asarray(acoustic)[keep])
        np.testing.assert_array_equal(rows[~np.asarray(mask)], 0.0)
        seen.add(tuple(np.flatnonzero(replaced[0])))
    assert len(seen) > 1  # random positions, not always the same


def test_glancing_sample_gradient_stops_at_first_pass():
    table, targets, mask, first, acoustic = _glance_case()
    weights = jax.random.normal(key(3), acoustic.shape)

    def f(acoustic, first):
        semantic, _ = P.glancing_sample(acoustic, first, targets, mask, table, 0.4, key(1))
        return jnp.sum(semantic * weights)

    g_acoustic, g_first = jax.grad(f, argnums=(0, 1))(acoustic, first)
    np.testing.assert_array_equal(np.asarray(g_first), 0.0)
    _, replaced = P.glancing_sample(acoustic, first, targets, mask, table, 0.4, key(1))
    keep = np.asarray(~replaced & mask)[..., None]
    np.testing.assert_allclose(np.asarray(g_acoustic), np.where(keep, np.asarray(weights), 0.0))


def test_model_first_pass_has_no_gradient():
    model = P.Paraformer(P.TINY, rngs=nnx.Rngs(0))
    feats = jax.random.normal(key(0), (2, 40, 20))
    targets, target_lengths = jnp.array([[4, 5, 6], [7, 8, 0]]), jnp.array([3, 2])

    def first_pass(model):
        return jnp.sum(model(feats, None, targets, target_lengths, train=True, key=key(1))["first_pass_logits"])

    grads = nnx.jit(nnx.grad(first_pass))(model)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))


def test_decoder_is_not_causal_and_masks_padding():
    dec = P.ParaformerDecoder(10, 16, layers=2, heads=2, ffn=32, dropout=0.0, rngs=nnx.Rngs(0))
    x = jax.random.normal(key(0), (1, 5, 16))
    memory = jax.random.normal(key(1), (1, 7, 16))
    memory_mask = lengths_mask([6], 7)
    full = lengths_mask([5], 5)
    out = dec(x, full, memory, memory_mask, train=False)
    bump = jax.random.normal(key(2), (1, 16))  # not a constant shift: LayerNorm would remove that
    changed = dec(x.at[:, -1].add(bump), full, memory, memory_mask, train=False)
    assert float(jnp.abs(changed[:, 0] - out[:, 0]).max()) > 1e-4  # last input reaches position 0
    short = lengths_mask([4], 5)
    a = dec(x, short, memory, memory_mask, train=False)
    b = dec(x.at[:, -1].add(bump), short, memory.at[:, -1].add(5.0 * bump), memory_mask, train=False)
    np.testing.assert_allclose(np.asarray(a[:, :4]), np.asarray(b[:, :4]), atol=1e-6)  # padded token and frame unseen


def test_greedy_decode_padding_invariance():
    model = P.Paraformer(P.TINY, rngs=nnx.Rngs(2))
    long = jax.random.normal(key(0), (1, 48, 20))
    short = jax.random.normal(key(1), (1, 32, 20))
    decode = nnx.jit(P.greedy_decode)
    alone = decode(model, short, jnp.ones((1, 32), bool))
    batch = jnp.concatenate([long, jnp.pad(short, ((0, 0), (0, 16), (0, 0)), constant_values=3.0)])
    both = decode(model, batch, lengths_mask([48, 32], 48))
    n = int(alone["token_num"][0])
    assert n >= 1 and int(both["token_num"][1]) == n
    np.testing.assert_array_equal(np.asarray(both["token_mask"][1]), np.asarray(alone["token_mask"][0]))
    np.testing.assert_allclose(np.asarray(both["logits"][1, :n]), np.asarray(alone["logits"][0, :n]), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(both["ids"][1]), np.asarray(alone["ids"][0]))
    np.testing.assert_array_equal(np.asarray(both["fire_positions"][1]), np.asarray(alone["fire_positions"][0]))


def test_tiny_paraformer_learns_four_utterances():
    cfg = dataclasses.replace(P.TINY, max_tokens=6)
    model = P.Paraformer(cfg, rngs=nnx.Rngs(0))
    feats = jax.random.normal(key(0), (4, 44, 20))
    mask = lengths_mask([44, 40, 44, 36], 44)
    targets = jnp.array([[4, 5, 6, 0, 0], [7, 8, 9, 10, 0], [11, 4, 8, 6, 5], [9, 5, 11, 7, 0]])
    target_lengths = jnp.array([3, 4, 5, 4])
    optimizer = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, k):
        def loss_fn(model):
            out = model(feats, mask, targets, target_lengths, train=True, key=k)
            losses = P.paraformer_loss(out, targets, target_lengths, cfg)
            return losses["loss"], losses

        (_, losses), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        optimizer.update(model, grads)
        return losses

    history = [float(step(model, optimizer, jax.random.fold_in(key(9), i))["loss"]) for i in range(300)]
    decoded = nnx.jit(P.greedy_decode)(model, feats, mask)
    ids = np.asarray(decoded["ids"])[:, :5]
    valid = np.asarray(lengths_mask(target_lengths, 5))
    accuracy = float(((ids == np.asarray(targets)) & valid).sum() / valid.sum())
    assert np.asarray(decoded["token_num"]).tolist() == target_lengths.tolist()
    assert accuracy >= 0.9, (accuracy, history[::50])
    assert np.mean(history[-10:]) <= 0.5 * np.mean(history[:5]), history[::50]


def test_paper_config_is_the_funasr_recipe():
    cfg = P.PAPER
    assert (cfg.decoder_layers, cfg.decoder_heads, cfg.decoder_ffn, cfg.decoder_dropout) == (6, 4, 2048, 0.1)
    assert (cfg.ctc_weight, cfg.predictor_weight, cfg.label_smoothing, cfg.sampling_ratio) == (0.3, 1.0, 0.1, 0.4)
    assert cfg.ce_weight == pytest.approx(0.7) and cfg.tail_threshold == 0.45
    assert (cfg.encoder.blocks, cfg.encoder.d_model) == (12, 256)
    with pytest.raises(P.ConfigError):
        P.ParaformerConfig(decoder_heads=3)
