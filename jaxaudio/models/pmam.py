"""PMAM: prototype-based masked audio model (Cai et al., ICASSP 2025) — the PaSST + CNN SED network.

One network serves the three stages of the recipe (spec/papers.md §1):

* GMM fitting reads frame features: ``encode(...)['passt_frames']`` (the reference's
  ``after_interpolate`` hook, 768-d) or ``context_features(..., layer=i)`` (``transformer_i``).
* Masked pre-training: ``mam_forward`` hides frames of the fused sequence, runs the context
  network and the MLM head to ``h (batch, 1000, 768)``; ``prototype_probs(h, means)`` turns
  it into per-prototype probabilities, and the AT branch predicts which prototypes occur in
  the clip. ``jaxaudio.objectives.ssl.pmam_loss`` scores both.
* Fine-tuning: ``sed_forward`` gives frame probabilities of the ``n_classes`` events.

Encoder (Transformer4SED ``PaSST_CNN``)::

    mel (batch, 1000, 128)
     |- PaSST: block-``feature_layer`` tokens -> drop cls/dist -> LayerNorm -> attention pool over
     |         the 12 frequency patches -> (batch, 99, 768) -> repeat last frame to 100
     |         -> linear x10 -> passt_frames (batch, 1000, 768) -> Linear -> (batch, 1000, d_dec)
     |- CNN:   (batch, 250, 384) -> linear x4 -> (batch, 1000, 384) -> Linear -> * w
     '- fused = PaSST part + w * CNN part, w a learnable scalar (0.5 at start)

The AT branch reads the *final* (normed) PaSST patch tokens: attention pool (12 heads) over all
patches -> Linear -> sigmoid; one head with ``n_prototypes`` outputs for pre-training and one
with ``n_classes`` for fine-tuning, sharing the pool (the reference swaps ``class_num``
between stages). The fusion weight trains only in the MLM stage in the reference; freezing it
later is the optimizer's job (e.g. a param-group filter on ``fusion_weight``).

Train/eval is an explicit, required, keyword-only ``train`` argument on every entry point
(``gmm_features`` alone defaults to eval); NNX's ``model.train()`` / ``model.eval()`` mode
flags change nothing. ``rngs`` (a key or ``nnx.Rngs``) feeds dropout (the CNN's 0.5 in the
paper config) and is required when ``train=True``. In train mode the CNN's BatchNorm
statistics update in place, so a jit step should return the split state as the CRNN's does.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.nn.cnn import CNN, PMAM_CNN, CNNConfig, as_rngs, torch_uniform
from jaxaudio.nn.global_local import GlobalLocal, global_local
from jaxaudio.nn.masking import ReplacementPlan, apply_replacement, token_only_plan
from jaxaudio.nn.pooling import AttentionPool, linear_softmax_pooling
from jaxaudio.nn.relpos import ContextNetwork
from jaxaudio.nn.vit import NUM_PREFIX_TOKENS, PASST_S_LORA, ViT, ViTConfig, frequency_pool, interpolate_time
from jaxaudio.nn.vit import TINY as VIT_TINY
from jaxaudio.nn.activations import exact_gelu

GMM_FEATURE_LAYERS = "'after_interpolate' or 'transformer_<i>'"
FREQ_POOLS = ("attention", "mean")


@dataclasses.dataclass(frozen=True)
class PMAMConfig:
    """Sizes of the PMAM network (defaults: the paper's, Transformer4SED ``config/pmam``).

    vit: the PaSST branch; feature_layer: its block (1-based) whose output feeds the frame path.
    cnn: the CNN branch (None: PaSST only, no fusion weight).
    freq_pool_heads / at_heads: heads of the frequency attention pool / the AT-branch pool.
    decoder_dim, context_layers, context_heads, mlp_ratio, context_dropout: the Transformer-XL
      context network. n_prototypes: K (GMM components). tau, leaky_slope: the prototype
      probability's temperature and LeakyReLU slope. n_classes: SED events. pred_len: output
      frames (100 fps over 10 s). upsample: PaSST time-patch -> frame factor (stride 10).
    fusion_weight_init: start value of the learnable CNN fusion weight w.
    freq_pool: how the frequency patches of a time step become one frame: "attention" (PMAM,
      ``freq_pool_heads`` heads) or "mean" (MAT-SED; no pool module). passt_proj: the Linear from
      the PaSST width to ``decoder_dim`` (PMAM); False feeds the PaSST frames to the context network
      as they are (MAT-SED; needs ``decoder_dim == vit.dim``). Both defaults are PMAM's.
    """

    vit: ViTConfig = PASST_S_LORA
    feature_layer: int = 10
    cnn: CNNConfig | None = PMAM_CNN
    freq_pool_heads: int = 6
    at_heads: int = 12
    decoder_dim: int = 384
    context_layers: int = 3
    context_heads: int = 12
    mlp_ratio: float = 1.0
    context_dropout: float = 0.0
    n_prototypes: int = 30
    tau: float = 0.1
    leaky_slope: float = 0.2
    n_classes: int = 10
    pred_len: int = 1000
    upsample: int = 10
    fusion_weight_init: float = 0.5
    norm_eps: float = 1e-5  # torch nn.LayerNorm default (the reference's ``out_norm``)
    freq_pool: str = "attention"
    passt_proj: bool = True

    def __post_init__(self):
        dim = self.vit.dim
        if not 1 <= self.feature_layer <= self.vit.depth:
            raise ConfigError(f"pmam.feature_layer={self.feature_layer}; expected 1..vit.depth={self.vit.depth}")
        if self.freq_pool not in FREQ_POOLS:
            raise ConfigError(f"pmam.freq_pool={self.freq_pool!r}; expected one of {', '.join(FREQ_POOLS)}")
        if not self.passt_proj and self.decoder_dim != dim:
            raise ConfigError(f"pmam.passt_proj=False feeds the PaSST frames to the context network, so "
                              f"decoder_dim={self.decoder_dim} must equal vit.dim={dim}")
        pool_heads = (("freq_pool_heads", self.freq_pool_heads, dim),) if self.freq_pool == "attention" else ()
        for key, heads, width in pool_heads + (("at_heads", self.at_heads, dim),
                                               ("context_heads", self.context_heads, self.decoder_dim)):
            if heads < 1 or width % heads:
                raise ConfigError(f"pmam.{key}={heads} must divide the width {width}")
        if self.pred_len % self.upsample:
            raise ConfigError(f"pmam.pred_len={self.pred_len} is not a multiple of pmam.upsample={self.upsample}")
        if self.tau <= 0:
            raise ConfigError(f"pmam.tau={self.tau}; expected a positive temperature")
        if self.n_prototypes < 1 or self.n_classes < 1:
            raise ConfigError(f"pmam.n_prototypes={self.n_prototypes}, pmam.n_classes={self.n_classes}; expected >= 1")

    @property
    def prototype_dim(self) -> int:
        """Width of the MLM head output and of the GMM means (the PaSST width)."""
        return self.vit.dim


PAPER = PMAMConfig()

# CPU-sized: 128 mel x 1000 frames in (the real front end), 12 x 99 patches of width 32.
TINY = PMAMConfig(
    vit=dataclasses.replace(VIT_TINY, n_mels=128, max_frames=998, out_layer=None),
    feature_layer=2,
    cnn=CNNConfig(channels=(8, 16, 32), pooling=((2, 4), (2, 4), (1, 8)), activation="cg"),
    freq_pool_heads=4,
    at_heads=4,
    decoder_dim=32,
    context_layers=2,
    context_heads=4,
    n_prototypes=8,
)


def _dense(fan_in: int, fan_out: int, rngs: nnx.Rngs) -> nnx.Linear:
    """``torch.nn.Linear``'s default init, so from-scratch heads start like the reference's."""
    init = torch_uniform(fan_in)
    return nnx.Linear(fan_in, fan_out, kernel_init=init, bias_init=init, rngs=rngs)


def _resize_to(x: jax.Array, frames: int) -> jax.Array:
    """Linear (align_corners=False) upsampling of ``(batch, time, dim)`` to ``frames`` frames."""
    time = x.shape[1]
    if frames % time:
        raise ConfigError(
            f"CNN branch gives {time} frames, which do not divide pmam.pred_len={frames}; "
            "choose cnn.pooling so its time factor divides the frame count"
        )
    return interpolate_time(x, frames // time)


def prototype_probs(h: jax.Array, prototypes: jax.Array, *, tau: float = 0.1, slope: float = 0.2) -> jax.Array:
    """``sigmoid((2 leaky_relu(cos(h_t, mu_k), slope) - 1) / tau)``: ``(batch, T, D), (K, D) -> (batch, T, K)``.

    Both sides are L2-normalised as ``torch.nn.functional.normalize`` (norm floored at 1e-12).
    """
    if h.shape[-1] != prototypes.shape[-1]:
        raise ConfigError(
            f"prototypes have width {prototypes.shape[-1]} but the MLM head gives {h.shape[-1]}; "
            "fit the GMM on features of the head's width (the PaSST width)"
        )

    def unit(v):
        return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-12)

    cos = unit(h) @ unit(prototypes.astype(h.dtype)).T
    return jax.nn.sigmoid((2.0 * jax.nn.leaky_relu(cos, negative_slope=slope) - 1.0) / tau)


class PMAM(nnx.Module):
    """PaSST + CNN encoder, Transformer-XL context network, MLM / SED / AT heads (module docstring)."""

    def __init__(self, cfg: PMAMConfig = PAPER, *, rngs: nnx.Rngs):
        self.cfg = cfg
        dim, dec = cfg.vit.dim, cfg.decoder_dim
        self.encoder = ViT(cfg.vit, rngs=rngs)
        self.out_norm = nnx.LayerNorm(dim, epsilon=cfg.norm_eps, rngs=rngs)
        if cfg.freq_pool == "attention":
            self.freq_pool = AttentionPool(dim, cfg.freq_pool_heads, rngs=rngs)
        if cfg.passt_proj:
            self.passt_proj = _dense(dim, dec, rngs)
        if cfg.cnn is not None:
            self.cnn = CNN(cfg.cnn, rngs=rngs)
            self.cnn_proj = _dense(cfg.cnn.channels[-1], dec, rngs)
            self.fusion_weight = nnx.Param(jnp.asarray(cfg.fusion_weight_init, jnp.float32))
        self.mask_token = nnx.Param(0.02 * jax.random.normal(rngs.params(), (dec,)))
        self.context = ContextNetwork(cfg.context_layers, dec, cfg.context_heads, mlp_ratio=cfg.mlp_ratio,
                                      dropout=cfg.context_dropout, rngs=rngs)
        self.mlm_hidden = _dense(dec, dec, rngs)
        self.mlm_out = _dense(dec, cfg.prototype_dim, rngs)
        self.classifier = _dense(dec, cfg.n_classes, rngs)
        self.at_pool = AttentionPool(dim, cfg.at_heads, rngs=rngs)
        self.at_prototype_head = _dense(dim, cfg.n_prototypes, rngs)
        self.at_class_head = _dense(dim, cfg.n_classes, rngs)

    # ------------------------------------------------------------------ encoder
    def _passt_frames(self, mel: jax.Array, *, train: bool, rngs, pad_to: int | None) -> tuple[jax.Array, dict]:
        """PaSST branch: ViT -> out_norm -> frequency pooling -> x upsample: ``(batch, frames, vit.dim)``."""
        vit_out = self.encoder(mel, train=train, rngs=rngs, return_layer=self.cfg.feature_layer)
        n_freq, n_time = self.encoder.grid_shape(mel.shape[1], train=train)
        patches = self.out_norm(vit_out["patch_tokens"])
        pool = (functools.partial(self.freq_pool, train=train, rngs=rngs) if self.cfg.freq_pool == "attention"
                else None)
        frames = frequency_pool(patches, n_freq, n_time, mode=self.cfg.freq_pool, pool_module=pool)
        if pad_to is not None and n_time > pad_to:
            raise ConfigError(
                f"PaSST gives {n_time} time patches but pmam.pred_len/upsample = {pad_to}; "
                "raise pred_len or shorten the input"
            )
        return interpolate_time(frames, self.cfg.upsample, pad_to=pad_to), vit_out

    def encode(self, mel: jax.Array, *, train: bool, rngs=None,
               sliding: GlobalLocal | None = None) -> dict[str, jax.Array]:
        """``mel (batch, frames, n_mels)`` -> dict:

        ``fused (batch, pred_len, decoder_dim)``: the context network's input.
        ``passt_frames (batch, pred_len, vit.dim)``: PaSST branch after interpolation (GMM features).
        ``passt_final (batch, n_patches, vit.dim)``: final normed PaSST patch tokens (AT branch).

        sliding: global-local fusion of the PaSST branch (``nn/global_local.py``): its frames are
        ``local_weight`` x the overlap-averaged encodings of windows of ``window`` mel frames,
        ``step`` apart, plus the rest x the whole clip's. The windows, like the reference's, skip
        the pad to ``pred_len / upsample`` patch columns; the CNN branch and AT branch see the
        whole clip only (``Transformer4SED src/models/cnn_transformer/passt_cnn.py``).
        """
        cfg = self.cfg
        if mel.ndim != 3:
            raise ConfigError(f"PMAM input has shape {mel.shape}; expected (batch, frames, n_mels)")
        rngs = as_rngs(rngs)
        passt_frames, vit_out = self._passt_frames(mel, train=train, rngs=rngs, pad_to=cfg.pred_len // cfg.upsample)
        if sliding is not None:
            def branch(window):
                return self._passt_frames(window, train=train, rngs=rngs, pad_to=None)[0]

            passt_frames = global_local(branch, mel, window=sliding.window, step=sliding.step,
                                        local_weight=sliding.local_weight, global_encoding=passt_frames)
        fused = self.passt_proj(passt_frames) if cfg.passt_proj else passt_frames
        if cfg.cnn is not None:
            cnn_frames = _resize_to(self.cnn(mel, train=train, rngs=rngs), cfg.pred_len)
            fused = fused + self.fusion_weight[...] * self.cnn_proj(cnn_frames)
        return {
            "fused": fused,
            "passt_frames": passt_frames,
            "passt_final": vit_out["final"][:, NUM_PREFIX_TOKENS:],
        }

    def _at_logits(self, passt_final: jax.Array, head: nnx.Linear, *, train: bool, rngs=None) -> jax.Array:
        return head(self.at_pool(passt_final, train=train, rngs=rngs))

    # ------------------------------------------------------------ pre-training
    def mlm_head(self, x: jax.Array) -> jax.Array:
        """Linear -> exact GELU -> Linear: ``(batch, T, decoder_dim) -> (batch, T, prototype_dim)``."""
        return self.mlm_out(exact_gelu(self.mlm_hidden(x)))

    def mam_forward(self, mel: jax.Array, mask: jax.Array, plan: ReplacementPlan | None = None, *,
                    prototypes: jax.Array | None = None, train: bool, rngs=None) -> dict[str, jax.Array]:
        """Masked-audio-model pass.

        mask: ``(batch, pred_len)`` bool, the hidden frames (``nn.masking.block_mask``).
        plan: what the hidden frames show (``nn.masking.replacement_plan``); None: the mask
          token on every hidden frame.
        prototypes: ``(K, prototype_dim)`` GMM means; when given, ``prototype_probs`` is added.
        Returns ``h (batch, pred_len, prototype_dim)``, ``at_logits``/``at_probs (batch, K)``,
        ``fused`` (the pre-mask context input) and ``passt_frames``.
        """
        cfg = self.cfg
        if mask.shape != (mel.shape[0], cfg.pred_len):
            raise ConfigError(
                f"MAM mask has shape {mask.shape}; expected (batch, pred_len) = {(mel.shape[0], cfg.pred_len)}"
            )
        rngs = as_rngs(rngs)
        enc = self.encode(mel, train=train, rngs=rngs)
        plan = token_only_plan(mask) if plan is None else plan
        x = apply_replacement(enc["fused"], plan, self.mask_token[...])
        h = self.mlm_head(self.context(x, train=train, rngs=rngs))
        at_logits = self._at_logits(enc["passt_final"], self.at_prototype_head, train=train, rngs=rngs)
        out = {
            "h": h,
            "at_logits": at_logits,
            "at_probs": jax.nn.sigmoid(at_logits),
            "fused": enc["fused"],
            "passt_frames": enc["passt_frames"],
        }
        if prototypes is not None:
            out["prototype_probs"] = self.prototype_probs(h, prototypes)
        return out

    def prototype_probs(self, h: jax.Array, prototypes: jax.Array) -> jax.Array:
        """Per-frame prototype probabilities with this config's ``tau`` and LeakyReLU slope."""
        return prototype_probs(h, prototypes, tau=self.cfg.tau, slope=self.cfg.leaky_slope)

    # ------------------------------------------------------------- fine-tuning
    def sed_forward(self, mel: jax.Array, *, train: bool, rngs=None, temperature: float = 1.0,
                    sliding: GlobalLocal | None = None) -> dict[str, jax.Array]:
        """Unmasked pass for detection: ``strong (batch, pred_len, n_classes)`` = sigmoid(logits / temperature),
        ``weak (batch, n_classes)`` by linear-softmax pooling, ``weak_at (batch, n_classes)`` from the AT branch.
        sliding: global-local fusion of the encoder (see ``encode``)."""
        rngs = as_rngs(rngs)
        enc = self.encode(mel, train=train, rngs=rngs, sliding=sliding)
        x = self.context(enc["fused"], train=train, rngs=rngs)
        strong = jax.nn.sigmoid(self.classifier(x) / temperature)
        weak_at = jax.nn.sigmoid(self._at_logits(enc["passt_final"], self.at_class_head, train=train, rngs=rngs))
        return {"strong": strong, "weak": linear_softmax_pooling(strong), "weak_at": weak_at}

    # ------------------------------------------------------- features for GMM
    def context_features(self, mel: jax.Array, layer: int, *, train: bool, rngs=None) -> jax.Array:
        """Output of context block ``layer`` (0-based, the reference's ``transformer_<layer>``) on
        unmasked input: ``(batch, pred_len, decoder_dim)``."""
        if not 0 <= layer < self.cfg.context_layers:
            raise ConfigError(f"context layer={layer}; expected 0..{self.cfg.context_layers - 1}")
        rngs = as_rngs(rngs)
        x = self.encode(mel, train=train, rngs=rngs)["fused"]
        return self.context(x, train=train, rngs=rngs, stop_after=layer)

    def gmm_features(self, mel: jax.Array, feature_layer: str = "after_interpolate", *,
                     train: bool = False, rngs=None) -> jax.Array:
        """Frame features for prototype fitting, by the reference's layer names (eval mode by default).

        ``'after_interpolate'``: PaSST frames ``(batch, pred_len, vit.dim)``;
        ``'transformer_<i>'``: context block ``i`` ``(batch, pred_len, decoder_dim)``.
        """
        if feature_layer == "after_interpolate":
            return self.encode(mel, train=train, rngs=rngs)["passt_frames"]
        prefix = "transformer_"
        if feature_layer.startswith(prefix) and feature_layer[len(prefix):].isdigit():
            return self.context_features(mel, int(feature_layer[len(prefix):]), train=train, rngs=rngs)
        raise ConfigError(f"feature_layer={feature_layer!r}; expected {GMM_FEATURE_LAYERS}")
