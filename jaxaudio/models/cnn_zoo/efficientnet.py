"""EfficientNet-B0 (Tan & Le 2019, arXiv 1905.11946) as timm's ``efficientnet_b0``
(``timm/models/efficientnet.py: _gen_efficientnet``, channel and depth multipliers 1.0), on the
mobile-convolution network shared with the MobileNets (``mbconv.py``: blocks, squeeze-excite,
stochastic depth, padding, rounding, init, train/eval).

timm's stages (every width a multiple of 8, so its rounding changes nothing): stem 32;
``ds_r1_k3_s1_e1_c16_se0.25, ir_r2_k3_s2_e6_c24_se0.25, ir_r2_k5_s2_e6_c40_se0.25,
ir_r3_k3_s2_e6_c80_se0.25, ir_r3_k5_s1_e6_c112_se0.25, ir_r4_k5_s2_e6_c192_se0.25,
ir_r1_k3_s1_e6_c320_se0.25``; head conv 1280; SiLU (timm's 'swish') everywhere, squeeze-excite
included, whose reduced width is a quarter of each block's input width; BatchNorm PyTorch's
default (eps 1e-5, momentum 0.1: timm's ``efficientnet_b0``, unlike its ``tf_`` ports, keeps them).

Regularisation: timm's model defaults to none, and its registration notes "for train,
drop_rate should be 0.2, drop_path_rate should be 0.2", the paper's dropout 0.2 and survival
probability 0.8 for B0; the published preset uses those training values (inference is the same
either way). The ``tiny`` preset (our choice) keeps the block types, kernel sizes, SiLU,
squeeze-excite and the five stride-2 steps at a fraction of the width and depth, with dropout
0.2 and no stochastic depth (so few blocks that it would only add noise): 87 k parameters with
45 classes, a jit train step over 32 64x64 RGB images 0.5 s of CPU time on one core.
"""
from __future__ import annotations

from jaxaudio.models.cnn_zoo.base import ZooEntry
from jaxaudio.models.cnn_zoo.mbconv import MBConvConfig, MBConvNet, Stage

EfficientNet = MBConvNet

EFFICIENTNET_B0 = MBConvConfig(
    stages=(
        Stage("ds", 1, 3, 1, 1, 16, 0.25),
        Stage("ir", 2, 3, 2, 6, 24, 0.25),
        Stage("ir", 2, 5, 2, 6, 40, 0.25),
        Stage("ir", 3, 3, 2, 6, 80, 0.25),
        Stage("ir", 3, 5, 1, 6, 112, 0.25),
        Stage("ir", 4, 5, 2, 6, 192, 0.25),
        Stage("ir", 1, 3, 1, 6, 320, 0.25),
    ),
    stem_channels=32,     # timm _gen_efficientnet
    head_channels=1280,   # timm: round_chs_fn(1280) at multiplier 1.0
    act="silu",           # timm: resolve_act_layer(kwargs, 'swish')
    drop_rate=0.2,        # timm's training note / the paper (B0: dropout 0.2)
    drop_path_rate=0.2,   # timm's training note / the paper (survival probability 0.8)
)
EFFICIENTNET_B0_TINY = MBConvConfig(  # our choice
    stages=(
        Stage("ds", 1, 3, 1, 1, 8, 0.25),
        Stage("ir", 1, 3, 2, 4, 16, 0.25),
        Stage("ir", 1, 5, 2, 4, 24, 0.25),
        Stage("ir", 2, 3, 2, 4, 40, 0.25),
        Stage("ir", 1, 5, 2, 4, 64, 0.25),
    ),
    stem_channels=8, head_channels=256, act="silu", drop_rate=0.2,
)

ENTRIES = {
    "efficientnet_b0": ZooEntry(name="efficientnet_b0", model=MBConvNet,
                                presets={"tiny": EFFICIENTNET_B0_TINY, "published": EFFICIENTNET_B0},
                                timm_name="efficientnet_b0", classifier="classifier"),
}
