"""AST-SED: an AST encoder, the frequency-wise Transformer encoder and the local GRU decoder,
fine-tuned as mean teacher for SED (and the AST-GRU baseline: ``--config.model.freq_pool=mean
--config.model.decoder=gru``).

    python experiments/run.py --exp=astsed                  # tiny: built-in synthetic set, 2 CPU cores
    python experiments/run.py --exp=astsed --preset=paper \\
        --data_dir=/path/to/DESED --config.model.ast_checkpoint=/path/to/ast-finetuned-audioset-10-10-0.4593

Stages (each resumes by itself from ``workdir/<stage>/``): ``finetune1`` (everything but the
encoder; AST frozen) and ``finetune2`` (all), then evaluation. There is no pre-training stage:
the authors' answer on how to run AST-SED (Transformer4SED issue #7) is PaSST-SED's fine-tuning
with AST in PaSST's place and no MLM stage (spec/papers.md §4).

Paper values: the network is the authors' ``AST_SED`` (Transformer4SED ``src/models/ast/
ast_models.py``; ``ast`` below) and their AST front end (``ast_feature_extraction.py``). The
fine-tuning recipe is the one MAT-SED fine-tunes with (``experiments/matsed/config.py``, whose
values cite ``config/mat-sed/base/finetune{1,2}.yaml``), taken from there, not restated: the
paper's own learning rates and epochs were not published (papers.md §4). Differences from that
recipe, each beside its value: no AT branch (weight 0), no global-local teacher, the groups
renamed to this network's parameters.
"""
import ml_collections

from experiments.matsed import config as matsed_config
from experiments.pmam.config import _groups
from experiments.sed import data_config as sed_data_config

PRESETS = ("smoke", "tiny", "paper")
EPOCH_STEPS = matsed_config.EPOCH_STEPS
# Everything after the AST encoder: the fine-tuning head group (the reference's non-PaSST parameters).
HEADS = r"^(out_norm|fte|gru|classifier)/"


def unused_encoder_pattern(out_layer: int, depth: int) -> str:
    """The encoder blocks after ``out_layer`` and its final norm: AST-SED reads block ``out_layer``'s
    tokens, so these get no gradient; frozen, AdamW's decoupled weight decay leaves them alone."""
    blocks = "|".join(str(i) for i in range(out_layer, depth))
    return rf"^encoder/(blocks/({blocks})|norm)/" if blocks else r"^encoder/norm/"


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    if preset == "smoke":
        return _smoke(get_config("tiny"))
    # the fine-tuning stages, batches, train loop and post-processing of MAT-SED's paper preset
    c = matsed_config.get_config("paper")
    del c.pretrain
    del c.stages.pretrain
    del c.batch.pretrain_strong, c.batch.pretrain_strong_real, c.batch.pretrain_weak, c.batch.pretrain_unlabeled

    c.data.sample_rate = 16000        # AST's rate (ast: 16 kHz Kaldi fbank)
    c.frontend = ml_collections.ConfigDict()
    # 128 Kaldi mels, 25 ms Hann, 10 ms shift, dither 0, (x + 4.2677) / (2 * 4.5690) (ast_feature_extraction;
    # papers.md §4); the bank is not jittered (PaSST's extractor jitters it, AST's does not).
    c.frontend.preset = "AST_16K"

    m = c.model = ml_collections.ConfigDict()
    m.n_mels = 128
    m.frames = 1000                   # pred_len: 100 frames/s over 10 s (ASTWithSlide decodes the first 100 patches)
    m.ast_frames = 1024               # the fbank padded to 1024 frames -> 12 x 101 patches (ast: input_tdim 1024)
    m.ast_dim = 768                   # ViT-B/384, DeiT-distilled (ast: model_size base384)
    m.ast_depth = 12
    m.ast_heads = 12
    m.ast_mlp_ratio = 4.0
    m.ast_norm_eps = 1e-12            # Hugging Face ASTConfig layer_norm_eps (the AST checkpoints' own)
    m.feature_layer = 10              # layer10_out + out_norm, cls/dist dropped (ast: ast_feature_layer=10)
    m.freq_pool = "fte"               # frequency_wise_tranformer_encoder; "mean": AST-GRU's mean_pool
    m.decoder = "lgd"                 # local_gru_decoder; "gru": AST-GRU's GRU at the patch rate
    m.fte_depth = 2                   # ast: 2 timm Blocks, 768-d, 4 heads, mlp_ratio 4, then a LayerNorm
    m.fte_heads = 4
    m.fte_mlp_ratio = 4.0
    m.gru_hidden = 768                # ast: nn.GRU(768, 768, bidirectional, num_layers=2)
    m.gru_layers = 2
    m.upsample = 10                   # decode_ratio: F.interpolate(scale_factor=10), nearest
    m.ast_checkpoint = ""             # Hugging Face ASTModel / ASTForAudioClassification weights (a folder or file)
    # The paper starts AST from AudioSet weights (AST-base, 0.4593 mAP) and freezes it in stage 1;
    # without them a run would freeze random weights, so it is refused unless this is set on purpose.
    m.allow_random_init = False
    # Sliding-window inference (ASTWithSlide: windows of 256 frames, step 16, windows only): window 0 is
    # off, the default, as AST_SED itself encodes the whole clip. local_weight < 1 mixes the whole clip in.
    m.global_local = ml_collections.ConfigDict({"window": 0, "eval_step": 16, "teacher_step": 16,
                                                "local_weight": 1.0})

    f1, f2 = c.stages.finetune1, c.stages.finetune2
    f1.groups = _groups(("heads", HEADS, 2e-4, 1e-4))   # MAT-SED ft1's head group
    # (the blocks after feature_layer and the final norm are frozen by the stage: unused_encoder_pattern)
    f2.groups = _groups(
        # the last 4 blocks (8-11, by the reference's index rule) at 2x, of which 10 and 11 are unused
        ("encoder_top", r"^encoder/blocks/(8|9)/", 1e-5, 1e-4),
        ("encoder", r"^encoder/", 5e-6, 1e-4),
        ("heads", HEADS, 1e-4, 1e-4),
    )
    for f in (f1, f2):
        f.at_weight = 0.0             # AST_SED has no AT branch: its at_out is the pooled clip (model docstring)
        f.teacher_global_local = False  # MAT-SED's 512/49 teacher windows are PaSST's; AST-SED has none
    c.eval.max_filter_psds2 = False   # MAT-SED reports PSDS2 after a max filter; AST-SED reports PSDS1 and F1

    if preset == "tiny":
        _tiny(c)
    return c


def _tiny(c) -> None:
    """Every stage on the built-in 16 kHz set on 2 CPU cores: 64 mels at 25 frames/s (hop 640) ->
    250 output frames, the fbank padded to 256 frames (25 time patches x 10), a 4-block AST of width
    64 trained from scratch, FTE and GRU of the same width. Steps and rates as MAT-SED's tiny
    fine-tuning; every behaviour that is not a size is the paper preset's."""
    sed_data_config.tiny_vit_front_end(c)   # 16 kHz, 64 mels, hop 640, n_fft 1024, no jitter, frames 250
    c.frontend.preset = "AST_16K"
    del c.model.vit                          # set by the shared helper for the PaSST-style systems
    m = c.model
    m.ast_frames = 256
    m.ast_dim, m.ast_depth, m.ast_heads, m.ast_mlp_ratio = 64, 4, 4, 2.0
    m.feature_layer = 4
    m.fte_heads, m.fte_mlp_ratio = 4, 2.0
    m.gru_hidden = 64
    f1, f2 = c.stages.finetune1, c.stages.finetune2
    f1.steps, f1.rampup_steps, f1.eval_every = 150, 75, 75
    f1.groups = _groups(("heads", HEADS, 2e-3, 1e-4))
    # 3,000 stage-2 steps (MAT-SED tiny has 800): trained from scratch, AST-SED tiny still localises
    # nothing after 800 (validation PSDS1 0, frame AUC 0.86) and is still improving at 3,000 (PSDS1
    # 0.07, frame AUC 0.905), in about 15 minutes on 2 cores
    f2.steps, f2.rampup_steps, f2.eval_every = 3000, 1500, 500
    f2.lr = 2e-3
    f2.groups = _groups(
        ("encoder", r"^encoder/", 1e-3, 1e-4),
        ("heads", HEADS, 2e-3, 1e-4),
    )
    f2.consistency_max = 2.0
    for f, decay in ((f1, 400), (f2, 1500)):   # stage 1 as MAT-SED tiny's; stage 2 decays over its second half
        f.schedule = {"kind": "warmup_exp_down", "warmup_steps": 20, "decay_start_step": decay, "exponent": -1.0}
        f.ema = 0.99
        f.frame_shift_sigma = 22.0        # the reference's 90 frames at 100 frames/s: 0.9 s
    c.train.clip_norm = 5.0
    c.train.log_every = 50
    c.train.checkpoint_every = 100
    c.batch.strong, c.batch.weak, c.batch.unlabeled = 8, 4, 4
    c.batch.strong_real = 6               # the reference's share: 3 of 4 strong rows real
    c.eval = sed_data_config.reference_sed_eval(frame_rate=25.0)


def _smoke(c):
    """Seconds on a CPU, for tests: the tiny network on the built-in "smoke" set (2.5 s clips, 60
    output frames; the fbank padded to 66 frames, 6 time patches), halved, ninety steps in all."""
    c.data.synth_preset = "smoke"
    c.data.synth_dir = "data/desed_synth_smoke"
    c.data.clip_seconds = 2.5
    c.model.frames = 60
    c.model.ast_frames = 66
    c.model.ast_depth = 2
    c.model.feature_layer = 2
    c.model.fte_depth = 1
    c.model.gru_layers = 1
    c.model.gru_hidden = 32
    f1, f2 = c.stages.finetune1, c.stages.finetune2
    f1.steps, f1.rampup_steps, f1.eval_every = 10, 5, 10
    f2.steps, f2.rampup_steps, f2.eval_every = 80, 40, 40
    for f in (f1, f2):
        f.schedule = {"kind": "warmup_exp_down", "warmup_steps": 5, "decay_start_step": f.steps // 2,
                      "exponent": -1.0}
    c.batch.strong, c.batch.weak, c.batch.unlabeled, c.batch.eval = 6, 1, 1, 16
    c.batch.strong_real = 4
    c.train.log_every = 5
    c.train.checkpoint_every = 40
    c.eval = sed_data_config.reference_sed_eval(frame_rate=24.0)   # 60 frames per 2.5 s
    c.eval.primary_metric = "frame_auc"   # PSDS is 0 for any model on 80 s of smoke audio (README)
    return c
