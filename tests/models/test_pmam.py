"""PMAM network: prototype probabilities, encoder structure, MAM / SED passes, gradients, paper sizes.

Numeric passes use SHORT (TINY on 2 s clips, 200 frames) so the file stays fast on a busy CPU;
TINY itself is checked at the real 10 s size abstractly and with one jit gradient step.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.models.pmam import PAPER, PMAM, TINY, PMAMConfig, prototype_probs
from jaxaudio.nn.masking import block_mask, replacement_plan, token_only_plan
from jaxaudio.objectives.ssl import pmam_loss

SHORT = dataclasses.replace(TINY, vit=dataclasses.replace(TINY.vit, max_frames=198), pred_len=200)


def key(seed):
    return jax.random.key(seed, impl="rbg")


def param_count(tree) -> int:
    return sum(v.size for v in jax.tree.leaves(nnx.state(tree, nnx.Param)))


def numpy_prototype_probs(h, mu, tau=0.1, slope=0.2):
    h = h / np.linalg.norm(h, axis=-1, keepdims=True)
    mu = mu / np.linalg.norm(mu, axis=-1, keepdims=True)
    cos = h @ mu.T
    z = np.where(cos >= 0, cos, slope * cos) * 2 - 1
    return 1 / (1 + np.exp(-z / tau))


def test_prototype_probs_against_numpy():
    h = np.asarray(jax.random.normal(key(0), (2, 7, 6)), np.float64)
    mu = np.asarray(jax.random.normal(key(1), (4, 6)), np.float64) * 3.0  # unnormalised means
    mu[0] = h[0, 0] * 2.5  # cos = 1 -> sigmoid(10)
    mu[1] = -h[0, 1]  # cos = -1 -> sigmoid(-14)
    got = np.asarray(jax.jit(prototype_probs)(h.astype(np.float32), mu.astype(np.float32)))   # one compile
    np.testing.assert_allclose(got, numpy_prototype_probs(h, mu), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(got[0, 0, 0], 1 / (1 + np.exp(-10.0)), rtol=1e-5)
    np.testing.assert_allclose(got[0, 1, 1], 1 / (1 + np.exp(14.0)), rtol=1e-3)
    with pytest.raises(ConfigError, match="width"):
        prototype_probs(jnp.zeros((1, 2, 6)), jnp.zeros((3, 5)))


class Short:
    """SHORT model plus jit functions, each compiled once for the whole file: the MAM pass, and one
    program for the unmasked eval passes (encode, SED and the unmasked context, which share the
    encoder: XLA computes it once, where three programs would each compile it)."""

    def __init__(self):
        model = PMAM(SHORT, rngs=nnx.Rngs(key(0)))
        self.graphdef, self.state = nnx.split(model)
        self.mel = jax.random.normal(key(1), (2, 200, 128))
        self.protos = jax.random.normal(key(6), (SHORT.n_prototypes, SHORT.prototype_dim))
        g = self.graphdef
        self.mam = jax.jit(lambda s, x, k, p, mu: nnx.merge(g, s).mam_forward(x, k, p, prototypes=mu, train=False))

        @jax.jit
        def unmasked_passes(s, x):
            m = nnx.merge(g, s)
            last = m.context_features(x, SHORT.context_layers - 1, train=False)
            return {"encode": m.encode(x, train=False), "sed": m.sed_forward(x, train=False),
                    "unmasked": (m.mlm_head(last), m.gmm_features(x, "transformer_0"))}

        self._unmasked_passes = unmasked_passes

    def encode(self, state, mel):
        return self._unmasked_passes(state, mel)["encode"]

    def sed(self, state, mel):
        return self._unmasked_passes(state, mel)["sed"]

    def unmasked(self, state, mel):
        return self._unmasked_passes(state, mel)["unmasked"]

    def model(self):
        return nnx.merge(self.graphdef, self.state, copy=True)


@pytest.fixture(scope="module")
def short():
    return Short()


def test_tiny_shapes_at_ten_seconds():
    model = nnx.eval_shape(lambda: PMAM(TINY, rngs=nnx.Rngs(key(0))))
    graphdef, state = nnx.split(model)
    mel = jax.ShapeDtypeStruct((4, 1000, 128), jnp.float32)
    mask = jax.ShapeDtypeStruct((4, 1000), jnp.bool_)
    protos = jax.ShapeDtypeStruct((TINY.n_prototypes, TINY.prototype_dim), jnp.float32)

    def shapes(fn, *args):
        out = jax.eval_shape(lambda s, *a: fn(nnx.merge(graphdef, s), *a), state, *args)
        return {k: v.shape for k, v in out.items()}

    assert shapes(lambda m, x: m.encode(x, train=False), mel) == {
        "fused": (4, 1000, 32), "passt_frames": (4, 1000, 32), "passt_final": (4, 12 * 99, 32)}
    mam = shapes(lambda m, x, k, p: m.mam_forward(x, k, prototypes=p, train=False), mel, mask, protos)
    assert mam["h"] == (4, 1000, 32) and mam["prototype_probs"] == (4, 1000, 8) and mam["at_probs"] == (4, 8)
    assert shapes(lambda m, x: m.sed_forward(x, train=False), mel) == {
        "strong": (4, 1000, 10), "weak": (4, 10), "weak_at": (4, 10)}


def test_encoder_structure(short):
    mel, model = short.mel, short.model()
    assert float(model.fusion_weight[...]) == 0.5
    enc = short.encode(short.state, mel)
    frames = np.asarray(enc["passt_frames"])
    # 19 time patches, padded to 20 by repeating the last, x10 linear (align_corners=False):
    # frames 0..4 sit before the first sample, frames 185..199 between two copies of the last.
    np.testing.assert_allclose(frames[:, :5], np.repeat(frames[:, :1], 5, axis=1), atol=1e-6)
    np.testing.assert_allclose(frames[:, 185:], np.repeat(frames[:, 185:186], 15, axis=1), atol=1e-6)
    # fused = passt_proj(passt_frames) + w * cnn part: with w = 0 only the PaSST part remains
    silent_cnn = nnx.clone(model)
    silent_cnn.fusion_weight.value = jnp.zeros(())
    zero_w = nnx.state(silent_cnn)
    fused0 = short.encode(zero_w, mel)["fused"]
    np.testing.assert_allclose(fused0, np.asarray(frames @ np.asarray(model.passt_proj.kernel[...])
                                                  + np.asarray(model.passt_proj.bias[...])), atol=1e-4)
    assert not np.allclose(fused0, enc["fused"], atol=1e-3)  # the CNN branch contributes at w = 0.5


def test_mam_with_empty_mask_equals_unmasked_path(short):
    mask = jnp.zeros((2, 200), bool)
    plan = replacement_plan(key(5), mask)
    masked = short.mam(short.state, short.mel, mask, plan, short.protos)["h"]
    plain, _ = short.unmasked(short.state, short.mel)
    np.testing.assert_allclose(masked, plain, rtol=1e-5, atol=1e-5)


def test_fully_masked_input_hides_the_audio_from_the_context(short):
    mask = jnp.ones((2, 200), bool)
    plan = token_only_plan(mask)
    first = short.mam(short.state, short.mel, mask, plan, short.protos)
    second = short.mam(short.state, short.mel[::-1] * 2.0, mask, plan, short.protos)
    np.testing.assert_allclose(first["h"], second["h"], atol=1e-5)  # only mask tokens reach the context net
    np.testing.assert_allclose(first["h"][0], first["h"][1], atol=1e-5)
    assert not np.allclose(first["at_probs"], second["at_probs"], atol=1e-4)  # the AT branch still hears the clip


def test_mam_loss_masking_and_sed_outputs(short):
    mask = block_mask(key(7), 2, length=200, rate=0.8)
    plan = replacement_plan(key(8), mask)
    out = short.mam(short.state, short.mel, mask, plan, short.protos)
    p = np.asarray(out["prototype_probs"])
    assert p.shape == (2, 200, SHORT.n_prototypes) and out["at_probs"].shape == (2, SHORT.n_prototypes)
    # tau 0.1, slope 0.2: probabilities lie in [sigmoid(-14), sigmoid(10)]
    assert p.min() >= 1 / (1 + np.exp(14.0)) * 0.999 and p.max() <= 1 / (1 + np.exp(-10.0)) + 1e-7
    expected = numpy_prototype_probs(np.asarray(out["h"], np.float64), np.asarray(short.protos, np.float64))
    np.testing.assert_allclose(p, expected, rtol=1e-3, atol=1e-6)
    sed = short.sed(short.state, short.mel)
    strong = np.asarray(sed["strong"], np.float64)
    assert strong.shape == (2, 200, 10) and ((strong > 0) & (strong < 1)).all()
    expected_weak = np.clip((strong ** 2).sum(1) / strong.sum(1), 1e-7, 1)
    np.testing.assert_allclose(sed["weak"], expected_weak, rtol=1e-5)
    assert sed["weak_at"].shape == (2, 10)


def test_gmm_feature_layers(short):
    _, transformer_0 = short.unmasked(short.state, short.mel)
    assert transformer_0.shape == (2, 200, SHORT.decoder_dim)
    assert short.encode(short.state, short.mel)["passt_frames"].shape == (2, 200, SHORT.prototype_dim)
    model = short.model()
    with pytest.raises(ConfigError, match="feature_layer"):
        model.gmm_features(short.mel, "decoder")
    with pytest.raises(ConfigError, match="context layer"):
        model.context_features(short.mel, SHORT.context_layers, train=False)


def check_train_step(model, cfg, frames):
    """One jit value-and-grad of the PMAM loss in train mode (dropout, BatchNorm batch statistics)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    mel = jax.random.normal(key(1), (2, frames, 128))
    gamma = jax.nn.softmax(2 * jax.random.normal(key(2), (2, frames, cfg.n_prototypes)), axis=-1)
    protos = jax.random.normal(key(3), (cfg.n_prototypes, cfg.prototype_dim))
    mask = block_mask(key(4), 2, length=frames)
    plan = replacement_plan(key(5), mask)

    @jax.jit
    def step(params, rest):
        def loss_fn(p):
            m = nnx.merge(graphdef, p, rest, copy=True)
            out = m.mam_forward(mel, mask, plan, prototypes=protos, train=True, rngs=key(6))
            loss, aux = pmam_loss(out, gamma, mask)
            return loss, (aux, nnx.state(m, nnx.BatchStat))
        return jax.value_and_grad(loss_fn, has_aux=True)(params)

    (loss, (aux, stats)), grads = step(params, rest)
    assert np.isfinite(float(loss)) and float(aux["at_bce"]) > 0
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    for name in ("fusion_weight", "mask_token"):
        assert float(jnp.abs(grads[name][...]).sum()) > 0, name
    # SED-only heads take no part in pre-training
    assert not np.asarray(grads["classifier"]["kernel"][...]).any()
    assert not np.asarray(grads["at_class_head"]["kernel"][...]).any()
    old = jax.tree.leaves(nnx.state(model, nnx.BatchStat))
    assert any(not np.allclose(a, b) for a, b in zip(old, jax.tree.leaves(stats)))  # running stats moved


def test_train_step_gradients_finite(short):
    check_train_step(short.model(), SHORT, 200)


@pytest.mark.slow
def test_tiny_train_step_at_ten_seconds():
    check_train_step(PMAM(TINY, rngs=nnx.Rngs(key(0))), TINY, 1000)


def test_paper_config_builds_abstractly_with_expected_size():
    model = nnx.eval_shape(lambda: PMAM(PAPER, rngs=nnx.Rngs(key(0))))
    d, dec, k, c = 768, 384, 30, 10
    attention_pool = 4 * (d * d + d) + d
    heads = (
        2 * d  # out_norm
        + 2 * attention_pool  # frequency pool, AT pool
        + d * dec + dec  # PaSST projection
        + 384 * dec + dec + 1  # CNN projection, fusion weight
        + dec  # mask token
        + dec * dec + dec + dec * d + d  # MLM head
        + dec * c + c  # classifier
        + d * k + k + d * c + c  # AT heads
    )
    parts = param_count(model.encoder) + param_count(model.cnn) + param_count(model.context)
    assert param_count(model) == parts + heads
    # context: 3 blocks of q,k,v,out (+bias), linear_pos, pos biases, 2 LayerNorms, MLP ratio 1
    block = 4 * (dec * dec + dec) + dec * dec + 2 * dec + 4 * dec + 2 * (dec * dec + dec)
    assert param_count(model.context) == 3 * block
    assert 95e6 < param_count(model) < 100e6  # PaSST-S ~86M + LoRA + CNN + decoder (97,162,051)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="context_heads"):
        PMAMConfig(decoder_dim=384, context_heads=7)
    with pytest.raises(ConfigError, match="feature_layer"):
        PMAMConfig(feature_layer=13)
    with pytest.raises(ConfigError, match="pred_len"):
        PMAMConfig(pred_len=1005)
