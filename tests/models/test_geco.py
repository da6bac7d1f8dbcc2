"""GeCo / STgram-MFN network: shapes, Tgram-to-log-mel frame alignment, MobileFaceNet strides,
BatchNorm modes, ArcFace against its formula, anomaly scores against numpy, the preset's
parameter count against the PyTorch code's, segmenting, and a toy problem that is learned."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxaudio.audio.features import FrontEndConfig, log_mel, power_spectrogram
from jaxaudio.errors import ConfigError, ShapeError
from jaxaudio.models.geco import (
    GECO_STGRAM, STGRAM_MFN, TINY_FRONTEND, ArcFaceHead, GeCoConfig, GeCoNet, TgramBranch, anomaly_score,
    clip_score, segment_clip, segment_frames, segment_starts, segment_waveform, with_reconstructions,
)
from jaxaudio.train.state import merge_model, split_model
from tests.models.numpy_weights import with_numpy_weights


def key(seed):
    """RBG keys: XLA compiles their random ops several times faster than threefry's (busy CI CPUs)."""
    return jax.random.key(seed, impl="rbg")


# The default's front end and sizes (32 frames x 16 mels, 4032-sample segments) at a lower depth:
# XLA's compile time, not the arithmetic, is what these tests spend. Stage 2 keeps a residual block.
SMALL = GeCoConfig(tgram_layers=2, bottlenecks=((2, 16, 1, 2), (2, 16, 1, 1)))


def abstract(cfg: GeCoConfig):
    """(graphdef, state) of shapes only: nothing allocated or compiled."""
    return nnx.split(nnx.eval_shape(lambda: GeCoNet(cfg, rngs=nnx.Rngs(key(0)))))


def build_numpy(cfg: GeCoConfig, seed: int = 0) -> GeCoNet:
    """A usable model with numpy weights: eager JAX would compile every initializer shape apart.
    Kernels and the ArcFace weight N(0, 2 / fan-in), and what the tests read at its init value:
    BatchNorm (scale / var 1, shift / mean 0), LayerNorm (scale 1, shift 0), PReLU slope 0.25;
    biases 0."""
    model = nnx.eval_shape(lambda: GeCoNet(cfg, rngs=nnx.Rngs(key(seed))))
    return with_numpy_weights(model, seed, fill={"scale": 1.0, "var": 1.0, "alpha": 0.25},
                              kernels=("kernel", "weight"))


def output_shapes(cfg: GeCoConfig, mel_shape, wave_shape, model=None):
    graphdef, state = model or abstract(cfg)
    return jax.eval_shape(lambda s, m, w: nnx.merge(graphdef, s)(m, w, train=False), state,
                          jax.ShapeDtypeStruct(mel_shape, jnp.float32), jax.ShapeDtypeStruct(wave_shape, jnp.float32))


_log_mel = jax.jit(log_mel, static_argnums=1)


def inputs(cfg: GeCoConfig, batch: int, seed: int = 0):
    wave = 0.1 * jax.random.normal(key(seed), (batch, cfg.segment_samples))
    return _log_mel(wave, cfg.frontend), wave


@nnx.jit(static_argnames="train")
def forward(model, mel, wave=None, *, train=False, tgram=None, labels=None, is_recon=None):
    """One compiled forward per model layout and input shapes, shared by the tests."""
    return model(mel, wave, train=train, tgram=tgram, labels=labels, is_recon=is_recon)


def train_forward(model, mel, wave):
    """Train mode, functionally: the model's BatchNorm statistics are left as they were."""
    graphdef, params, model_state = split_model(model)
    return _train_forward(graphdef, params, model_state, mel, wave)


@jax.jit(static_argnums=0)
def _train_forward(graphdef, params, model_state, mel, wave):
    return merge_model(graphdef, params, model_state)(mel, wave, train=True)


@pytest.fixture(scope="module")
def small():
    model = build_numpy(SMALL)
    mel, wave = inputs(SMALL, 4)
    return model, mel, wave


# ----------------------------------------------------------------------------- shapes


def test_small_config_outputs_shapes_and_dtypes(small):
    model, mel, wave = small
    assert mel.shape == (4, SMALL.frames, SMALL.n_mels)
    for out in (forward(model, mel, wave), train_forward(model, mel, wave)):
        assert set(out) == {"embedding", "id_logits", "recon_logit"}
        assert out["embedding"].shape == (4, SMALL.embedding_dim)
        assert out["id_logits"].shape == (4, SMALL.n_classes)
        assert out["recon_logit"].shape == (4,)
        for value in out.values():
            assert value.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(value)))
    # mel-only (one input channel), mean pooling, no recon head: shapes only
    for cfg in (dataclasses.replace(SMALL, wave_branch=False, recon_head=False),
                dataclasses.replace(SMALL, pooling="mean", head="arcface", activation="relu")):
        out = output_shapes(cfg, mel.shape, wave.shape)
        assert out["embedding"].shape == (4, SMALL.embedding_dim) and out["id_logits"].shape == (4, SMALL.n_classes)
        assert ("recon_logit" in out) == cfg.recon_head


def test_precomputed_tgram_and_shape_errors(small):
    model, mel, wave = small
    a = forward(model, mel, wave)
    b = forward(model, mel, tgram=nnx.jit(lambda m, w: m.tgram(w, train=False))(model, wave))
    np.testing.assert_allclose(np.asarray(a["id_logits"]), np.asarray(b["id_logits"]), rtol=1e-6, atol=1e-6)
    with pytest.raises(ConfigError, match="wave"):
        model(mel, train=False)
    with pytest.raises(ShapeError, match="frames"):
        model(mel, wave[:, :-200], train=False)  # 30 Tgram frames for a 32-frame LayerNorm
    with pytest.raises(ShapeError, match="n_mels"):
        model(mel[:, :, :8], wave, train=False)
    with pytest.raises(ShapeError, match="GeCoConfig.frames"):
        nnx.eval_shape(lambda: GeCoNet(dataclasses.replace(SMALL, wave_branch=False), rngs=nnx.Rngs(key(0))))(
            mel[:, :20], train=False)  # raised before any weight is read: shapes-only weights do


def test_config_validation():
    with pytest.raises(ConfigError, match="GeCoConfig.head"):
        GeCoConfig(head="cosface")
    with pytest.raises(ConfigError, match=r"bottlenecks\[1\]"):
        GeCoConfig(bottlenecks=((2, 16, 1, 2), (2, 32, 1, 3)))
    with pytest.raises(ConfigError, match="recon_wave"):
        GeCoConfig(recon_wave="noise")
    # a config section (lists, a frontend mapping) becomes the frozen, hashable dataclass
    cfg = GeCoConfig(frontend=dataclasses.asdict(TINY_FRONTEND), bottlenecks=[[2, 16, 1, 2]])
    assert cfg.frontend == TINY_FRONTEND and cfg.bottlenecks == ((2, 16, 1, 2),)
    hash(cfg)


# ----------------------------------------------------------------------------- Tgram


FRONTENDS = (
    TINY_FRONTEND,  # centred, n_fft = win = 256, hop 128
    FrontEndConfig(sample_rate=16000, n_fft=256, win_length=201, hop_length=80, n_mels=8, window="hamming",
                   pad_mode="constant"),  # zero padding, as the Tgram's: no reflected impulses at the edges
    FrontEndConfig(sample_rate=16000, n_fft=512, win_length=400, hop_length=160, n_mels=8, window="hamming",
                   center=False),  # Kaldi framing
    FrontEndConfig(sample_rate=16000, n_fft=256, win_length=256, hop_length=128, n_mels=8,
                   preemphasis=0.97),  # signal pre-emphasis drops one sample
)


@pytest.mark.parametrize("fe", FRONTENDS, ids=["centred", "odd_win", "kaldi", "preemph"])
def test_tgram_frame_count_equals_log_mel_frame_count(fe):
    branch = TgramBranch(GeCoConfig(frontend=fe, frames=8), rngs=nnx.Rngs(key(0)))
    for n in (400, 1023, 1024, 1025, 1280, 1299, 2047):
        wave = jax.ShapeDtypeStruct((1, n), jnp.float32)
        want = jax.eval_shape(lambda w: log_mel(w, fe), wave).shape[-2]
        assert jax.eval_shape(branch.extract, wave).shape == (1, want, fe.n_mels), n


@pytest.mark.parametrize("fe", FRONTENDS[1:3], ids=["odd_win", "kaldi"])
def test_tgram_frames_see_the_samples_the_log_mel_frames_see(fe):
    """An impulse at each sample p in turn: with an all-ones kernel the Tgram frames it reaches are
    exactly the log-mel frames whose (Hamming, non-zero everywhere) window covers p."""
    branch = TgramBranch(GeCoConfig(frontend=fe, frames=8), rngs=nnx.Rngs(key(0)))
    branch.extractor.kernel[...] = jnp.ones_like(branch.extractor.kernel[...])
    n = 720
    impulses = jnp.eye(n)  # row p: an impulse at sample p
    tgram_hit = np.asarray(branch.extract(impulses))[:, :, 0] != 0  # (p, frame)
    mel_hit = np.asarray(power_spectrogram(impulses, fe)).sum(-1) > 1e-12
    np.testing.assert_array_equal(tgram_hit, mel_hit)
    # by hand: torch.stft(center=True) puts frame t's window at t hop - n_fft // 2 + (n_fft - win) // 2
    first = np.arange(mel_hit.shape[1]) * fe.hop_length
    if fe.center:
        first = first - fe.n_fft // 2 + (fe.n_fft - fe.win_length) // 2
    p = np.arange(n)[:, None]
    np.testing.assert_array_equal(tgram_hit, (first <= p) & (p < first + fe.win_length))


def test_tgram_layer_norm_is_over_time(small):
    """The first LayerNorm (scale 1, shift 0 at init) makes each channel zero-mean, unit-variance over time."""
    model, _, wave = small
    x = model.tgram.extract(wave)
    y = np.asarray(model.tgram.norms[0](x))
    x = np.asarray(x)
    want = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- MobileFaceNet


def test_bottleneck_strides_and_channels_vs_hand_computation():
    fe = dataclasses.replace(TINY_FRONTEND, n_mels=12)
    cfg = GeCoConfig(frontend=fe, frames=20, wave_branch=False, stem_channels=8,
                     bottlenecks=((2, 8, 2, 2), (2, 16, 1, 1), (4, 16, 1, 2)), conv_channels=24, embedding_dim=8)
    net = nnx.eval_shape(lambda: GeCoNet(cfg, rngs=nnx.Rngs(key(0)))).backbone  # shapes only

    def apply(layer, x):
        return nnx.eval_shape(lambda m, v: m(v, train=False), layer, x)

    # by hand: 3x3 convs with padding 1 give ceil(x / stride)
    x = apply(net.stem, jax.ShapeDtypeStruct((2, 20, 12, 1), jnp.float32))
    assert x.shape == (2, 10, 6, 8)
    assert apply(net.stem_dw, x).shape == (2, 10, 6, 8)
    want = [((5, 3, 8), 16, False), ((5, 3, 8), 16, True), ((5, 3, 16), 16, False), ((3, 2, 16), 64, False)]
    assert len(net.blocks) == len(want)
    for block, (shape, mid, residual) in zip(net.blocks, want):
        x = apply(block, x)
        assert x.shape[1:] == shape
        assert block.expand.conv.kernel.shape[-1] == mid  # expansion multiplies the block's input channels
        assert block.residual == residual
    assert cfg.map_size() == (3, 2)
    assert net.gdc.conv.kernel.shape == (3, 2, 1, 24)  # depthwise over the whole remaining map
    assert apply(net, jax.ShapeDtypeStruct((2, 20, 12, 1), jnp.float32)).shape == (2, 8)
    # STgram-MFN: 313 x 128 -> 157 x 64 -> 79 x 32 -> 40 x 16 -> 20 x 8, its (8, 20) kernel transposed
    assert STGRAM_MFN.map_size() == (20, 8)


def test_strided_conv_pads_like_pytorch():
    """3x3 / stride 2 on an even size: PyTorch pads one each side, so output (0, 0) sums input rows and
    columns {0, 1} (XLA's 'SAME' would pad (0, 1) and sum {0, 1, 2})."""
    from jaxaudio.models.geco import ConvBN

    conv = ConvBN(1, 1, (3, 3), 2, SMALL, linear=True, rngs=nnx.Rngs(key(0)))
    conv.conv.kernel[...] = jnp.ones_like(conv.conv.kernel[...])
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    padded = np.pad(x[0, :, :, 0], 1)
    want = np.array([[padded[i:i + 3, j:j + 3].sum() for j in (0, 2)] for i in (0, 2)]) / np.sqrt(1 + 1e-5)
    np.testing.assert_allclose(np.asarray(conv(jnp.asarray(x), train=False))[0, :, :, 0], want, rtol=1e-5)


def test_batchnorm_train_uses_batch_statistics_and_updates_running_ones(small):
    model, mel, wave = small
    stem = model.backbone.stem
    x = jnp.stack([mel, model.tgram(wave, train=False)], axis=-1)
    conv = np.asarray(stem.conv(x))
    alpha = 0.25  # PReLU at init

    def prelu(v):
        return np.where(v >= 0, v, alpha * v)

    mean, var = conv.mean(axis=(0, 1, 2)), conv.var(axis=(0, 1, 2))
    np.testing.assert_allclose(np.asarray(stem(x, train=False)), prelu(conv / np.sqrt(1 + 1e-5)),
                               rtol=1e-4, atol=1e-4)  # fresh running stats: mean 0, var 1
    np.testing.assert_allclose(np.asarray(stem(x, train=True)), prelu((conv - mean) / np.sqrt(var + 1e-5)),
                               rtol=1e-3, atol=1e-3)
    # PyTorch's momentum 0.1: running = 0.9 running + 0.1 batch
    np.testing.assert_allclose(np.asarray(stem.bn.mean[...]), 0.1 * mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(stem.bn.var[...]), 0.9 + 0.1 * var, rtol=1e-4, atol=1e-4)
    stem.bn.mean[...] = jnp.zeros_like(stem.bn.mean[...])  # leave the shared fixture as it was
    stem.bn.var[...] = jnp.ones_like(stem.bn.var[...])
    # the whole net: train (batch stats) and eval (running stats) differ; eval repeats exactly
    a, b = forward(model, mel, wave)["id_logits"], forward(model, mel, wave)["id_logits"]
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(train_forward(model, mel, wave)["id_logits"]), atol=1e-3)


# ----------------------------------------------------------------------------- heads and scores


def test_arcface_logits_against_the_formula():
    m, s = 0.5, 30.0
    head = ArcFaceHead(3, 4, m, s, rngs=nnx.Rngs(key(0)))
    w = np.array([[1.0, 0.0, 0.0, 1.0], [0.0, 2.0, 0.0, 1.0], [0.0, 0.0, 0.5, 1.0]], np.float32)
    head.weight[...] = jnp.asarray(w)
    x = np.array([[3.0, 0.2, 0.1], [0.1, 1.0, -0.2], [-1.0, -1.0, -1.0], [0.0, -2.0, -0.1]], np.float32)
    labels = np.array([0, 1, 3, 1])  # row 2: theta near pi for class 3; row 3: cos < cos(pi - m)
    cos = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (w / np.linalg.norm(w, axis=0, keepdims=True))
    theta = np.arccos(cos[np.arange(4), labels])
    target = np.where(theta + m < np.pi, np.cos(theta + m), np.cos(theta) - m * np.sin(m))
    want = s * cos.copy()
    want[np.arange(4), labels] = s * target
    assert cos[3, 1] < math.cos(math.pi - m) and cos[2, 3] < math.cos(math.pi - m)  # both branches tried
    np.testing.assert_allclose(np.asarray(head(jnp.asarray(x), jnp.asarray(labels))), want, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(head(jnp.asarray(x))), s * cos, rtol=1e-5, atol=1e-4)


def test_arcface_margin_only_in_training_with_labels():
    cfg = dataclasses.replace(SMALL, head="arcface")
    model = build_numpy(cfg, seed=1)
    mel, wave = inputs(cfg, 4, seed=2)
    labels = jnp.array([0, 1, 2, 3])
    graphdef, params, model_state = split_model(model)

    @jax.jit
    def both(params, model_state):
        net = merge_model(graphdef, params, model_state)
        return net(mel, wave, train=False, labels=labels), net(mel, wave, train=True, labels=labels)

    ev, tr = both(params, model_state)
    head = model.id_head
    np.testing.assert_allclose(np.asarray(ev["id_logits"]), np.asarray(30.0 * head.cosine(ev["embedding"])),
                               rtol=1e-5, atol=1e-4)  # eval: no margin, labels or not
    a, b = np.asarray(tr["id_logits"]), np.asarray(30.0 * head.cosine(tr["embedding"]))
    off_target = np.ones_like(a, bool)
    off_target[np.arange(4), np.asarray(labels)] = False
    np.testing.assert_allclose(a[off_target], b[off_target], rtol=1e-5, atol=1e-4)
    assert np.all(a[~off_target] < b[~off_target])  # the margin lowers the target logit


def test_anomaly_score_and_clip_score_against_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 6)).astype(np.float32) * 3
    ids = np.array([0, 5, 2, 2, 1])
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(np.asarray(anomaly_score(logits, ids)), -logp[np.arange(5), ids], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(anomaly_score(logits, 2)), -logp[:, 2], rtol=1e-5)
    np.testing.assert_allclose(float(anomaly_score(np.zeros((1, 2)), 0)[0]), math.log(2.0), rtol=1e-6)
    # one clip of 5 segments, and a batch of 2 clips with their own IDs
    np.testing.assert_allclose(float(clip_score(logits, 3)), -logp[:, 3].mean(), rtol=1e-5)
    two = np.stack([logits, logits[::-1]])
    np.testing.assert_allclose(np.asarray(clip_score(two, np.array([3, 4]))),
                               [-logp[:, 3].mean(), -logp[::-1, 4].mean()], rtol=1e-5)


# ----------------------------------------------------------------------------- the STgram-MFN preset


def closed_form_count(cfg: GeCoConfig, map_cells: int) -> int:
    """Layer by layer, as PyTorch counts STgram-MFN (BN scale + shift, PReLU one slope per channel)."""
    def conv_bn(cin, cout, cells, depthwise=False, act=True):
        weights = cells * cout if depthwise else cells * cin * cout
        return weights + 2 * cout + (cout if act else 0)

    n = cfg.n_mels
    total = cfg.frontend.win_length * n + cfg.tgram_layers * (2 * cfg.frames + 3 * n * n)
    total += conv_bn(cfg.in_channels, cfg.stem_channels, 9) + conv_bn(cfg.stem_channels, cfg.stem_channels, 9, True)
    cin = cfg.stem_channels
    for t, c, reps, _ in cfg.bottlenecks:
        for _ in range(reps):
            mid = cin * t
            total += conv_bn(cin, mid, 1) + conv_bn(mid, mid, 9, True) + conv_bn(mid, c, 1, act=False)
            cin = c
    total += conv_bn(cin, cfg.conv_channels, 1)
    total += conv_bn(cfg.conv_channels, cfg.conv_channels, map_cells, True, act=False)
    total += conv_bn(cfg.conv_channels, cfg.embedding_dim, 1, act=False)
    total += cfg.embedding_dim * cfg.n_classes + (cfg.n_classes if cfg.head == "linear" else 0)
    return total + (cfg.embedding_dim + 1 if cfg.recon_head else 0)


def param_count(state) -> int:
    return sum(v.size for v in jax.tree.leaves(state.filter(nnx.Param)))


def test_stgram_mfn_preset_parameter_count_and_shapes():
    """PyTorch's count of liuyoude/STgram-MFN ``model.py`` (commit 6c1fca0), 41 classes, measured:
    1,345,087 with the linear ``fc_out`` head (Tgram 280,406 + MobileFaceNet 1,064,681);
    1,350,335 with ArcFace, which keeps the unused ``fc_out`` (5,289) beside the ArcFace weight."""
    linear = dataclasses.replace(STGRAM_MFN, head="linear")
    assert param_count(abstract(linear)[1]) == closed_form_count(linear, 20 * 8) == 1_345_087
    geco = abstract(GECO_STGRAM)
    assert param_count(geco[1]) - 129 == closed_form_count(STGRAM_MFN, 20 * 8) == 1_350_335 - 5_289  # 129: recon
    assert param_count(geco[1]) == closed_form_count(GECO_STGRAM, 20 * 8)
    # 10 s at 16 kHz is one 313-frame segment, for the log-mel and the Tgram alike
    assert STGRAM_MFN.segment_samples == 160_000 and STGRAM_MFN.frontend.num_frames(160_000) == 313
    out = output_shapes(GECO_STGRAM, (2, 313, 128), (2, 160_000), model=geco)
    assert out["embedding"].shape == (2, 128) and out["id_logits"].shape == (2, 41) and out["recon_logit"].shape == (2,)


# ----------------------------------------------------------------------------- segments and reconstructions


def test_segment_starts_by_hand():
    np.testing.assert_array_equal(segment_starts(10, 4, 3), [0, 3, 6])
    np.testing.assert_array_equal(segment_starts(11, 4, 3), [0, 3, 6, 7])  # a last segment flush with the end
    np.testing.assert_array_equal(segment_starts(4, 4, 1), [0])
    np.testing.assert_array_equal(segment_starts(9, 4, 4), [0, 4, 5])
    with pytest.raises(ShapeError, match="shorter than one segment"):
        segment_starts(3, 4, 1)
    feats = np.arange(11 * 2).reshape(11, 2)
    seg = segment_frames(feats, 4, 3)
    assert seg.shape == (4, 4, 2)
    for k, t0 in enumerate((0, 3, 6, 7)):
        np.testing.assert_array_equal(seg[k], feats[t0:t0 + 4])
    assert segment_frames(np.stack([feats, feats]), 4, 3).shape == (2, 4, 4, 2)


def test_segment_waveform_lines_up_with_the_clip_log_mel():
    """A segment's own log-mel equals the clip's log-mel over its frames, except the two edge
    frames whose windows reach past the segment (the frontend's padding)."""
    cfg = dataclasses.replace(SMALL, segment_hop=12)
    wave = np.asarray(0.1 * jax.random.normal(key(3), (3 * cfg.segment_samples + 300,)))
    mel = np.asarray(_log_mel(jnp.asarray(wave), cfg.frontend))
    mel_seg, wave_seg = segment_clip(mel, wave, cfg)
    starts = segment_starts(mel.shape[0], cfg.frames, 12)
    assert mel_seg.shape == (len(starts), cfg.frames, cfg.n_mels)
    assert wave_seg.shape == (len(starts), cfg.segment_samples)
    own = np.asarray(_log_mel(jnp.asarray(wave_seg), cfg.frontend))
    assert own.shape == mel_seg.shape
    np.testing.assert_allclose(own[:, 1:-1], mel_seg[:, 1:-1], rtol=1e-4, atol=1e-3)
    # batched jax arrays (a jit-side scorer): the same segments per clip
    mel_b, wave_b = segment_clip(jnp.stack([mel, 2 * mel]), jnp.stack([wave, 2 * wave]), cfg)
    assert isinstance(mel_b, jax.Array) and mel_b.shape == (2,) + mel_seg.shape
    assert wave_b.shape == (2,) + wave_seg.shape
    np.testing.assert_allclose(np.asarray(mel_b[1]), 2 * mel_seg, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(wave_b[0]), wave_seg, rtol=1e-6)
    # STgram-MFN: a 10 s clip is one segment, its waveform the whole clip
    clip = np.arange(160_000, dtype=np.float32)
    mel_one, wave_one = segment_clip(np.zeros((313, 128), np.float32), clip, STGRAM_MFN)
    assert mel_one.shape == (1, 313, 128)
    np.testing.assert_array_equal(wave_one[0], clip)
    # a clip ending inside the last segment's final half hop is zero-padded
    padded = segment_waveform(clip[:159_800], STGRAM_MFN)
    np.testing.assert_array_equal(padded[0, 159_800:], 0.0)


def test_reconstruction_rows_see_the_original_or_a_silent_waveform(small):
    model, mel, wave = small
    mel, wave = mel[:2], wave[:2]
    mel2, wave2, is_recon = with_reconstructions(mel, wave, mel + 0.5)  # 4 rows: the fixture's compiled batch
    assert mel2.shape == (4,) + mel.shape[1:] and wave2.shape == (4, wave.shape[1])
    np.testing.assert_array_equal(np.asarray(is_recon), [False] * 2 + [True] * 2)
    np.testing.assert_array_equal(np.asarray(wave2[2:]), np.asarray(wave))
    b = forward(model, mel2, wave2)["recon_logit"]  # 'original' (default): the model never reads is_recon
    # 'zeros': reconstruction rows get the Tgram of silence (same weights, the other config)
    graphdef, _ = nnx.split(nnx.eval_shape(
        lambda: GeCoNet(dataclasses.replace(SMALL, recon_wave="zeros"), rngs=nnx.Rngs(key(0)))))
    zeros = nnx.merge(graphdef, nnx.state(model))
    c = forward(zeros, mel2, wave2, is_recon=is_recon)["recon_logit"]
    silent = forward(model, mel2, wave2.at[2:].set(0.0))["recon_logit"]
    np.testing.assert_allclose(np.asarray(c), np.asarray(silent), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(c[:2]), np.asarray(b[:2]), rtol=1e-5, atol=1e-5)  # eval: rows apart
    assert not np.allclose(np.asarray(c[2:]), np.asarray(b[2:]), atol=1e-4)
    all_real = forward(zeros, mel2, wave2, is_recon=jnp.zeros(4, bool))["recon_logit"]
    np.testing.assert_allclose(np.asarray(all_real), np.asarray(b), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- learning


def test_a_few_sgd_steps_learn_a_toy_two_class_problem(small):
    """Class 0: a 1 kHz tone, class 1: a 3 kHz tone, random phase and noise; CE falls.
    (The fixture's untrained net, used functionally: its own state is not changed.)"""
    model, cfg = small[0], SMALL
    rng = np.random.default_rng(0)
    t = np.arange(cfg.segment_samples) / cfg.frontend.sample_rate
    labels = np.array([0, 1] * 4)
    freqs = np.where(labels == 0, 1000.0, 3000.0)
    wave = (0.3 * np.sin(2 * np.pi * freqs[:, None] * t + rng.uniform(0, 6.3, (8, 1)))
            + 0.05 * rng.normal(size=(8, t.size))).astype(np.float32)
    wave = jnp.asarray(wave)
    mel = _log_mel(wave, cfg.frontend)
    labels = jnp.asarray(labels)

    graphdef, params, model_state = split_model(model)
    tx = optax.sgd(0.05)  # plain SGD: the cheapest update to compile
    opt_state = tx.init(params)

    def loss_fn(params, model_state):
        net = nnx.merge(graphdef, params, model_state, copy=True)  # fresh variables under the grad trace
        out = net(mel, wave, train=True, labels=labels)
        loss = optax.softmax_cross_entropy_with_integer_labels(out["id_logits"], labels).mean()
        return loss, nnx.state(net, nnx.Not(nnx.Param))

    @jax.jit
    def step(params, model_state, opt_state):
        (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, model_state)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), model_state, opt_state, loss

    losses = []
    for _ in range(12):
        params, model_state, opt_state, loss = step(params, model_state, opt_state)
        losses.append(float(loss))
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses
    # a balanced two-class batch: no input-blind predictor gets below ln 2
    assert losses[-1] < 0.5 * math.log(2.0), losses
