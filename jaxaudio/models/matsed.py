"""MAT-SED: masked audio transformer with masked-reconstruction pre-training (Cai et al., Interspeech 2024).

The network is PMAM's (``jaxaudio/models/pmam.py``) without its CNN branch, projection and
prototype heads (spec/papers.md §2; Transformer4SED ``src/models/passt/passt_sed.py``)::

    mel (batch, 1000, 128)
     '- PaSST: block-``feature_layer`` (10) tokens -> drop cls/dist -> out_norm (LayerNorm) -> **mean**
               over the 12 frequency patches -> (batch, 99, 768) -> repeat last frame to 100 -> linear x10
               -> frames (batch, 1000, 768): the context network's input, as they are (no projection)
    context network: 3 Transformer-XL blocks, 768-d, 12 heads, mlp_ratio 1 (``nn/relpos.ContextNetwork``)
    heads: classifier (Linear -> sigmoid, linear-softmax clip pooling), the AT branch (attention pool,
           12 heads, over the final normed PaSST tokens -> Linear), and for pre-training the mask token
           and the reconstruction head (Linear -> GELU -> Linear, 768 -> 768; the reference's ``mlm_mlp``).

``MATSED`` is ``PMAM`` built with ``cnn=None``, ``freq_pool="mean"`` and ``passt_proj=False``
(``matsed_config``), less PMAM's prototype head; ``encode``, ``sed_forward`` (with global-local
fusion, ``sliding=``) and the context network are PMAM's own code. The reconstruction head is
PMAM's MLM head (``mlm_hidden``/``mlm_out``, ``PMAM.mlm_head``), here of width ``vit.dim``.

Pre-training: ``mae_forward(mel, mask, plan)`` hides the ``mask`` frames of the context network's
input as ``plan`` says (``nn/masking``: block masks, mask token / random frame / unchanged),
and returns the head's reconstruction with the pre-mask features it must match;
``reconstruction_loss`` is the MSE over exactly the masked frames (the reference's
``MSELoss()(frame_before_mask[mask], pred[mask])``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxaudio.errors import ConfigError
from jaxaudio.models.pmam import PMAM, PMAMConfig
from jaxaudio.nn.cnn import as_rngs
from jaxaudio.nn.masking import ReplacementPlan, apply_replacement, token_only_plan
from jaxaudio.nn.vit import PASST_S, ViTConfig


def matsed_config(vit: ViTConfig = PASST_S, **fields) -> PMAMConfig:
    """The MAT-SED network as a ``PMAMConfig``: no CNN branch, mean frequency pooling, no
    projection (the context network is ``vit.dim`` wide). Defaults: the paper's (plain PaSST-S, no
    LoRA; layer 10; 3 Transformer-XL blocks of 12 heads, mlp_ratio 1; AT pool of 12 heads)."""
    for key, value in (("cnn", None), ("freq_pool", "mean"), ("passt_proj", False)):
        if key in fields and fields[key] != value:
            raise ConfigError(f"MAT-SED has {key}={value!r} (got {fields[key]!r})")
    fields.setdefault("decoder_dim", vit.dim)
    fields.setdefault("context_heads", 12)
    fields.setdefault("at_heads", 12)
    fields.setdefault("n_prototypes", 1)  # PMAM's prototype head is removed (MATSED.__init__)
    return PMAMConfig(vit=vit, cnn=None, freq_pool="mean", passt_proj=False, **fields)


PAPER = matsed_config()


def reconstruction_loss(recon: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean squared error over the masked frames: ``mean((recon - target)[mask] ** 2)``, every
    feature of every hidden frame weighted alike (``torch.nn.MSELoss`` on the masked rows).

    recon, target: ``(batch, time, dim)``; mask: ``(batch, time)`` bool. 0 when nothing is hidden.
    """
    if recon.shape != target.shape or mask.shape != recon.shape[:2]:
        raise ConfigError(f"reconstruction_loss: recon {recon.shape}, target {target.shape}, mask {mask.shape}; "
                          "expected (batch, time, dim) twice and (batch, time)")
    weight = mask.astype(recon.dtype)[..., None]
    squared = jnp.square(recon.astype(jnp.float32) - target.astype(jnp.float32)) * weight
    count = jnp.sum(weight) * recon.shape[-1]
    return jnp.sum(squared) / jnp.maximum(count, 1.0)


class MATSED(PMAM):
    """PaSST encoder (mean frequency pooling), Transformer-XL context network, SED / AT heads, mask
    token and reconstruction head (module docstring)."""

    def __init__(self, cfg: PMAMConfig = PAPER, *, rngs: nnx.Rngs):
        if cfg.cnn is not None or cfg.freq_pool != "mean" or cfg.passt_proj:
            raise ConfigError("MATSED needs cnn=None, freq_pool='mean' and passt_proj=False; build its config "
                              "with jaxaudio.models.matsed.matsed_config")
        super().__init__(cfg, rngs=rngs)
        del self.at_prototype_head  # PMAM's pre-training AT head; MAT-SED's pre-training has no AT term

    def reconstruction_head(self, x: jax.Array) -> jax.Array:
        """Linear -> exact GELU -> Linear: ``(batch, T, vit.dim) -> (batch, T, vit.dim)``."""
        return self.mlm_head(x)

    def mae_forward(self, mel: jax.Array, mask: jax.Array, plan: ReplacementPlan | None = None, *,
                    train: bool, rngs=None) -> dict[str, jax.Array]:
        """Masked-reconstruction pass.

        mask: ``(batch, pred_len)`` bool, the hidden frames (``nn.masking.block_mask``).
        plan: what the hidden frames show (``nn.masking.replacement_plan``); None: the mask token
          on every hidden frame.
        Returns ``recon (batch, pred_len, vit.dim)``, the head's output on every frame;
        ``target``, the pre-mask features (the context network's input: the encoder's frames);
        ``mask``; and ``masked_input``, what the context network saw.
        """
        cfg = self.cfg
        if mask.shape != (mel.shape[0], cfg.pred_len):
            raise ConfigError(
                f"MAT-SED mask has shape {mask.shape}; expected (batch, pred_len) = {(mel.shape[0], cfg.pred_len)}"
            )
        rngs = as_rngs(rngs)
        target = self.encode(mel, train=train, rngs=rngs)["fused"]
        plan = token_only_plan(mask) if plan is None else plan
        x = apply_replacement(target, plan, self.mask_token[...])
        recon = self.reconstruction_head(self.context(x, train=train, rngs=rngs))
        return {"recon": recon, "target": target, "mask": mask.astype(bool), "masked_input": x}

