"""MAT-SED: masked-reconstruction pre-training of a PaSST + Transformer-XL network, then
mean-teacher fine-tuning for SED.

    python experiments/run.py --exp=matsed                  # tiny: built-in synthetic set, 2 CPU cores
    python experiments/run.py --exp=matsed --preset=paper \\
        --data_dir=/path/to/DESED --config.model.passt_checkpoint=passt-s-f128-p16-s10-ap.476-swa.pt

Stages (each resumes by itself from ``workdir/<stage>/``): ``pretrain`` (the encoder frozen,
10-frame blocks of the context network's input hidden at rate 0.75, MSE on the hidden frames
against the pre-mask features), ``finetune1`` (heads only) and ``finetune2`` (all), then evaluation.

Paper values (``spec/papers.md`` section 2, the "MAT-SED" paragraph of ``spec/sed_recipes.md``)
are cited next to each setting: ``ref`` = cai525/Transformer4SED at becbea2,
``config/mat-sed/base/{pretrain,finetune1,finetune2}.yaml`` (``pre``, ``ft1``, ``ft2`` below);
``origin`` = its branch ``mat-sed-origin`` (1aabad5), the paper's code, where it differs. Step
counts are the reference's epochs times ``EPOCH_STEPS``.
"""
import ml_collections

from experiments.pmam.config import PAPER_FILTER_AUGMENT, _groups
from experiments.sed import data_config as sed_data_config
from experiments.sed.data_config import desed_data

PRESETS = ("smoke", "tiny", "paper")

# One reference epoch on DESED, in steps: the batch sampler runs min over its sources of
# len(source) // batch share (ref src/preprocess/dataset.py ConcatDatasetBatchSampler.__len__), and the
# weak set bounds it in pre-training [4 strong, 4 weak, 16 unlabeled] and fine-tuning [3 real strong +
# 1 synthetic, 4 weak, 4 unlabeled] alike: 1578 weak clips (ref meta/desed/train/weak.tsv) // 4 = 394
# (real strong 3463 // 4 = 865 or // 3 = 1154, unlabeled ~14412 // 16 = 900 or // 4 = 3603).
DESED_WEAK_CLIPS = 1578
EPOCH_STEPS = DESED_WEAK_CLIPS // 4   # = 394

# FilterAugment of every stage (ref pre:19-26, ft1:40-47, ft2:44-51), as PMAM's (origin: [-4.5, 6] dB);
# _groups is PMAM's config helper.


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.data = desed_data(32000)            # PaSST's rate (ref pre:37)

    # Any FrontEndConfig field may be overridden here; the rest come from the preset.
    c.frontend = ml_collections.ConfigDict()
    c.frontend.preset = "PASST_32K"   # 128 Kaldi mels, hop 10 ms, (x + 4.5) / 5 (papers.md §2 front end)
    # Train-time mel-bank jitter as PMAM's (ref src/models/passt/passt_sed.py PasstFeatureExtractor
    # fmin_aug_range 10, fmax_aug_range 2000; sed_recipes.md row 18).
    c.frontend.fmin_aug_range = 10
    c.frontend.fmax_aug_range = 2000

    c.model = ml_collections.ConfigDict()
    c.model.n_mels = 128
    c.model.frames = 1000             # pred_len: 100 frames/s over 10 s (ref ft1:53)
    c.model.vit = "PASST_S"           # plain PaSST-S, no LoRA (ref src/models/passt/passt_sed.py)
    c.model.vit_dim = 768
    c.model.vit_depth = 12
    c.model.vit_heads = 12
    c.model.vit_mlp_ratio = 4.0
    # Frames between time patches; 0: the patch stride (PaSST's 10 frames = 0.1 s at 100 fps). The
    # frame upsampling factor follows it.
    c.model.vit_time_stride = 0
    c.model.feature_layer = 10        # passt_feature_layer (ref pre:42); mean frequency pooling (pre:43)
    c.model.context_layers = 3        # decoder_layer_num, Transformer-XL (ref pre:46-47); 768-d, no projection
    c.model.context_heads = 12        # papers.md §2 context network
    c.model.at_heads = 12             # AT branch: AttentionPooling(768, 12 heads) (ref passt_sed.py at_adapter)
    c.model.passt_checkpoint = ""     # PaSST .pt / .safetensors to start the encoder from
    # Or a finished stage of another jaxaudio run whose `encoder` has these sizes (e.g. a PMAM run's
    # WORKDIR/round2/pretrain): the stand-in for AudioSet PaSST where there is none (tiny sizes).
    c.model.encoder_from = ""
    # The paper starts PaSST from AudioSet weights and freezes it in pre-training and stage 1; without
    # them a run would freeze random weights, so it is refused unless this is set on purpose.
    c.model.allow_random_init = False
    # Global-local fusion of the encoder (papers.md §2; ref ft2:72-86): windows of 512 mel frames,
    # step 49 for the stage-2 teacher, 31 at validation and inference, mixed 0.5/0.5 with the whole
    # clip's encoding. window 0 turns it off.
    c.model.global_local = ml_collections.ConfigDict(
        {"window": 512, "teacher_step": 49, "eval_step": 31, "local_weight": 0.5})

    c.pretrain = ml_collections.ConfigDict()
    c.pretrain.enabled = True         # False: fine-tune the same network without pre-training (the ablation)
    c.pretrain.mask_rate = 0.75       # mlm_dict.mask_rate (ref pre:53)
    c.pretrain.mask_block = 10        # frames (0.1 s), block_width (ref pre:52)
    c.pretrain.p_mask_token = 0.8     # mask style 0.8 token / 0.1 random frame / 0.1 unchanged
    c.pretrain.p_random = 0.1         # (ref src/models/transformer/mask.py:50, MlmModule default)
    # The reference hides every block whose noise is <= the value at rank int(n * rate): 76 of 100
    # blocks at rate 0.75 (ref src/models/transformer/mask.py:100-106).
    c.pretrain.mask_reference_count = True
    # The reference's target (frame_before_mask) is not detached, so out_norm, which trains, gets
    # gradients through the target as well (ref recipes/desed/mlm/mlm_passt/train.py:34-38); True
    # would stop them there.
    c.pretrain.stop_target_gradient = False

    # Stages, each in the one schema (jaxaudio/train/stage_config.py); groups are
    # (name, regex on the parameter path, lr, weight decay), the first match wins. The pre-training
    # stage freezes every encoder/ parameter by itself (experiments/matsed/system.py).
    c.stages = ml_collections.ConfigDict()
    p = c.stages.pretrain = ml_collections.ConfigDict()
    p.steps = 15 * EPOCH_STEPS        # 15 epochs (ref pre:13)
    p.lr = 1e-4                       # decoder and head 1e-4, encoder 0 (ref pre:88-102; origin lr_big 1e-4)
    p.weight_decay = 1e-4
    # a 1-epoch warm-up from 0.1x, flat, exp-down after epoch 10, exponent -0.5 (ref pre:12-16,89)
    p.schedule = {"kind": "warmup_exp_down", "warmup_steps": 1 * EPOCH_STEPS, "warmup_from": 0.1,
                  "decay_start_step": 10 * EPOCH_STEPS, "exponent": -0.5}
    p.groups = _groups()
    p.frame_shift_sigma = 90.0        # ref src/preprocess/data_aug.py:17 (max_shift_frame=90)
    p.filter_augment = dict(PAPER_FILTER_AUGMENT)   # no mixup in pre-training (ref recipes/mlm/train.py)
    p.freq_distortion = 0.03          # choice[3] (ref pre:20-21; sed_recipes.md row 8)

    # The fine-tuning head group: every parameter outside PaSST and the decoder, so out_norm too
    # (ref recipes/desed/finetune/passt/setting.py:85-98).
    heads = r"^(out_norm|classifier|at_pool|at_class_head)/"
    f1 = c.stages.finetune1 = ml_collections.ConfigDict()   # heads only, everything else frozen
    f1.steps = 15 * EPOCH_STEPS       # 15 epochs (ref ft1:20)
    f1.lr = 0.0                       # encoder and decoder lr 0 (ref ft1:131-139)
    # exp-down from epoch 10 of 15, exponent -1, no warm-up (ref ft1:18-24; origin exponent -0.5)
    f1.schedule = {"kind": "warmup_exp_down", "warmup_steps": 0, "decay_start_step": 10 * EPOCH_STEPS,
                   "exponent": -1.0}
    f1.groups = _groups(("heads", heads, 2e-4, 1e-4))   # ref ft1:140-142
    f1.lr_group = "heads"             # the lr logged per step
    f1.ema = 0.999                    # ref ft1:29
    f1.consistency_max = 2.0          # ref ft1:31
    f1.rampup_steps = 8 * EPOCH_STEPS  # self_loss_warmup 8 epochs (ref ft1:25)
    f1.rampup = "linear"              # ref ft1:27
    f1.teacher_global_local = False   # ref ft1:82-85
    f2 = c.stages.finetune2 = ml_collections.ConfigDict()   # all parameters
    f2.steps = 30 * EPOCH_STEPS       # 30 epochs (ref ft2:24)
    f2.lr = 1e-4                      # the context network (decoder, ref ft2:95-97)
    f2.weight_decay = 1e-4
    # a 1-epoch warm-up from 0.1x, flat, exp-down from epoch 15, exponent -1 (ref ft2:22-28)
    f2.schedule = {"kind": "warmup_exp_down", "warmup_steps": 1 * EPOCH_STEPS, "warmup_from": 0.1,
                   "decay_start_step": 15 * EPOCH_STEPS, "exponent": -1.0}
    f2.groups = _groups(
        # PaSST 5e-6 (ref ft2:90-94), the last step_lr=4 blocks and the final PaSST norm ("norm." in the
        # name) at 2x (ref recipes/desed/finetune/passt/setting.py:40-62)
        ("encoder_top", r"^encoder/(blocks/(8|9|10|11)|norm)/", 1e-5, 1e-4),
        ("encoder", r"^encoder/", 5e-6, 1e-4),
        ("heads", heads, 1e-4, 1e-4),  # ref ft2:98-100 (origin: 2e-4)
    )
    f2.lr_group = ""
    f2.ema = 0.999                    # ref ft2:32
    f2.consistency_max = 40.0         # ref ft2:35
    f2.rampup_steps = 15 * EPOCH_STEPS  # self_loss_warmup 15 epochs (ref ft2:29)
    f2.rampup = "logistic"            # "Sigmoid": 1 / (1 + e^(-10 (x - 0.5))) (ref ft2:31, finetune/train.py)
    f2.teacher_global_local = True    # the stage-2 teacher sees global-local fused features (ref ft2:72-75)
    for f in (f1, f2):
        f.weak_weight = 0.5           # w_weak, w_weak_cons (ref ft1:30,33)
        f.at_weight = 2.0             # w_AT (ref ft1:34)
        # the clip BCEs over the weak subset only (ref recipes/desed/finetune/train.py:157,163); read by
        # experiments/pmam/system.finetune_loss_fn
        f.weak_subset_only = True
        # One coin per batch with p 0.5; if it lands, the strong and the weak rows are each mixed within
        # themselves with lambda ~ Beta(10, 0.5) (ref recipes/desed/finetune/train.py:78-80; read through
        # experiments/sed/augment.mixup_options).
        f.mixup_prob = 0.5
        f.mixup_alpha = 10.0
        f.mixup_beta = 0.5
        f.mixup_coin = "batch"
        f.mixup_sources = ("strong", "weak")
        f.frame_shift_sigma = 90.0    # ref src/preprocess/data_aug.py:17
        # Validate every epoch and keep the best (student and teacher PSDS1; the trainer ranks by the
        # teacher's), as the shared fine-tuning recipe does (ref recipes/desed/finetune/main.py; row 14).
        f.eval_every = EPOCH_STEPS
        f.select = "best"
        f.filter_augment = dict(PAPER_FILTER_AUGMENT)   # ref ft1:40-47, ft2:44-51
        f.freq_distortion = 0.03      # choice[3] (ref ft1:42, ft2:46; row 8)
        f.two_views = True            # n_transform 2: own label-free draw per network (ref ft1:41, ft2:45; row 9)

    c.train = ml_collections.ConfigDict()   # loop defaults of every stage
    # The reference calls clip_grad_norm before backward() (ref recipes/desed/mlm/mlm_passt/train.py:40-41), so
    # it never clips in pre-training; we clip at 20 everywhere, a guard that rarely binds (as PMAM).
    c.train.clip_norm = 20.0
    c.train.log_every = 100
    c.train.checkpoint_every = 1000
    c.train.keep = 2

    c.batch = ml_collections.ConfigDict()
    # [4 strong, 4 weak, 16 unlabeled], audio only (ref pre:4); the strong rows are AudioSet-strong real
    # clips (ref pre:63 strong_tsv audioset_strong.tsv; sed_recipes.md row 1), "strong_real" on the built-in set.
    c.data.train_strong_real = "strong_real"
    c.batch.pretrain_strong = 4
    c.batch.pretrain_strong_real = 4
    c.batch.pretrain_weak = 4
    c.batch.pretrain_unlabeled = 16
    # [3 real strong + 1 synthetic, 4 weak, 4 unlabeled] (ref ft1:12, ft2:16)
    c.batch.strong = 4
    c.batch.strong_real = 3
    c.batch.weak = 4
    c.batch.unlabeled = 4
    c.batch.eval = 16

    c.eval = sed_data_config.reference_sed_eval()   # class-wise windows, weak soft mask, temperature 0.5
    # PSDS2 is also reported after a class-wise max filter (ref src/codec/decoder.py:94, filter_type "max";
    # the paper's PSDS2 0.896 is that, 0.792 the median filter's): eval metric psds2_max_filter.
    c.eval.max_filter_psds2 = True

    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    c.sharding = ml_collections.ConfigDict({"rules": ()})   # (regex, kind) pairs before the defaults

    if preset == "tiny":
        # Every stage on the built-in 16 kHz set on 2 CPU cores in well under 25 minutes: 64 mels at
        # 25 frames/s (hop 640) -> 250 output frames (40 ms), a 4-block ViT of width 64 trained from
        # scratch (frozen in pre-training and stage 1, as the recipe's PaSST), a 3-block context network
        # of the same width. Sizes, rates and augmentation as PMAM's tiny preset where they apply.
        sed_data_config.tiny_vit_front_end(c)
        c.model.vit_dim = 64
        c.model.vit_depth = 4
        c.model.vit_heads = 4
        c.model.vit_mlp_ratio = 2.0
        c.model.feature_layer = 4
        c.model.context_layers = 3
        c.model.context_heads = 4
        c.model.at_heads = 4
        # A block is one encoder time patch, as the paper's 10 frames at 100 fps: 10 frames at 25 fps
        # (the x10 interpolation would leak a shorter block from its neighbours).
        c.pretrain.mask_block = 10
        p.steps = 400
        p.lr = 1e-3
        p.schedule = {"kind": "warmup_exp_down", "warmup_steps": 20, "decay_start_step": 200, "exponent": -0.5}
        p.frame_shift_sigma = 22.0        # the reference's 90 frames at 100 frames/s: 0.9 s (as PMAM tiny)
        tiny_schedule = {"kind": "warmup_exp_down", "warmup_steps": 20, "decay_start_step": 400, "exponent": -1.0}
        f1.steps = 150
        f1.groups = _groups(("heads", heads, 2e-3, 1e-4))
        f1.rampup_steps = 75
        f1.eval_every = 75
        f2.steps = 800
        f2.lr = 2e-3
        f2.groups = _groups(
            ("encoder_top", r"^encoder/norm/", 2e-3, 1e-4),   # the final encoder norm at 2x the encoder's
            ("encoder", r"^encoder/", 1e-3, 1e-4),
            ("heads", heads, 2e-3, 1e-4),
        )
        f2.consistency_max = 2.0
        f2.rampup_steps = 400             # the reference's logistic ramp, over half the stage
        f2.eval_every = 200
        for f in (f1, f2):
            # sizes and rates are tiny's; every behaviour that is not a size is the paper preset's
            f.schedule = dict(tiny_schedule)
            f.ema = 0.99
            f.frame_shift_sigma = 22.0
        c.train.clip_norm = 5.0
        c.train.log_every = 50
        c.train.checkpoint_every = 100
        c.batch.pretrain_strong, c.batch.pretrain_weak, c.batch.pretrain_unlabeled = 4, 4, 8
        c.batch.strong, c.batch.weak, c.batch.unlabeled = 8, 4, 4
        c.batch.pretrain_strong_real, c.batch.strong_real = 4, 6   # the reference's shares: all / 3 of 4 real
        c.eval = sed_data_config.reference_sed_eval(frame_rate=25.0)   # windows of 8 and 32 frames
        c.eval.max_filter_psds2 = True
    if preset == "smoke":
        # Seconds on a CPU, for tests: the tiny network on the built-in "smoke" set (2.5 s clips, 60
        # output frames), halved, a hundred-odd steps in all.
        c = get_config("tiny")
        c.data.synth_preset = "smoke"
        c.data.synth_dir = "data/desed_synth_smoke"
        c.data.clip_seconds = 2.5
        c.model.frames = 60
        c.model.vit_depth = 2             # compiling the encoder and context network is most of a smoke run
        c.model.feature_layer = 2
        c.model.context_layers = 1
        c.stages.pretrain.steps = 12
        c.stages.finetune1.steps = 10
        c.stages.finetune1.rampup_steps = 5
        c.stages.finetune2.steps = 80
        c.stages.finetune2.rampup_steps = 40
        for name in ("pretrain", "finetune1", "finetune2"):
            c.stages[name].schedule = {"kind": "warmup_exp_down", "warmup_steps": 5,
                                       "decay_start_step": c.stages[name].steps // 2, "exponent": -1.0}
        c.batch.pretrain_strong, c.batch.pretrain_weak, c.batch.pretrain_unlabeled = 4, 2, 2
        c.batch.strong, c.batch.weak, c.batch.unlabeled, c.batch.eval = 6, 1, 1, 16
        c.batch.pretrain_strong_real, c.batch.strong_real = 4, 4   # both strong subsets, as tiny
        c.stages.finetune1.eval_every, c.stages.finetune2.eval_every = 10, 40
        c.train.log_every = 5
        c.train.checkpoint_every = 40
        c.eval = sed_data_config.reference_sed_eval(frame_rate=24.0)   # 60 frames per 2.5 s
        c.eval.max_filter_psds2 = True
        c.eval.primary_metric = "frame_auc"   # PSDS is 0 for any model on 80 s of smoke audio (README)
    return c
