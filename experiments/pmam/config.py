"""PMAM: prototype-based masked audio model pre-training, then mean-teacher fine-tuning for SED.

    python experiments/run.py --exp=pmam                    # tiny: built-in synthetic set, 2 CPU cores
    python experiments/run.py --exp=pmam --preset=paper \\
        --data_dir=/path/to/DESED --config.model.passt_checkpoint=passt-s-f128-p16-s10-ap.476-swa.pt

Stages (each resumes by itself from ``workdir/<stage>/``): for every round r of
``pretrain.rounds``: frame features -> GMM with ``K`` prototypes -> soft pseudo labels ->
masked audio model training; then fine-tuning stage 1 (heads only) and stage 2 (all), then
evaluation. ``pretrain.rounds=0`` fine-tunes the same network without pre-training (the
ablation's baseline).

Paper values (``spec/papers.md`` section 1, ``spec/sed_recipes.md``, Transformer4SED
``config/pmam/*.yaml``; ``ref`` = cai525/Transformer4SED at becbea2) are cited next to each
setting; step counts are the reference's epochs times ``EPOCH_STEPS``.
"""
import ml_collections

from experiments.sed import data_config as sed_data_config
from experiments.sed.data_config import desed_data

PRESETS = ("smoke", "tiny", "paper")

# One reference epoch on DESED, in steps (sed_recipes.md row 6). The reference's batch sampler runs
# min over its sources of len(source) // batch share batches per epoch (ref src/preprocess/dataset.py:190-195),
# and the weak set bounds it in pre-training [6 strong, 6 weak, 12 unlabeled] and fine-tuning [4 real + 2
# synthetic strong, 6 weak, 6 unlabeled] alike: 1578 weak clips (ref meta/desed/train/weak.tsv) // 6 = 263
# (synthetic 10000 // 6 = 1666, real strong 3463 // 4 = 865, unlabeled ~14412 // 12 = 1201). A set other
# than DESED has other epochs; the paper preset counts DESED's.
DESED_WEAK_CLIPS = 1578
EPOCH_STEPS = DESED_WEAK_CLIPS // 6   # = 263

# FilterAugment of every PMAM stage (sed_recipes.md row 7): step filters, +-26 dB, 2-4 bands (high
# exclusive, as the reference's torch.randint), bands at least 4 mel bins wide (ref
# config/pmam/post_pretrain.yaml:29-32, finetune1.yaml:42-45, finetune2.yaml:45-48). A stage's
# ``filter_augment`` is True (the DCASE defaults +-6 dB, 3-5 bands, width 6), False, or such a mapping
# (experiments/sed/augment.filter_augment_kwargs).
PAPER_FILTER_AUGMENT = {"db_range": (-26.0, 26.0), "n_bands": (2, 5), "min_bw": 4, "mode": "step"}


def _groups(*entries):
    """Optimizer groups as config entries: (name, regex on the parameter path, lr, weight decay)."""
    return tuple(entries)


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.data = desed_data(32000)            # PaSST's rate

    # Any FrontEndConfig field may be overridden here; the rest come from the preset.
    c.frontend = ml_collections.ConfigDict()
    c.frontend.preset = "PASST_32K"   # 128 Kaldi mels, hop 10 ms, (x + 4.5) / 5
    # Train-time mel-bank jitter: fmin + U{0..9} Hz, fmax 15 kHz + 1000 - U{0..1999} Hz, one draw per
    # batch (ref src/models/cnn_transformer/passt_cnn.py -> passt_feature_extraction.py:66-71; row 18).
    c.frontend.fmin_aug_range = 10
    c.frontend.fmax_aug_range = 2000

    c.model = ml_collections.ConfigDict()
    c.model.n_mels = 128
    c.model.frames = 1000             # pred_len: 100 frames/s over 10 s
    c.model.vit = "PASST_S_LORA"      # PaSST-S, LoRA r=8 alpha=1
    # Fine-tuning folds the adapters into PaSST's kernels and freezes them (the reference fine-tunes
    # merged weights, ref src/models/lora/layers.py merge on eval, passt_lora.py:122; row 21); "train"
    # keeps training the adapters.
    c.model.finetune_lora = "merge"
    c.model.vit_dim = 768
    c.model.vit_depth = 12
    c.model.vit_heads = 12
    c.model.vit_mlp_ratio = 4.0
    # Frames between time patches; 0: the patch stride (PaSST's 10 frames = 0.1 s at 100 fps). The
    # frame upsampling factor follows it.
    c.model.vit_time_stride = 0
    c.model.feature_layer = 10        # PaSST block whose tokens feed the frame path
    c.model.cnn_channels = (16, 16, 32, 32, 64, 64, 128, 128, 256, 384)
    c.model.cnn_pooling = ((2, 2), (1, 1), (2, 2), (1, 1), (1, 2), (1, 2), (1, 2), (1, 2), (1, 2), (1, 1))
    c.model.cnn_dropout = 0.5
    c.model.decoder_dim = 384
    c.model.context_layers = 3
    c.model.context_heads = 12
    c.model.freq_pool_heads = 6
    c.model.at_heads = 12
    c.model.n_prototypes = 30         # K (issue cai525/Transformer4SED#10)
    c.model.passt_checkpoint = ""     # PaSST .pt / .safetensors to start the encoder from
    # The paper starts PaSST from AudioSet weights and freezes blocks 1-8; without them a run
    # would freeze random blocks, so it is refused unless this is set on purpose.
    c.model.allow_random_init = False
    # Global-local fusion of the PaSST branch (sed_recipes.md row 4; ref finetune2.yaml:80-92):
    # windows of 512 mel frames, step 49 for the stage-2 teacher, 31 at validation and inference,
    # mixed 0.5/0.5 with the whole clip's encoding. window 0 turns it off.
    c.model.global_local = ml_collections.ConfigDict(
        {"window": 512, "teacher_step": 49, "eval_step": 31, "local_weight": 0.5})

    c.pretrain = ml_collections.ConfigDict()
    c.pretrain.rounds = 2             # prototype fitting <-> MAM training iterations
    # Each round's pre-training starts afresh (PaSST from its checkpoint, the rest new) on prototypes
    # fitted to the previous round's features (ref post_pretrain.yaml:3, load_from_existed_path False;
    # sed_recipes.md row 13); False continues from the previous round's weights.
    c.pretrain.restart_rounds = True
    c.pretrain.feature_layer = "after_interpolate"  # or "transformer_<i>"
    c.pretrain.frame_stride = 10      # keep every n-th frame for the GMM fit
    # pycave's GaussianMixture as the reference calls it (ref recipes/desed/pmam/gmm.py; sed_recipes.md
    # row 22): full covariance, means from k-means (k-means++ then Lloyd), covariance regularisation
    # 1e-6, at most 100 EM epochs, on every stored frame (~1M+). The cap bounds host memory (1M x 768
    # float32 = 3 GB).
    c.pretrain.max_gmm_frames = 1_000_000
    c.pretrain.gmm_kind = "gmm"       # "gmm" (soft posteriors) or "kmeans" (one-hot)
    c.pretrain.gmm_init = "kmeans"    # "kmeans" (Lloyd from k-means++ seeds) or "kmeans++" (the seeds only)
    c.pretrain.gmm_max_iter = 100
    c.pretrain.gmm_pca_dim = 0        # 0: no PCA
    c.pretrain.gmm_reg_covar = 1e-6
    c.pretrain.mask_rate = 0.8
    c.pretrain.mask_block = 10        # frames (0.1 s)
    c.pretrain.p_mask_token = 0.9
    c.pretrain.p_random = 0.05
    c.pretrain.aux_weight = 0.1       # clip-level AT loss
    # The reference masks every block whose noise is <= the value at rank int(n * rate): 81 of 100
    # blocks at rate 0.8 (ref src/models/transformer/mask.py:104-106; sed_recipes.md row 20), which
    # jaxaudio.nn.masking.block_mask(reference_count=True) reproduces.
    c.pretrain.mask_reference_count = True

    # Stages, each in the one schema (jaxaudio/train/stage_config.py); groups are
    # (name, regex on the parameter path, lr, weight decay), the first match wins.
    c.stages = ml_collections.ConfigDict()
    p = c.stages.pretrain = ml_collections.ConfigDict()   # every round's masked-audio-model stage
    p.steps = 30 * EPOCH_STEPS        # 30 epochs (ref config/pmam/post_pretrain.yaml:18)
    p.lr = 1.5e-4                     # CNN / decoder (post_pretrain.yaml:107-109,115-117)
    p.weight_decay = 1e-4
    # exp-down from epoch 10, exponent -1.5, no warm-up (post_pretrain.yaml:17-22)
    p.schedule = {"kind": "warmup_exp_down", "warmup_steps": 0,
                  "decay_start_step": 10 * EPOCH_STEPS, "exponent": -1.5}
    p.groups = _groups(
        ("encoder_frozen", r"^encoder/blocks/[0-7]/", 0.0, 0.0),     # first 8 blocks frozen (post_pretrain.yaml:113)
        # In PaSST only the LoRA adapters of blocks 9-12 and the final norm train, at 5e-6 with weight decay 1
        # (ref recipes/desed/pmam/main.py:107 mark_only_lora_as_trainable, post_pretrain.yaml:110-112;
        # sed_recipes.md row 5); the base kernels, patch embedding, positions and tokens stay as loaded.
        ("encoder_lora", r"^encoder/blocks/(8|9|10|11)/.*lora_(a|b)$", 5e-6, 1.0),
        ("encoder_norm", r"^encoder/norm/", 5e-6, 1.0),
        ("encoder_base", r"^encoder/", 0.0, 0.0),
        # The reference's head group is every parameter outside PaSST, the CNN and the decoder names,
        # so out_norm and mask_token too (ref recipes/desed/finetune/cnn_trans/setting.py:21,109-113;
        # sed_recipes.md row 16); post_pretrain.yaml:118-120.
        ("heads", r"^(out_norm|mask_token|mlm_hidden|mlm_out|at_pool|at_prototype_head)(/|$)", 2e-4, 1e-4),
    )
    p.frame_shift_sigma = 90.0        # ref src/preprocess/data_aug.py:11,17 (max_shift_frame=90)
    # Mixup of the whole batch with the pseudo labels, one coin p 0.5, lambda ~ Beta(0.2, 0.2)
    # (ref recipes/desed/pmam/train.py:58-59, data_aug.py:36-37; sed_recipes.md row 10).
    p.mixup_prob = 0.5
    p.mixup_alpha = 0.2
    p.mixup_beta = 0.2
    p.filter_augment = dict(PAPER_FILTER_AUGMENT)   # post_pretrain.yaml:27-32 (row 7)
    # Sinusoidal warp of the mel axis, bias ~ U(0, 0.03), before FilterAugment (choice[3], ref
    # post_pretrain.yaml:27-28, src/preprocess/data_aug.py:127-131,207-220; row 8).
    p.freq_distortion = 0.03
    # Validate every epoch on the masked pseudo-label BCE of the validation clips and keep the lowest
    # (ref recipes/desed/pmam/main.py:184-206; sed_recipes.md row 14): that round's weights give the
    # next round's features and fine-tuning's start.
    p.eval_every = EPOCH_STEPS
    p.select = "best"

    # The fine-tuning head group: out_norm (the LayerNorm on PaSST's layer-10 tokens) is a head
    # parameter in the reference and trains in stage 1 (ref recipes/desed/finetune/cnn_trans/setting.py:21,
    # 109-113; sed_recipes.md row 16); finetune1.yaml:151-153, finetune2.yaml:109-111.
    finetune_heads = ("heads", r"^(out_norm|classifier|at_pool|at_class_head)/", 2e-4, 1e-4)
    f1 = c.stages.finetune1 = ml_collections.ConfigDict()   # heads only, everything else frozen
    f1.steps = 15 * EPOCH_STEPS       # 15 epochs (ref config/pmam/finetune1.yaml:22)
    f1.lr = 0.0                       # CNN, PaSST and decoder lr 0 (finetune1.yaml:140-150)
    # exp-down from epoch 10 of 15, exponent -1, no warm-up (finetune1.yaml:20-26; sed_recipes.md row 15)
    f1.schedule = {"kind": "warmup_exp_down", "warmup_steps": 0, "decay_start_step": 10 * EPOCH_STEPS,
                   "exponent": -1.0}
    f1.groups = _groups(finetune_heads)
    f1.lr_group = "heads"             # the lr logged per step
    f1.ema = 0.999                    # finetune1.yaml:28
    f1.consistency_max = 2.0          # finetune1.yaml:30
    f1.rampup_steps = 8 * EPOCH_STEPS  # finetune1.yaml:18 (self_loss_warmup 8 epochs)
    f1.rampup = "linear"              # finetune1.yaml:19
    f1.teacher_global_local = False
    f2 = c.stages.finetune2 = ml_collections.ConfigDict()   # all parameters (but the fusion weight)
    f2.steps = 30 * EPOCH_STEPS       # 30 epochs (ref config/pmam/finetune2.yaml:26)
    f2.lr = 1.5e-4                    # CNN / decoder (finetune2.yaml:98-100,106-108)
    f2.weight_decay = 1e-4
    # a 1-epoch warm-up from 0.1x, flat, exp-down from epoch 15, exponent -1.5 (finetune2.yaml:24-30;
    # sed_recipes.md row 15)
    f2.schedule = {"kind": "warmup_exp_down", "warmup_steps": 1 * EPOCH_STEPS, "warmup_from": 0.1,
                   "decay_start_step": 15 * EPOCH_STEPS, "exponent": -1.5}
    f2.groups = _groups(
        # PaSST 7.5e-6 (finetune2.yaml:101-105), the last step_lr=4 blocks and the final PaSST norm
        # ("norm." in the name) at 2x (ref recipes/desed/finetune/cnn_trans/setting.py:46-65; row 16)
        ("encoder_top", r"^encoder/(blocks/(8|9|10|11)|norm)/", 1.5e-5, 1e-4),
        ("encoder", r"^encoder/", 7.5e-6, 1e-4),
        finetune_heads,
    )
    f2.lr_group = ""
    f2.ema = 0.999                    # finetune2.yaml:32
    f2.consistency_max = 40.0         # finetune2.yaml:34
    f2.rampup_steps = 15 * EPOCH_STEPS  # finetune2.yaml:23 (self_loss_warmup 15 epochs)
    f2.rampup = "logistic"            # 1 / (1 + e^(-10 (x - 0.5))) over 15 epochs (ref finetune/train.py:96-111)
    f2.teacher_global_local = True    # the stage-2 teacher sees global-local fused features
    for f in (f1, f2):
        f.weak_weight = 0.5           # pooled clip BCE (finetune*.yaml w_weak, w_weak_cons)
        f.at_weight = 2.0             # AT-branch clip BCE (finetune*.yaml w_AT)
        # One coin per batch with p 0.5; if it lands, the strong and the weak rows are each mixed
        # within themselves with lambda ~ Beta(10, 0.5); unlabeled rows never (ref
        # recipes/desed/finetune/train.py:78-80; sed_recipes.md row 10).
        f.mixup_prob = 0.5
        f.mixup_alpha = 10.0
        f.mixup_beta = 0.5
        f.mixup_coin = "batch"
        f.mixup_sources = ("strong", "weak")
        f.frame_shift_sigma = 90.0    # ref src/preprocess/data_aug.py:11,17
        # The clip BCEs see the weak subset only (ref recipes/desed/finetune/train.py:157,163; row 12).
        f.weak_subset_only = True
        # Validate every epoch and keep the best (student and teacher PSDS1; the trainer ranks by
        # the teacher's): its weights go to the next stage and to evaluation (row 14).
        f.eval_every = EPOCH_STEPS
        f.select = "best"
        f.filter_augment = dict(PAPER_FILTER_AUGMENT)   # finetune1.yaml:40-45, finetune2.yaml:43-48 (row 7)
        f.freq_distortion = 0.03      # finetune1.yaml:40, finetune2.yaml:43 (choice[3]; row 8)
        # Student and teacher each get their own draw of the label-free augmentation (frequency
        # distortion, FilterAugment); shift and mixup are shared (n_transform: 2, finetune1.yaml:39; row 9).
        f.two_views = True

    c.train = ml_collections.ConfigDict()   # loop defaults of every stage
    # Kept on purpose: the reference calls clip_grad_norm_ before backward() (ref pmam/train.py:127-128),
    # so it never clips; we clip at 20, a guard that rarely binds (sed_recipes.md row 17, README).
    c.train.clip_norm = 20.0
    c.train.log_every = 100
    c.train.checkpoint_every = 1000
    c.train.keep = 2

    c.batch = ml_collections.ConfigDict()
    # The strong rows of both phases include AudioSet-strong real clips (sed_recipes.md row 1): pre-training
    # reads the real set only (ref post_pretrain.yaml:98-99 strong_audio_folder), fine-tuning 4 real + 2
    # synthetic (finetune1.yaml:12, finetune2.yaml). On the built-in set "strong_real" is its stand-in.
    c.data.train_strong_real = "strong_real"
    c.batch.pretrain_strong = 6       # [6 strong, 6 weak, 12 unlabeled], labels unused
    c.batch.pretrain_strong_real = 6  # all 6 real
    c.batch.pretrain_weak = 6
    c.batch.pretrain_unlabeled = 12
    c.batch.strong = 6                # fine-tuning [4 strong + 2 synth, 6 weak, 6 unlabeled]
    c.batch.strong_real = 4           # of which 4 real
    c.batch.weak = 6
    c.batch.unlabeled = 6
    c.batch.eval = 16

    c.eval = sed_data_config.reference_sed_eval()   # class-wise windows, weak soft mask, temperature 0.5

    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    c.sharding = ml_collections.ConfigDict({"rules": ()})   # (regex, kind) pairs before the defaults

    if preset == "tiny":
        # Every stage on the built-in 16 kHz set on 2 CPU cores in well under 30 minutes:
        # 64 mels at 25 frames/s (hop 640) -> 250 output frames (40 ms), a 4-block ViT of
        # width 64 trained from scratch, a 3-block CNN, a 2-block context network.
        sed_data_config.tiny_vit_front_end(c)
        c.model.vit_dim = 64
        c.model.vit_depth = 4
        c.model.vit_heads = 4
        c.model.vit_mlp_ratio = 2.0
        c.model.feature_layer = 4
        c.model.cnn_channels = (16, 32, 64)
        c.model.cnn_pooling = ((2, 4), (5, 4), (1, 4))
        c.model.cnn_dropout = 0.1
        c.model.decoder_dim = 64
        c.model.context_layers = 2
        c.model.context_heads = 4
        c.model.freq_pool_heads = 4
        c.model.at_heads = 4
        c.model.n_prototypes = 10
        c.pretrain.frame_stride = 5
        c.pretrain.max_gmm_frames = 40_000
        # Sizes and rates are tiny's; every behaviour that is not a size is the paper preset's (the
        # recipe above): post-processing, augmentation, ramps, weak-only clip losses, selection.
        # Quantities in frames keep their seconds at tiny's 25 frames/s (a quarter of 100).
        p.steps = 400
        p.lr = 1e-3
        p.schedule = {"kind": "warmup_exp_down", "warmup_steps": 20, "decay_start_step": 200, "exponent": -1.5}
        # no PaSST, so no frozen or LoRA groups: the encoder trains at p.lr; the head group as the paper's
        p.groups = _groups(
            ("heads", r"^(out_norm|mask_token|mlm_hidden|mlm_out|at_pool|at_prototype_head)(/|$)", 1e-3, 1e-4),
        )
        p.frame_shift_sigma = 22.0        # the reference's 90 frames at 100 frames/s: 0.9 s
        p.eval_every = 200                # pre-training validation (pseudo-label BCE) twice per round
        c.pretrain.mask_block = 5         # 0.2 s at 25 frames/s
        tiny_schedule = {"kind": "warmup_exp_down", "warmup_steps": 20, "decay_start_step": 400, "exponent": -1.0}
        f1.steps = 150
        f1.groups = _groups(finetune_heads[:2] + (2e-3, 1e-4))
        f1.rampup_steps = 75
        f1.eval_every = 75
        f2.steps = 800
        f2.lr = 2e-3
        f2.groups = _groups(
            ("encoder_top", r"^encoder/norm/", 2e-3, 1e-4),   # the final encoder norm at 2x the encoder's
            ("encoder", r"^encoder/", 1e-3, 1e-4),
            finetune_heads[:2] + (2e-3, 1e-4),
        )
        f2.consistency_max = 2.0
        f2.rampup_steps = 400
        f2.eval_every = 200
        for f in (f1, f2):
            f.schedule = dict(tiny_schedule)
            f.ema = 0.99
            f.frame_shift_sigma = 22.0
        c.train.clip_norm = 5.0
        c.train.log_every = 50
        c.train.checkpoint_every = 100
        c.batch.pretrain_strong, c.batch.pretrain_weak, c.batch.pretrain_unlabeled = 4, 4, 8
        c.batch.strong, c.batch.weak, c.batch.unlabeled = 8, 4, 4
        c.batch.pretrain_strong_real, c.batch.strong_real = 4, 5   # the reference's shares: all / 2 of 3 real
        c.eval = sed_data_config.reference_sed_eval(frame_rate=25.0)   # windows of 8 and 32 frames
    if preset == "smoke":
        # Seconds on a CPU, for tests: the tiny network on the built-in "smoke" set (2.5 s
        # clips, 60 output frames), one round, a few hundred steps in all.
        c = get_config("tiny")
        c.data.synth_preset = "smoke"
        c.data.synth_dir = "data/desed_synth_smoke"
        c.data.clip_seconds = 2.5
        c.model.frames = 60
        c.model.vit_depth = 2             # half the tiny encoder and context network: compiling
        c.model.feature_layer = 2         # them is most of a smoke run's time
        c.model.context_layers = 1
        c.pretrain.rounds = 1
        c.pretrain.max_gmm_frames = 5000
        c.stages.pretrain.steps = 12
        c.stages.pretrain.eval_every = 6
        c.stages.finetune1.eval_every, c.stages.finetune2.eval_every = 10, 40
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
        c.train.log_every = 5
        c.train.checkpoint_every = 40
        c.eval = sed_data_config.reference_sed_eval(frame_rate=24.0)   # 60 frames per 2.5 s
        c.eval.primary_metric = "frame_auc"   # why: see the crnn smoke preset
    return c
