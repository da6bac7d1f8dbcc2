"""MobileNet V1 (Howard et al. 2017, arXiv 1704.04861) and V2 (Sandler et al. 2018, arXiv
1801.04381) as timm builds them: ``mobilenetv1_100`` and ``mobilenetv2_100`` (both
``timm/models/efficientnet.py``, ``_gen_mobilenet_v1`` / ``_gen_mobilenet_v2``), on the shared
mobile-convolution network (``mbconv.py``: blocks, padding, rounding, init, train/eval).

timm's stage strings, at width and depth multipliers 1.0 (every width already a multiple of 8,
so its channel rounding changes nothing):

* V1: stem 32; ``dsa_r1_k3_s1_c64, dsa_r2_k3_s2_c128, dsa_r2_k3_s2_c256, dsa_r6_k3_s2_c512,
  dsa_r2_k3_s2_c1024`` (depthwise-separable with an activation after the pointwise conv, no
  residuals); no head conv (``head_conv=False``: ``num_features = 0``, so the pooled 1024-wide
  last stage feeds the classifier); ReLU6.
* V2: stem 32; ``ds_r1_k3_s1_c16, ir_r2_k3_s2_e6_c24, ir_r3_k3_s2_e6_c32, ir_r4_k3_s2_e6_c64,
  ir_r3_k3_s1_e6_c96, ir_r3_k3_s2_e6_c160, ir_r1_k3_s1_e6_c320``; head conv 1280; ReLU6.

BatchNorm PyTorch's default (eps 1e-5, momentum 0.1); no dropout or stochastic depth in timm's
defaults (``drop_rate = drop_path_rate = 0``), which the published presets keep.

The ``tiny`` presets (our choice) keep each family's block types, activation and stride pattern
(five stride-2 steps: 64x64 inputs end at 2x2) at a fraction of the width and depth, for a
laptop CPU: 50 k (V1) and 70 k (V2) parameters with 45 classes; a jit train step over 32 64x64
RGB images took 0.2 s (V1) and 0.4 s (V2) of CPU time on one core (measured on a busy machine).
"""
from __future__ import annotations

from jaxaudio.models.cnn_zoo.base import ZooEntry
from jaxaudio.models.cnn_zoo.mbconv import MBConvConfig, MBConvNet, Stage

MobileNet = MBConvNet

MOBILENET_V1 = MBConvConfig(
    stages=(
        Stage("dsa", 1, 3, 1, 1, 64),
        Stage("dsa", 2, 3, 2, 1, 128),
        Stage("dsa", 2, 3, 2, 1, 256),
        Stage("dsa", 6, 3, 2, 1, 512),
        Stage("dsa", 2, 3, 2, 1, 1024),
    ),
    stem_channels=32,    # timm _gen_mobilenet_v1
    head_channels=0,     # timm mobilenetv1_100: head_conv=False
    act="relu6",         # timm _gen_mobilenet_v1
)
MOBILENET_V1_TINY = MBConvConfig(  # our choice
    stages=(
        Stage("dsa", 1, 3, 1, 1, 16),
        Stage("dsa", 1, 3, 2, 1, 32),
        Stage("dsa", 2, 3, 2, 1, 48),
        Stage("dsa", 2, 3, 2, 1, 96),
        Stage("dsa", 1, 3, 2, 1, 192),
    ),
    stem_channels=8, head_channels=0, act="relu6",
)

MOBILENET_V2 = MBConvConfig(
    stages=(
        Stage("ds", 1, 3, 1, 1, 16),
        Stage("ir", 2, 3, 2, 6, 24),
        Stage("ir", 3, 3, 2, 6, 32),
        Stage("ir", 4, 3, 2, 6, 64),
        Stage("ir", 3, 3, 1, 6, 96),
        Stage("ir", 3, 3, 2, 6, 160),
        Stage("ir", 1, 3, 1, 6, 320),
    ),
    stem_channels=32,    # timm _gen_mobilenet_v2
    head_channels=1280,  # timm: max(1280, round_chs_fn(1280)) at multiplier 1.0
    act="relu6",         # timm _gen_mobilenet_v2
)
MOBILENET_V2_TINY = MBConvConfig(  # our choice
    stages=(
        Stage("ds", 1, 3, 1, 1, 8),
        Stage("ir", 1, 3, 2, 4, 16),
        Stage("ir", 2, 3, 2, 4, 24),
        Stage("ir", 2, 3, 2, 4, 32),
        Stage("ir", 1, 3, 2, 4, 64),
    ),
    stem_channels=8, head_channels=256, act="relu6",
)

ENTRIES = {
    "mobilenet_v1": ZooEntry(name="mobilenet_v1", model=MBConvNet,
                             presets={"tiny": MOBILENET_V1_TINY, "published": MOBILENET_V1},
                             timm_name="mobilenetv1_100", classifier="classifier"),
    "mobilenet_v2": ZooEntry(name="mobilenet_v2", model=MBConvNet,
                             presets={"tiny": MOBILENET_V2_TINY, "published": MOBILENET_V2},
                             timm_name="mobilenetv2_100", classifier="classifier"),
}
