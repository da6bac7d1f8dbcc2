"""MAT-SED network and pre-training: the reconstruction loss, the frozen encoder, mean frequency
pooling, the SED pass; and the paper preset's refusal without PaSST weights.

The numeric tests use SMALL (36 mels x 100 frames -> 3 x 9 patches of width 32, one context block),
so the file stays a few seconds on a busy CPU; the stage checks use abstract models only.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import registry
from experiments.matsed import system as matsed_system
from jaxaudio.errors import ConfigError
from jaxaudio.models.matsed import MATSED, PAPER, matsed_config, reconstruction_loss
from jaxaudio.models.pmam import PMAMConfig
from jaxaudio.nn.global_local import GlobalLocal
from jaxaudio.nn.masking import block_mask, replacement_plan, token_only_plan
from jaxaudio.nn.vit import TINY as VIT_TINY
from jaxaudio.nn.vit import interpolate_time
from jaxaudio.train.optim import FROZEN, group_labels
from jaxaudio.train.sharding import path_to_str

SMALL = matsed_config(dataclasses.replace(VIT_TINY, n_mels=36, max_frames=98, depth=2, out_layer=None),
                      feature_layer=2, context_layers=1, context_heads=4, at_heads=4, n_classes=3, pred_len=100)
BATCH, FRAMES, MELS = 2, 100, 36


class Small:
    """The SMALL network, initialised under jit, and ``run(fn, *args)``: ``fn(model, *args)`` jitted
    (compiling whole passes is much faster here than running them op by op the first time)."""

    def __init__(self):
        graphdef = nnx.split(nnx.eval_shape(lambda: MATSED(SMALL, rngs=nnx.Rngs(0))))[0]
        self.state = jax.jit(lambda: nnx.state(MATSED(SMALL, rngs=nnx.Rngs(0))))()
        self.model = nnx.merge(graphdef, self.state)
        self.mel = jax.random.normal(jax.random.key(1), (BATCH, FRAMES, MELS))
        self._graphdef = graphdef

    def run(self, fn, *args):
        graphdef = self._graphdef
        return jax.jit(lambda state, *a: fn(nnx.merge(graphdef, state), *a))(self.state, *args)


@pytest.fixture(scope="module")
def small():
    return Small()


def test_the_network_is_pmam_without_cnn_projection_attention_pool_or_prototypes(small):
    model = small.model
    assert (SMALL.cnn, SMALL.freq_pool, SMALL.passt_proj, SMALL.decoder_dim) == (None, "mean", False, SMALL.vit.dim)
    top = {path_to_str(p).split("/")[0] for p, _ in jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))}
    assert top == {"encoder", "out_norm", "mask_token", "context", "mlm_hidden", "mlm_out", "classifier", "at_pool",
                   "at_class_head"}
    # the paper's sizes (papers.md §2): layer 10 of PaSST-S, 3 Transformer-XL blocks of 768 with 12 heads, mlp 1
    assert (PAPER.feature_layer, PAPER.context_layers, PAPER.decoder_dim, PAPER.context_heads, PAPER.mlp_ratio,
            PAPER.at_heads, PAPER.vit.lora_rank, PAPER.pred_len) == (10, 3, 768, 12, 1.0, 12, 0, 1000)
    with pytest.raises(ConfigError, match="cnn"):
        matsed_config(cnn=PMAMConfig().cnn)
    with pytest.raises(ConfigError, match="decoder_dim"):
        PMAMConfig(passt_proj=False)   # 384-d context network on 768-d PaSST frames
    with pytest.raises(ConfigError, match="freq_pool"):
        PMAMConfig(freq_pool="max")


def test_mean_frequency_pooling_is_the_numpy_mean_over_the_frequency_patches(small):
    normed, enc = small.run(lambda m, x: (m.out_norm(m.encoder(x, train=False, return_layer=SMALL.feature_layer)
                                                    ["patch_tokens"]), m.encode(x, train=False)), small.mel)
    n_freq, n_time = small.model.encoder.grid_shape(FRAMES, train=False)
    assert (n_freq, n_time) == (3, 9)
    pooled = np.asarray(normed, np.float64).reshape(BATCH, n_freq, n_time, -1).mean(axis=1)  # frequency-major
    expected = np.asarray(interpolate_time(jnp.asarray(pooled, jnp.float32), SMALL.upsample,
                                           pad_to=SMALL.pred_len // SMALL.upsample))
    np.testing.assert_allclose(np.asarray(enc["passt_frames"]), expected, rtol=1e-5, atol=1e-5)
    # no projection: the context network's input is the pooled frames themselves
    np.testing.assert_array_equal(np.asarray(enc["fused"]), np.asarray(enc["passt_frames"]))


def test_reconstruction_loss_is_the_mse_over_exactly_the_masked_frames(small):
    mask = np.zeros((BATCH, FRAMES), bool)
    mask[0, 10:20] = mask[0, 50:60] = True   # two blocks in clip 0, one in clip 1
    mask[1, 90:100] = True
    out, fused = small.run(lambda m, x, k: (m.mae_forward(x, k, token_only_plan(k), train=False),
                                            m.encode(x, train=False)["fused"]), small.mel, jnp.asarray(mask))
    recon, target = np.asarray(out["recon"], np.float64), np.asarray(out["target"], np.float64)
    assert recon.shape == target.shape == (BATCH, FRAMES, SMALL.vit.dim)

    # the target is the pre-mask context input; the context network saw the mask token on the hidden frames
    np.testing.assert_array_equal(np.asarray(out["target"]), np.asarray(fused))
    shown = np.asarray(out["masked_input"])
    np.testing.assert_array_equal(shown[~mask], np.asarray(out["target"])[~mask])
    token = np.asarray(small.model.mask_token[...])
    np.testing.assert_array_equal(shown[mask], np.broadcast_to(token, shown[mask].shape))

    expected = np.mean((recon[mask] - target[mask]) ** 2)   # torch MSELoss on the masked rows
    got = float(reconstruction_loss(out["recon"], out["target"], jnp.asarray(mask)))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # exactly those frames: a change on a visible frame leaves the loss alone, one on a hidden frame does not
    moved = np.array(out["recon"])
    moved[1, 0] += 5.0
    assert float(reconstruction_loss(jnp.asarray(moved), out["target"], jnp.asarray(mask))) == pytest.approx(got)
    moved[1, 95] += 5.0
    again = float(reconstruction_loss(jnp.asarray(moved), out["target"], jnp.asarray(mask)))
    assert again > got + 0.5 and again == pytest.approx(np.mean((moved[mask] - target[mask]) ** 2), rel=1e-5)
    assert float(reconstruction_loss(out["recon"], out["target"], jnp.zeros((BATCH, FRAMES), bool))) == 0.0


def test_block_masks_and_replacements_of_the_paper_rate(small):
    """Rate 0.75 over 10-frame blocks, the reference's count: 76 of 100 blocks (8 of 10 here); the
    80/10/10 plan shows the token, a random frame, or the frame itself, only on hidden frames."""
    mask = block_mask(jax.random.key(2), BATCH, FRAMES, 10, 0.75, reference_count=True)
    assert np.asarray(mask).sum(1).tolist() == [80, 80]
    plan = replacement_plan(jax.random.key(3), mask, 0.8, 0.1)
    out = small.run(lambda m, x, k, p: m.mae_forward(x, k, p, train=False), small.mel, mask, plan)
    hidden = np.asarray(mask)
    assert not np.asarray(plan.use_token)[~hidden].any() and not np.asarray(plan.use_random)[~hidden].any()
    changed = np.any(np.asarray(out["masked_input"]) != np.asarray(out["target"]), axis=-1)
    assert not changed[~hidden].any() and changed[hidden].mean() > 0.6


def _params(config):
    return nnx.state(nnx.eval_shape(lambda: matsed_system.build_model(config)), nnx.Param)


@pytest.mark.parametrize("preset", ["smoke", "paper"])
def test_pretraining_freezes_every_encoder_parameter(preset):
    """The pre-training stage's optimizer groups (as the trainer hands them to make_optimizer) freeze
    every encoder/ parameter, so the encoder gets no update; the context network, out_norm, the mask
    token and the reconstruction head train; the SED / AT heads, unread, are frozen too."""
    config = registry.load_config("matsed", preset)
    stage = {s.name: s for s in matsed_system.stages(config, "/nonexistent/workdir")}["pretrain"]
    params = _params(config)
    labels = group_labels(params, list(stage.groups), dict(stage.default_group))
    flat = {path_to_str(p): label for p, label in jax.tree_util.tree_leaves_with_path(labels)}
    encoder = {k: v for k, v in flat.items() if k.startswith("encoder/")}
    assert encoder and set(encoder.values()) == {FROZEN}
    for k, label in flat.items():
        head = k.split("/")[0]
        trains = head in ("context", "out_norm", "mask_token", "mlm_hidden", "mlm_out")
        assert (label != FROZEN) == trains, (k, label)


def test_sed_forward_shapes_and_global_local(small):
    out, fused = small.run(lambda m, x: (m.sed_forward(x, train=False),
                                         m.sed_forward(x, train=False, sliding=GlobalLocal(window=50, step=20))),
                           small.mel)
    assert out["strong"].shape == (BATCH, SMALL.pred_len, 3)
    assert out["weak"].shape == out["weak_at"].shape == (BATCH, 3)
    for v in out.values():
        assert np.all((np.asarray(v) >= 0) & (np.asarray(v) <= 1))
    assert fused["strong"].shape == out["strong"].shape
    assert np.abs(np.asarray(fused["strong"]) - np.asarray(out["strong"])).max() > 1e-6
    np.testing.assert_array_equal(np.asarray(fused["weak_at"]), np.asarray(out["weak_at"]))  # AT: whole clip only


def test_paper_preset_refuses_to_start_without_passt_weights():
    config = registry.load_config("matsed", "paper")
    with pytest.raises(ConfigError, match="passt_checkpoint"):
        matsed_system.SYSTEM.finalize_config(config)
    config.model.allow_random_init = True
    matsed_system.SYSTEM.finalize_config(config)
    assert len(config.data.classes) == 10
