"""GeCo's feature extractor and heads: an STgram-MFN network (log-mel + learnable Tgram -> MobileFaceNet).

GeCo (arXiv 2305.12111) trains a feature extractor on normal clips and on PAE reconstructions with
cross-entropy over machine IDs, a supervised contrastive loss, and (we infer from its Fig. 1,
"CE-BCE") a binary head saying whether the input is a reconstruction. What we have of the
paper does not state the extractor (our spec, papers.md section 3: "not retrieved"); we build
the STgram-MFN network (Liu et al., ICASSP 2022, ``liuyoude/STgram-MFN`` ``model.py``), the
usual reference row for DCASE2020 task 2:

    wave (batch, samples) -> TgramBranch -> tgram (batch, frames, n_mels)
    mel  (batch, frames, n_mels) ---------------------------+
    stack [mel, tgram] as 2 channels -> (batch, frames, n_mels, 2)
    -> MobileFaceNetLite -> embedding (batch, emb)
    -> id head (linear softmax, or ArcFace) -> id_logits (batch, n_classes)
    -> recon head (linear) -> recon_logit (batch,)

Layout: NHWC with H = frames, W = mel bins; PyTorch's (N, C, mel, time) maps to ours by a
transpose, so its depthwise kernel (8, 20) is our (20, 8).

Train/eval: an explicit ``train`` (BatchNorm batch statistics and running-average updates),
as ``models/crnn.py``; the network has no dropout, so ``rngs`` is accepted and unused.

Facts from STgram-MFN (``model.py`` / ``config.yaml`` at commit 6c1fca0, and ``net.py`` at HEAD):
16 kHz; torchaudio MelSpectrogram (n_fft = win 1024, hop 512, 128 HTK mels, periodic Hann,
centred, reflect, power 2) + AmplitudeToDB -> 313 frames for 10 s; Tgram = Conv1d(1 -> 128,
k 1024, s 512, pad 512, no bias) + 3 x [LayerNorm(313) over time, LeakyReLU 0.2, Conv1d(128, 128,
3, pad 1, no bias)]; MobileFaceNet: conv 3x3/2 (2 -> 64) + BN + PReLU, depthwise 3x3 + BN +
PReLU, bottlenecks (t, c, n, s) [2,64,5,2], [4,128,1,2], [2,128,6,1], [4,128,1,2], [2,128,2,1]
(pw 1x1 -> BN -> PReLU -> dw 3x3 -> BN -> PReLU -> pw-linear 1x1 -> BN; residual when stride 1
and channels unchanged; expansion multiplies the *input* channels), conv 1x1 -> 512 + BN + PReLU,
linear depthwise conv over the whole remaining (8 x 20) map + BN, 1x1 -> 128 + BN = embedding;
ArcFace (``ArcMarginProduct``: class default m 0.5, s 32; ``STgramMFN`` default m 0.5, s 30;
``config.yaml`` margin 0.7, scale 30, the run named "STgram_MFN_ArcFace(m=0.7,s=30)"); 41 ID
classes; anomaly score = mean over the clip's inputs of -log softmax(logits)[id].
Conv weights N(0, sqrt(2 / (kh kw out))), BN scale 1 / shift 0, PReLU slope 0.25, Tgram convs
and linears PyTorch-default U(+-1/sqrt(fan_in)), ArcFace weights Xavier-uniform; we init alike.

Parameters (PyTorch, counted from that code with 41 classes): 1,345,087 with the linear head
(Tgram 280,406 + MobileFaceNet 1,064,681); 1,350,335 with ArcFace, which counts the unused
``fc_out`` (5,289) beside the ArcFace weight (5,248). Ours: 1,345,087 (linear) and 1,345,046
(ArcFace, no unused layer); GeCo's recon head adds 129.

Where STgram-MFN differs from what we do, and the choices the papers leave open ("our choice"):
* Eval logits with ArcFace: STgram-MFN's ``eval`` passes the label, so its test scores come
  from margin logits; we use ``scale * cos`` in eval: the margin is a training device, and
  without it a clip's score does not depend on a hyper-parameter of the loss.
* The recon head is one linear layer on the embedding (our choice; GeCo gives no sizes).
* A reconstruction sample is a PAE-predicted log-mel and carries no waveform. By default
  (``recon_wave='original'``, our choice) its Tgram channel is computed from the original clip's
  waveform, so the two channels disagree: the recon head then has to find where the mel departs
  from what the waveform says, a task about the mel's fine structure, which is what we want the
  features to learn. ``recon_wave='zeros'`` feeds silence instead; the Tgram of silence is a
  constant map (the LayerNorm shifts), so the head can spot reconstructions from that channel
  alone, a shortcut that teaches the extractor nothing; offered for comparison.
* Segments (our choice): ``frames`` per segment (313 in the preset, a whole 10 s clip),
  hop ``segment_hop`` (default: ``frames``, no overlap), plus one segment flush with the clip's
  end when the hops leave a tail, so every frame is scored; see ``segment_starts``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxaudio.audio.features import FrontEndConfig
from jaxaudio.errors import ConfigError, ShapeError
from jaxaudio.nn.cnn import torch_uniform

ACTIVATIONS = ("prelu", "relu")
POOLINGS = ("gdc", "mean")
HEADS = ("linear", "arcface")
RECON_WAVES = ("original", "zeros")
# The named scope of the Tgram's strided conv on the waveform (``TgramBranch.extract``): the
# learned counterpart of the log-mel front end, which the int8 export keeps in float like the
# log-mel (an int8 waveform loses the quiet clips); see experiments/geco/system.py.
TGRAM_SCOPE = "tgram_extract"

# STgram-MFN's log-mel: torchaudio MelSpectrogram defaults (periodic Hann, centred, reflect, HTK,
# no norm, 0 Hz to Nyquist) + AmplitudeToDB(stype='power'): 10 log10(max(x, 1e-10)), no top_db.
STGRAM_FRONTEND = FrontEndConfig(
    sample_rate=16000, n_fft=1024, win_length=1024, hop_length=512, n_mels=128,
    mel_scale="htk", window="hann", window_periodic=True, center=True, pad_mode="reflect",
    power=2.0, log="db", amin=1e-10,
)
# The small CPU default: the same recipe at a quarter of the FFT, 16 mels (our choice).
TINY_FRONTEND = dataclasses.replace(STGRAM_FRONTEND, n_fft=256, win_length=256, hop_length=128, n_mels=16)

Bottleneck = tuple[int, int, int, int]  # (expansion t, channels c, repeats n, stride s)


@dataclasses.dataclass(frozen=True)
class GeCoConfig:
    """Sizes of the network; defaults are a small CPU model (our choice), ``STGRAM_MFN`` the paper's.

    frontend: the log-mel front end the ``mel`` input comes from; the Tgram takes its
      win_length (kernel), hop_length (stride) and n_mels (channels) so its frames line up.
    frames: frames per input segment. The Tgram's LayerNorm normalises over time with one affine
      weight per frame (as STgram-MFN's ``LayerNorm(313)``), and the global depthwise conv's
      kernel is the remaining map, so the input length is fixed.
    n_classes: machine-ID classes.
    wave_branch: stack the Tgram as a second channel (STgram); False = the log-mel alone.
    tgram_layers, tgram_slope: the Tgram encoder's [LayerNorm, LeakyReLU, Conv1d 3] blocks.
    stem_channels: the first 3x3/2 conv and its depthwise 3x3.
    bottlenecks: (t, c, n, s) per stage; the first of the n repeats has stride s.
    conv_channels: the 1x1 conv after the bottlenecks.
    embedding_dim: the embedding (1x1 conv + BN after the global pooling).
    activation: 'prelu' (per channel, STgram-MFN) or 'relu'.
    pooling: 'gdc' (linear depthwise conv over the remaining map, STgram-MFN) or 'mean'
      (global average: no parameters, any length if ``wave_branch`` is off).
    head: 'linear' (softmax over IDs, default) or 'arcface'.
    arc_margin, arc_scale: ArcFace m (radians) and s.
    recon_head: the real-vs-reconstruction logit (GeCo).
    recon_wave: what the Tgram sees for a reconstruction row ('original' or 'zeros'; module docstring).
    segment_hop: frames between segment starts; None = ``frames`` (our choice).
    bn_epsilon, bn_momentum_torch, ln_epsilon: PyTorch defaults (1e-5, 0.1, 1e-5).
    """

    # GeCo states none of these sizes: the extractor is STgram-MFN (our choice), and the small
    # defaults below are our choice for CPU runs; STGRAM_MFN holds the published sizes.
    frontend: FrontEndConfig = TINY_FRONTEND  # our choice (STgram-MFN: STGRAM_FRONTEND)
    frames: int = 32  # our choice (STgram-MFN: 313)
    n_classes: int = 4  # set from the data (STgram-MFN: 41 machine IDs)
    wave_branch: bool = True  # STgram-MFN
    tgram_layers: int = 3  # STgram-MFN
    tgram_slope: float = 0.2  # STgram-MFN
    stem_channels: int = 16  # our choice (STgram-MFN: 64)
    bottlenecks: tuple[Bottleneck, ...] = ((2, 16, 1, 2), (2, 32, 2, 2))  # our choice (STGRAM_MFN has the 5 stages)
    conv_channels: int = 64  # our choice (STgram-MFN: 512)
    embedding_dim: int = 32  # our choice (STgram-MFN: 128)
    activation: str = "prelu"  # STgram-MFN
    pooling: str = "gdc"  # STgram-MFN
    head: str = "linear"  # our choice of default (STgram-MFN trains with ArcFace)
    arc_margin: float = 0.5  # STgram-MFN's code default (its config.yaml: 0.7)
    arc_scale: float = 30.0  # STgram-MFN
    recon_head: bool = True  # GeCo (inferred from its Fig. 1); one linear layer: our choice
    recon_wave: str = "original"  # our choice (module docstring)
    segment_hop: int | None = None  # our choice: = frames
    bn_epsilon: float = 1e-5  # PyTorch default, as STgram-MFN
    bn_momentum_torch: float = 0.1  # PyTorch default, as STgram-MFN
    ln_epsilon: float = 1e-5  # PyTorch default, as STgram-MFN

    def __post_init__(self):
        def bad(key, problem):
            raise ConfigError(f"GeCoConfig.{key}: {problem}")

        if isinstance(self.frontend, Mapping):  # a config section: build the dataclass
            try:
                object.__setattr__(self, "frontend", FrontEndConfig(**dict(self.frontend)))
            except TypeError as err:
                bad("frontend", str(err))
        if not isinstance(self.frontend, FrontEndConfig):
            bad("frontend", f"expected a FrontEndConfig, got {type(self.frontend).__name__}")
        try:
            stages = tuple(tuple(int(v) for v in stage) for stage in self.bottlenecks)
        except (TypeError, ValueError):
            bad("bottlenecks", f"expected (t, c, n, s) integer tuples, got {self.bottlenecks!r}")
        object.__setattr__(self, "bottlenecks", stages)
        if not stages:
            bad("bottlenecks", "needs at least one (t, c, n, s) stage")
        for i, stage in enumerate(stages):
            if len(stage) != 4 or min(stage) < 1:
                bad(f"bottlenecks[{i}]", f"expected four positive integers (t, c, n, s), got {stage!r}")
            if stage[3] not in (1, 2):
                bad(f"bottlenecks[{i}]", f"stride {stage[3]}; expected 1 or 2")
        for key in ("frames", "n_classes", "stem_channels", "conv_channels", "embedding_dim"):
            if int(getattr(self, key)) < 1:
                bad(key, f"must be a positive integer, got {getattr(self, key)!r}")
        if self.tgram_layers < 0:
            bad("tgram_layers", f"must be >= 0, got {self.tgram_layers}")
        for key, allowed in (("activation", ACTIVATIONS), ("pooling", POOLINGS), ("head", HEADS),
                             ("recon_wave", RECON_WAVES)):
            if getattr(self, key) not in allowed:
                bad(key, f"{getattr(self, key)!r}; expected one of {allowed}")
        if not 0.0 <= self.arc_margin < math.pi / 2:
            bad("arc_margin", f"{self.arc_margin}; expected radians in [0, pi/2)")
        if self.arc_scale <= 0:
            bad("arc_scale", f"must be positive, got {self.arc_scale}")
        if self.segment_hop is not None and int(self.segment_hop) < 1:
            bad("segment_hop", f"must be a positive number of frames or None, got {self.segment_hop!r}")
        if self.frontend.num_frames(self.segment_samples) != self.frames:  # guards segment_samples
            bad("frames", f"no waveform length gives {self.frames} frames with this frontend")

    @property
    def n_mels(self) -> int:
        return self.frontend.n_mels

    @property
    def in_channels(self) -> int:
        return 2 if self.wave_branch else 1

    @property
    def hop_frames(self) -> int:
        """Frames between segment starts."""
        return int(self.segment_hop) if self.segment_hop is not None else self.frames

    @property
    def segment_samples(self) -> int:
        """Waveform length of one segment: the frontend gives it exactly ``frames`` frames.

        Centred framing: ``(frames - 1) * hop + hop // 2`` (the STgram preset: 160,000 samples,
        exactly its 10 s clips); Kaldi framing: ``(frames - 1) * hop + win_length``; one more
        sample when signal-level pre-emphasis drops the first.
        """
        fe = self.frontend
        extra = 1 if fe.preemphasis != 0.0 and fe.preemphasis_mode == "signal" else 0
        tail = fe.hop_length // 2 if fe.center else fe.win_length
        return (self.frames - 1) * fe.hop_length + tail + extra

    def map_size(self) -> tuple[int, int]:
        """(frames, mels) of the map the global pooling sees: each 3x3 conv with padding 1 and
        stride s gives ``(x - 1) // s + 1``."""
        t, f = self.frames, self.n_mels
        for s in (2,) + tuple(stage[3] for stage in self.bottlenecks):
            t, f = (t - 1) // s + 1, (f - 1) // s + 1
        return t, f


# The published STgram-MFN sizes (see the module docstring for the sources).
STGRAM_MFN = GeCoConfig(
    frontend=STGRAM_FRONTEND,
    frames=313,
    n_classes=41,
    stem_channels=64,
    bottlenecks=((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1)),
    conv_channels=512,
    embedding_dim=128,
    head="arcface",
    arc_margin=0.7,  # config.yaml (the class default is 0.5)
    arc_scale=30.0,
    recon_head=False,  # STgram-MFN has none
)
# GeCo on the STgram-MFN network: the same sizes plus the recon head (our choice of backbone).
GECO_STGRAM = dataclasses.replace(STGRAM_MFN, recon_head=True)

PRESETS = {"smoke": GeCoConfig(), "tiny": GeCoConfig(), "stgram_mfn": STGRAM_MFN, "paper": GECO_STGRAM}
# A 1.3 M-parameter CNN: the default rules (norms replicated, large kernels FSDP) are enough.
SHARDING_RULES: tuple[tuple[str, str], ...] = ()


# ----------------------------------------------------------------------------- layers


def _mfn_normal(kernel: tuple[int, int], out_ch: int):
    """MobileFaceNet's conv init: N(0, sqrt(2 / (kh kw out)))."""
    std = math.sqrt(2.0 / (kernel[0] * kernel[1] * out_ch))

    def init(key, shape, dtype=jnp.float32):
        return std * jax.random.normal(key, shape, dtype)

    return init


class PReLU(nnx.Module):
    """Per-channel PReLU ``max(0, x) + a min(0, x)``, a = 0.25 at init (``torch.nn.PReLU(c)``)."""

    def __init__(self, channels: int):
        self.alpha = nnx.Param(jnp.full((channels,), 0.25, jnp.float32))

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.where(x >= 0, x, self.alpha[...] * x)


class ConvBN(nnx.Module):
    """conv (no bias) -> BatchNorm -> activation (none when ``linear``); NHWC.

    Padding is explicit ``k // 2`` per side, as PyTorch's: XLA's 'SAME' puts the odd pad on the
    right for even inputs and stride 2, which shifts every window by one sample.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: tuple[int, int], stride: int, cfg: GeCoConfig, *,
                 depthwise: bool = False, linear: bool = False, padding: str = "torch", rngs: nnx.Rngs):
        pad = tuple((k // 2, k // 2) for k in kernel) if padding == "torch" else "VALID"  # tuples: hashable graphdef
        self.conv = nnx.Conv(
            in_ch, out_ch, kernel, strides=stride, padding=pad, use_bias=False,
            feature_group_count=in_ch if depthwise else 1, kernel_init=_mfn_normal(kernel, out_ch), rngs=rngs,
        )
        self.bn = nnx.BatchNorm(out_ch, epsilon=cfg.bn_epsilon, momentum=1.0 - cfg.bn_momentum_torch, rngs=rngs)
        self.linear = linear
        if not linear and cfg.activation == "prelu":
            self.act = PReLU(out_ch)
        self.activation = cfg.activation

    def __call__(self, x: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        x = self.bn(self.conv(x), use_running_average=not train)
        if self.linear:
            return x
        return self.act(x) if self.activation == "prelu" else jax.nn.relu(x)


class InvertedResidual(nnx.Module):
    """MobileFaceNet bottleneck: pw 1x1 (in -> in t) -> dw 3x3 / stride -> pw-linear 1x1 (-> out);
    the input is added back when the stride is 1 and the channels are unchanged."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int, cfg: GeCoConfig, *, rngs: nnx.Rngs):
        mid = in_ch * expansion
        self.residual = stride == 1 and in_ch == out_ch
        self.stride = stride
        self.expand = ConvBN(in_ch, mid, (1, 1), 1, cfg, rngs=rngs)
        self.depthwise = ConvBN(mid, mid, (3, 3), stride, cfg, depthwise=True, rngs=rngs)
        self.project = ConvBN(mid, out_ch, (1, 1), 1, cfg, linear=True, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        y = self.project(self.depthwise(self.expand(x, train=train), train=train), train=train)
        return x + y if self.residual else y


class TgramBranch(nnx.Module):
    """The learnable waveform front end: ``wave (batch, samples) -> (batch, frames, n_mels)``.

    Conv1d(1 -> n_mels, kernel win_length, stride hop_length, no bias), padded so that frame t
    covers the same samples as the log-mel's frame t. Centred framing puts the window at
    ``t hop - n_fft // 2 + (n_fft - win) // 2``, so the left pad is ``n_fft // 2 - (n_fft - win) // 2``
    and the right one ``win - left`` (STgram-MFN's 512 on both sides at n_fft = win = 1024); Kaldi
    framing needs none. Frames past the frontend's count (signal-level pre-emphasis drops a
    sample) are cut. Then
    ``tgram_layers`` x [LayerNorm over time (one affine weight per frame), LeakyReLU, Conv1d 3].
    """

    def __init__(self, cfg: GeCoConfig, *, rngs: nnx.Rngs):
        fe = cfg.frontend
        self.cfg = cfg
        win, hop, ch = fe.win_length, fe.hop_length, fe.n_mels
        left = fe.n_fft // 2 - (fe.n_fft - win) // 2
        self.padding = (left, win - left) if fe.center else (0, 0)
        self.extractor = nnx.Conv(1, ch, (win,), strides=hop, padding=(self.padding,), use_bias=False,
                                  kernel_init=torch_uniform(win), rngs=rngs)
        self.norms = nnx.List([
            nnx.LayerNorm(cfg.frames, epsilon=cfg.ln_epsilon, reduction_axes=1, feature_axes=1,
                          use_fast_variance=False, rngs=rngs)
            for _ in range(cfg.tgram_layers)])
        self.convs = nnx.List([
            nnx.Conv(ch, ch, (3,), padding=((1, 1),), use_bias=False, kernel_init=torch_uniform(3 * ch), rngs=rngs)
            for _ in range(cfg.tgram_layers)])

    def extract(self, wave: jax.Array) -> jax.Array:
        """The strided conv alone: ``(batch, samples) -> (batch, frontend.num_frames(samples), n_mels)``."""
        if wave.ndim != 2:
            raise ShapeError(f"TgramBranch: wave has shape {wave.shape}; expected (batch, samples)")
        frames = self.cfg.frontend.num_frames(wave.shape[1])
        if frames < 1:
            raise ShapeError(f"TgramBranch: {wave.shape[1]} samples are shorter than one window "
                             f"(frontend.win_length={self.cfg.frontend.win_length})")
        with jax.named_scope(TGRAM_SCOPE):
            return self.extractor(jnp.asarray(wave, jnp.float32)[..., None])[:, :frames]

    def __call__(self, wave: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        """``train`` / ``rngs``: the common convention; the branch has no train-time behaviour."""
        x = self.extract(wave)
        if x.shape[1] != self.cfg.frames:
            raise ShapeError(
                f"TgramBranch: {wave.shape[1]} samples give {x.shape[1]} frames; its LayerNorm over time "
                f"expects GeCoConfig.frames={self.cfg.frames} ({self.cfg.segment_samples} samples)")
        for norm, conv in zip(self.norms, self.convs):
            x = conv(jax.nn.leaky_relu(norm(x), negative_slope=self.cfg.tgram_slope))
        return x


class MobileFaceNetLite(nnx.Module):
    """``(batch, frames, n_mels, in_channels) -> embedding (batch, embedding_dim)``.

    conv 3x3/2 + BN + act -> depthwise 3x3 + BN + act -> bottlenecks -> 1x1 conv + BN + act ->
    global pooling ('gdc': linear depthwise conv whose kernel is the whole ``cfg.map_size()``, + BN;
    'mean': average) -> 1x1 conv + BN (linear) = embedding.
    """

    def __init__(self, cfg: GeCoConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        stem = cfg.stem_channels
        self.stem = ConvBN(cfg.in_channels, stem, (3, 3), 2, cfg, rngs=rngs)
        self.stem_dw = ConvBN(stem, stem, (3, 3), 1, cfg, depthwise=True, rngs=rngs)
        blocks, in_ch = [], stem
        for t, c, n, s in cfg.bottlenecks:
            for i in range(n):
                blocks.append(InvertedResidual(in_ch, c, s if i == 0 else 1, t, cfg, rngs=rngs))
                in_ch = c
        self.blocks = nnx.List(blocks)
        self.conv = ConvBN(in_ch, cfg.conv_channels, (1, 1), 1, cfg, rngs=rngs)
        if cfg.pooling == "gdc":
            self.gdc = ConvBN(cfg.conv_channels, cfg.conv_channels, cfg.map_size(), 1, cfg,
                              depthwise=True, linear=True, padding="valid", rngs=rngs)
        self.embed = ConvBN(cfg.conv_channels, cfg.embedding_dim, (1, 1), 1, cfg, linear=True, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        cfg = self.cfg
        if x.ndim != 4 or x.shape[-1] != cfg.in_channels or x.shape[2] != cfg.n_mels:
            raise ShapeError(f"MobileFaceNetLite: input has shape {x.shape}; expected "
                             f"(batch, frames, n_mels={cfg.n_mels}, channels={cfg.in_channels})")
        if cfg.pooling == "gdc" and x.shape[1] != cfg.frames:
            raise ShapeError(f"MobileFaceNetLite: {x.shape[1]} frames; pooling='gdc' fixes the input to "
                             f"GeCoConfig.frames={cfg.frames} (or use pooling='mean')")
        x = self.stem_dw(self.stem(x, train=train), train=train)
        for block in self.blocks:
            x = block(x, train=train)
        x = self.conv(x, train=train)
        if cfg.pooling == "gdc":
            x = self.gdc(x, train=train)
        else:
            x = jnp.mean(x, axis=(1, 2), keepdims=True)
        return self.embed(x, train=train)[:, 0, 0, :]


class ArcFaceHead(nnx.Module):
    """Additive angular margin (ArcFace): ``(batch, emb) -> (batch, n_classes)``.

    cos_j = <x / |x|, w_j / |w_j|>. With labels: the target column becomes cos(theta + m) while
    theta + m < pi (i.e. cos > cos(pi - m)), else cos - m sin(m) (the linear extension that keeps
    the logit decreasing in theta, as ``ArcMarginProduct(easy_margin=False)``); all times s.
    Without labels (eval): s * cos.
    """

    def __init__(self, emb: int, n_classes: int, margin: float, scale: float, *, rngs: nnx.Rngs):
        self.weight = nnx.Param(nnx.initializers.xavier_uniform()(rngs.params(), (emb, n_classes)))
        self.margin, self.scale = float(margin), float(scale)

    def cosine(self, x: jax.Array) -> jax.Array:
        w = self.weight[...]
        xn = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
        wn = w / jnp.maximum(jnp.linalg.norm(w, axis=0, keepdims=True), 1e-12)
        return jnp.clip(xn @ wn, -1.0, 1.0)

    def __call__(self, x: jax.Array, labels: jax.Array | None = None) -> jax.Array:
        cos = self.cosine(x)
        if labels is None:
            return self.scale * cos
        m = self.margin
        # 1e-7 keeps the gradient of the sine finite at |cos| = 1.
        sin = jnp.sqrt(jnp.clip(1.0 - cos * cos, 1e-7, 1.0))
        phi = cos * math.cos(m) - sin * math.sin(m)
        phi = jnp.where(cos > math.cos(math.pi - m), phi, cos - math.sin(math.pi - m) * m)
        onehot = jax.nn.one_hot(labels, cos.shape[-1], dtype=cos.dtype)
        return self.scale * (onehot * phi + (1.0 - onehot) * cos)


class GeCoNet(nnx.Module):
    """``__call__(mel (batch, frames, n_mels), wave (batch, samples) = None, *, train, rngs=None,
    tgram=None, labels=None, is_recon=None)`` -> ``{'embedding': (batch, emb), 'id_logits':
    (batch, n_classes), 'recon_logit': (batch,)}`` (float32; no 'recon_logit' without ``recon_head``).

    mel: the frontend's log-mel (``cfg.frontend``), ``cfg.frames`` frames (``segment_clip``).
    wave: the segment's waveform (``cfg.segment_samples``); ignored when ``wave_branch`` is off.
    tgram: a precomputed Tgram (batch, frames, n_mels) instead of ``wave``.
    labels: (batch,) class indices; with the ArcFace head and ``train=True`` they put the margin
      on the target column; otherwise unused (eval gives ``s cos``).
    is_recon: (batch,) bool, True for PAE reconstructions; used only with ``recon_wave='zeros'``,
      where those rows' waveform is replaced by silence. None: every row is real.
    """

    def __init__(self, cfg: GeCoConfig = GeCoConfig(), *, rngs: nnx.Rngs):
        self.cfg = cfg
        if cfg.wave_branch:
            self.tgram = TgramBranch(cfg, rngs=rngs)
        self.backbone = MobileFaceNetLite(cfg, rngs=rngs)
        emb = cfg.embedding_dim
        if cfg.head == "arcface":
            self.id_head = ArcFaceHead(emb, cfg.n_classes, cfg.arc_margin, cfg.arc_scale, rngs=rngs)
        else:
            init = torch_uniform(emb)
            self.id_head = nnx.Linear(emb, cfg.n_classes, kernel_init=init, bias_init=init, rngs=rngs)
        if cfg.recon_head:
            init = torch_uniform(emb)
            self.recon = nnx.Linear(emb, 1, kernel_init=init, bias_init=init, rngs=rngs)

    def __call__(self, mel: jax.Array, wave: jax.Array | None = None, *, train: bool, rngs=None,
                 tgram: jax.Array | None = None, labels: jax.Array | None = None,
                 is_recon: jax.Array | None = None) -> dict[str, jax.Array]:
        cfg = self.cfg
        if mel.ndim != 3 or mel.shape[2] != cfg.n_mels:
            raise ShapeError(f"GeCoNet: mel has shape {mel.shape}; expected (batch, frames, n_mels={cfg.n_mels})")
        mel = jnp.asarray(mel, jnp.float32)
        if cfg.wave_branch:
            if tgram is None:
                if wave is None:
                    raise ConfigError("GeCoConfig.wave_branch=True: GeCoNet needs `wave` (or a precomputed `tgram`)")
                if wave.ndim != 2 or wave.shape[0] != mel.shape[0]:
                    raise ShapeError(f"GeCoNet: wave has shape {wave.shape}; expected (batch={mel.shape[0]}, samples)")
                if cfg.recon_wave == "zeros" and is_recon is not None:
                    wave = jnp.where(jnp.asarray(is_recon, bool)[:, None], 0.0, wave)
                tgram = self.tgram(wave, train=train)
            if tgram.shape != mel.shape:
                raise ShapeError(f"GeCoNet: tgram has shape {tgram.shape}; expected the mel's {mel.shape}")
            x = jnp.stack([mel, jnp.asarray(tgram, jnp.float32)], axis=-1)
        else:
            x = mel[..., None]
        emb = self.backbone(x, train=train)
        if cfg.head == "arcface":
            logits = self.id_head(emb, labels if train else None)
        else:
            logits = self.id_head(emb)
        out = {"embedding": emb, "id_logits": logits}
        if cfg.recon_head:
            out["recon_logit"] = self.recon(emb)[:, 0]
        return out


# ----------------------------------------------------------------------------- scores


def anomaly_score(id_logits: jax.Array, class_id) -> jax.Array:
    """``-log softmax(id_logits)[class_id]`` per row: ``(..., n_classes), (...) or scalar -> (...)``.

    Higher = more anomalous: a normal clip of a machine is classified as that machine's ID.
    """
    logp = jax.nn.log_softmax(jnp.asarray(id_logits, jnp.float32), axis=-1)
    cid = jnp.broadcast_to(jnp.asarray(class_id, jnp.int32), logp.shape[:-1])
    return -jnp.take_along_axis(logp, cid[..., None], axis=-1)[..., 0]


def clip_score(id_logits: jax.Array, class_id) -> jax.Array:
    """A clip's score: the mean ``anomaly_score`` over its segments (STgram-MFN / GeCo).

    id_logits: (..., n_segments, n_classes); class_id: the clip's ID, scalar or (...) -> (...).
    """
    cid = jnp.asarray(class_id, jnp.int32)[..., None]
    return jnp.mean(anomaly_score(id_logits, cid), axis=-1)


# ----------------------------------------------------------------------------- segments


def segment_starts(n_frames: int, length: int, hop: int) -> np.ndarray:
    """Start frames of fixed-length segments: ``0, hop, 2 hop, ...`` while a segment fits, plus one
    flush with the end (``n_frames - length``) when those leave frames uncovered (our choice)."""
    if length < 1 or hop < 1:
        raise ConfigError(f"segments: length={length} and hop={hop} must be positive (GeCoConfig.frames / segment_hop)")
    if n_frames < length:
        raise ShapeError(f"segments: a clip of {n_frames} frames is shorter than one segment ({length} frames); "
                         "pad the clip or lower GeCoConfig.frames")
    starts = list(range(0, n_frames - length + 1, hop))
    if starts[-1] + length < n_frames:
        starts.append(n_frames - length)
    return np.asarray(starts, np.int64)


def _xp(x):
    return jnp if isinstance(x, jax.Array) else np


def _cut(x, starts: np.ndarray, length: int, axis: int):
    """``x``'s ``length``-long windows at ``starts`` along ``axis`` (negative), stacked just before it.

    numpy: one ``take``. jax: one static slice per window, stacked. Why not a gather: the starts are
    known when tracing, and a gather stores its index array in the graph; in the TFLite export of
    GeCo the waveform's (n_segments * segment_samples) int32 indices were a third of the int8 file.
    """
    if _xp(x) is np:
        index = starts[:, None] + np.arange(length)[None, :]
        shape = x.shape[:axis] + (len(starts), length) + (x.shape[axis + 1:] if axis != -1 else ())
        return np.take(x, index.reshape(-1), axis=axis).reshape(shape)
    return jnp.stack([jax.lax.slice_in_dim(x, int(s), int(s) + length, axis=x.ndim + axis) for s in starts],
                     axis=x.ndim + axis)


def segment_frames(feats, length: int, hop: int):
    """``(..., frames, n_mels) -> (..., n_segments, length, n_mels)`` at ``segment_starts``
    (numpy in, numpy out: a host-side data step; a jax array stays a jax array)."""
    feats = _xp(feats).asarray(feats)
    return _cut(feats, segment_starts(feats.shape[-2], length, hop), length, axis=-2)


def segment_waveform(wave, cfg: GeCoConfig, n_frames: int | None = None):
    """``(..., samples) -> (..., n_segments, cfg.segment_samples)``: the waveform of each segment.

    Segment k starting at frame t0 takes samples ``[t0 hop, t0 hop + segment_samples)``, so its
    Tgram frame j is centred where the clip's log-mel frame t0 + j is; zero-padded where the
    clip ends inside the last segment (at most half a hop with centred framing).
    n_frames: the clip's log-mel frame count (default: ``cfg.frontend.num_frames(samples)``).
    """
    xp = _xp(wave)
    wave = xp.asarray(wave)
    n = wave.shape[-1]
    n_frames = cfg.frontend.num_frames(n) if n_frames is None else n_frames
    starts = segment_starts(n_frames, cfg.frames, cfg.hop_frames) * cfg.frontend.hop_length
    size = cfg.segment_samples
    need = int(starts[-1]) + size
    if need > n:
        wave = xp.pad(wave, [(0, 0)] * (wave.ndim - 1) + [(0, need - n)])
    return _cut(wave, starts, size, axis=-1)


def segment_clip(mel, wave, cfg: GeCoConfig):
    """A clip's log-mel ``(frames, n_mels)`` and waveform ``(samples,)`` (leading axes allowed) ->
    ``mel (..., n_seg, cfg.frames, n_mels)``, ``wave (..., n_seg, cfg.segment_samples)``, aligned.

    The mel segments are cut from the clip's log-mel (so only the clip's edges see the frontend's
    padding); the waveform ones as ``segment_waveform``.
    """
    mel_segments = segment_frames(mel, cfg.frames, cfg.hop_frames)
    return mel_segments, segment_waveform(wave, cfg, n_frames=mel.shape[-2])


def with_reconstructions(mel, wave, recon_mel):
    """Stack originals and their PAE reconstructions into one batch:
    ``mel (b, T, F), wave (b, S), recon_mel (b, T, F) -> mel (2b, T, F), wave (2b, S), is_recon (2b,)``.

    Reconstruction rows carry the original clip's waveform; the model swaps it for silence when
    ``recon_wave='zeros'`` (``GeCoNet``'s ``is_recon``).
    """
    xp = _xp(mel)
    if recon_mel.shape != mel.shape:
        raise ShapeError(f"with_reconstructions: recon_mel has shape {recon_mel.shape}; expected the mel's {mel.shape}")
    b = mel.shape[0]
    is_recon = xp.concatenate([xp.zeros((b,), bool), xp.ones((b,), bool)])
    return xp.concatenate([mel, recon_mel]), xp.concatenate([wave, wave]), is_recon


__all__ = [
    "GeCoConfig", "STGRAM_MFN", "GECO_STGRAM", "STGRAM_FRONTEND", "TINY_FRONTEND", "PRESETS", "SHARDING_RULES",
    "TGRAM_SCOPE",
    "TgramBranch", "MobileFaceNetLite", "InvertedResidual", "ArcFaceHead", "PReLU", "GeCoNet",
    "anomaly_score", "clip_score", "segment_starts", "segment_frames", "segment_waveform", "segment_clip",
    "with_reconstructions",
]
