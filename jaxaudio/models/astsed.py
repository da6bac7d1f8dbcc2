"""AST-SED (Li et al., ICASSP 2023) and its AST-GRU baseline: an AST encoder read at layer 10,
then either the frequency-wise Transformer encoder (FTE) and the local GRU decoder (LGD), or
frequency mean pooling and a Bi-GRU at the patch rate (spec/papers.md §4; Transformer4SED
``src/models/ast/ast_models.py`` ``AST_SED``, ``ASTWithSlide``)::

    fbank (batch, <= 1024, 128), AudioSet-normalised; padded here to 1024 frames with ``pad_value``
     '- AST (``nn/ast.py``): block-10 tokens -> out_norm (its own LayerNorm, eps 1e-5, over all tokens)
        -> drop cls/dist -> grid (batch, 12, 101, 768)
    AST-SED:  FTE (``nn/frequency_transformer.py``) -> (batch, 101, 768) -> nearest x10 -> 1010 frames
              -> 2-layer Bi-GRU (768 per direction) -> Linear 1536 -> n_classes -> first pred_len frames
    AST-GRU:  mean over the 12 bands -> (batch, 101, 768) -> the same Bi-GRU at 101 steps -> Linear
              -> nearest x10 -> first pred_len frames
    strong = sigmoid(logits / temperature); weak = linear-softmax pooling of strong (clamped to [1e-7, 1])

The reference's AST-GRU (``context_block='gru'``) leaves its output at the patch rate; here its
predictions are repeated x ``upsample`` so that both variants are trained and scored on the same
label frames. There is no separate audio-tagging branch (``AST_SED`` returns the pooled clip
probability as its ``at_out``), so ``weak_at`` is ``weak`` and the fine-tuning's AT weight is 0.

Sliding-window inference (``ASTWithSlide``): the padded input is cut into windows of ``window``
frames ``step`` apart, each window encoded (AST + FTE or mean pool) on its own, the encodings
overlap-averaged onto the whole clip's patch grid (``nn/global_local.sliding_encode``, the
reference's placement ``round(start * 101 / 1024)``), then decoded once. ``local_weight`` < 1 mixes in
the whole clip's encoding as the MAT-SED global-local fusion does; the reference's variant is 1.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.nn.ast import AST_BASE, ASTConfig, ASTEncoder
from jaxaudio.nn.cnn import as_rngs, torch_uniform
from jaxaudio.nn.frequency_transformer import FrequencyTransformer
from jaxaudio.nn.global_local import GlobalLocal, global_local, sliding_encode
from jaxaudio.nn.gru import GRU
from jaxaudio.nn.pooling import linear_softmax_pooling
from jaxaudio.nn.vit import NUM_PREFIX_TOKENS, interpolate_time

FREQ_POOLS = ("fte", "mean")
DECODERS = ("lgd", "gru")
# The raw fbank is zero-padded before the AudioSet normalisation (audio/ast_frontend.py), so a padded
# frame of normalised input holds (0 + 4.2677393) / (2 * 4.5689974).
AUDIOSET_PAD_VALUE = 4.2677393 / (2 * 4.5689974)


@dataclasses.dataclass(frozen=True)
class ASTSEDConfig:
    """Sizes of AST-SED (defaults: the authors' ``AST_SED``: FTE + LGD on AST-base layer 10).

    ast: the encoder; its ``out_layer`` is the block read (10), ``max_frames`` the padded input (1024).
    freq_pool: "fte" (AST-SED) or "mean" (AST-GRU); decoder: "lgd" (Bi-GRU after the x``upsample``
      nearest upsampling) or "gru" (Bi-GRU at the patch rate, predictions upsampled after).
    fte_depth / fte_heads / fte_mlp_ratio: the FTE's blocks. gru_hidden / gru_layers: per direction.
    pred_len: output frames (100 per second over 10 s). pad_value: what a padded input frame holds.
    export_rnn: the GRU's export loop (``nn/gru.py``), for TFLite; same numbers.
    """

    ast: ASTConfig = AST_BASE
    freq_pool: str = "fte"
    decoder: str = "lgd"
    fte_depth: int = 2
    fte_heads: int = 4
    fte_mlp_ratio: float = 4.0
    gru_hidden: int = 768
    gru_layers: int = 2
    upsample: int = 10
    n_classes: int = 10
    pred_len: int = 1000
    pad_value: float = AUDIOSET_PAD_VALUE
    norm_eps: float = 1e-5   # torch nn.LayerNorm's (out_norm and the FTE)
    export_rnn: bool = False

    def __post_init__(self):
        if self.freq_pool not in FREQ_POOLS:
            raise ConfigError(f"astsed.freq_pool={self.freq_pool!r}; expected one of {', '.join(FREQ_POOLS)}")
        if self.decoder not in DECODERS:
            raise ConfigError(f"astsed.decoder={self.decoder!r}; expected one of {', '.join(DECODERS)}")
        if self.ast.out_layer is None:
            raise ConfigError("astsed: ast.out_layer must name the block read (the paper's 10)")
        if self.upsample < 1 or self.ast.time_patches * self.upsample < self.pred_len:
            raise ConfigError(
                f"astsed: {self.ast.time_patches} time patches x upsample {self.upsample} give fewer than "
                f"pred_len={self.pred_len} frames; raise ast.max_frames or upsample, or lower pred_len")

    @property
    def name(self) -> str:
        return "AST-SED" if (self.freq_pool, self.decoder) == ("fte", "lgd") else f"AST-{self.freq_pool}-{self.decoder}"


PAPER = ASTSEDConfig()
AST_GRU = dataclasses.replace(PAPER, freq_pool="mean", decoder="gru")


class ASTSED(nnx.Module):
    """AST encoder, FTE or mean pooling, LGD or patch-rate Bi-GRU, linear head (module docstring)."""

    def __init__(self, cfg: ASTSEDConfig = PAPER, *, rngs: nnx.Rngs):
        self.cfg = cfg
        dim = cfg.ast.dim
        self.encoder = ASTEncoder(cfg.ast, rngs=rngs)
        self.out_norm = nnx.LayerNorm(dim, epsilon=cfg.norm_eps, rngs=rngs)
        if cfg.freq_pool == "fte":
            self.fte = FrequencyTransformer(dim, depth=cfg.fte_depth, heads=cfg.fte_heads,
                                            mlp_ratio=cfg.fte_mlp_ratio, norm_eps=cfg.norm_eps, rngs=rngs)
        self.gru = GRU(dim, cfg.gru_hidden, cfg.gru_layers, bidirectional=True, export_loop=cfg.export_rnn, rngs=rngs)
        init = torch_uniform(2 * cfg.gru_hidden)
        self.classifier = nnx.Linear(2 * cfg.gru_hidden, cfg.n_classes, kernel_init=init, bias_init=init, rngs=rngs)

    def pad(self, fbank: jax.Array) -> jax.Array:
        """``(batch, frames, n_mels)`` -> ``(batch, ast.max_frames, n_mels)`` with ``pad_value`` appended."""
        cfg = self.cfg
        if fbank.ndim != 3 or fbank.shape[2] != cfg.ast.n_mels:
            raise ConfigError(f"AST-SED input has shape {fbank.shape}; expected (batch, frames, {cfg.ast.n_mels})")
        if fbank.shape[1] > cfg.ast.max_frames:
            raise ConfigError(f"AST-SED input has {fbank.shape[1]} frames; at most ast.max_frames="
                              f"{cfg.ast.max_frames} (cut the clip or raise max_frames)")
        pad = cfg.ast.max_frames - fbank.shape[1]
        return jnp.pad(fbank, ((0, 0), (0, pad), (0, 0)), constant_values=cfg.pad_value)

    def frames(self, fbank: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        """One vector per AST time patch, ``(batch, T', dim)``: layer ``out_layer`` -> out_norm -> FTE / mean."""
        tokens = self.encoder(fbank, train=train, rngs=rngs, stop_at_layer=True)["tokens"]
        normed = self.out_norm(tokens)[:, NUM_PREFIX_TOKENS:]
        grid = normed.reshape(normed.shape[0], self.cfg.ast.freq_patches, -1, normed.shape[-1])  # frequency-major
        if self.cfg.freq_pool == "fte":
            return self.fte(grid, train=train, rngs=rngs)
        return jnp.mean(grid, axis=1)

    def decode(self, frames: jax.Array, *, train: bool, rngs=None) -> jax.Array:
        """Patch-rate vectors -> frame logits ``(batch, pred_len, n_classes)``."""
        cfg = self.cfg
        if cfg.decoder == "lgd":
            logits = self.classifier(self.gru(interpolate_time(frames, cfg.upsample, mode="nearest"),
                                              train=train, rngs=rngs))
        else:
            logits = interpolate_time(self.classifier(self.gru(frames, train=train, rngs=rngs)), cfg.upsample,
                                      mode="nearest")
        if logits.shape[1] < cfg.pred_len:
            raise ConfigError(f"AST-SED decodes {logits.shape[1]} frames; fewer than pred_len={cfg.pred_len}")
        return logits[:, :cfg.pred_len]

    def encode(self, fbank: jax.Array, *, train: bool, rngs=None, sliding: GlobalLocal | None = None) -> jax.Array:
        """The padded clip's patch-rate vectors; with ``sliding``, from windows (module docstring)."""
        rngs = as_rngs(rngs)
        x = self.pad(fbank)

        def encode_window(window):
            return self.frames(window, train=train, rngs=rngs)

        if sliding is None:
            return encode_window(x)
        if sliding.local_weight == 1.0:   # the reference's ASTWithSlide: windows only
            return sliding_encode(encode_window, x, window=sliding.window, step=sliding.step,
                                  out_len=self.cfg.ast.time_patches)
        return global_local(encode_window, x, window=sliding.window, step=sliding.step,
                            local_weight=sliding.local_weight)

    def sed_forward(self, fbank: jax.Array, *, train: bool, rngs=None, temperature: float = 1.0,
                    sliding: GlobalLocal | None = None) -> dict[str, jax.Array]:
        """``strong (batch, pred_len, n_classes)``, ``weak`` (linear-softmax pooled) and ``weak_at``
        (= ``weak``: no AT branch), the outputs PMAM / MAT-SED's fine-tuning reads."""
        rngs = as_rngs(rngs)
        logits = self.decode(self.encode(fbank, train=train, rngs=rngs, sliding=sliding), train=train, rngs=rngs)
        strong = jax.nn.sigmoid(logits / temperature)
        weak = linear_softmax_pooling(strong)
        return {"strong": strong, "weak": weak, "weak_at": weak}
