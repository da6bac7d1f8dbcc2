"""The config sections the speech-recognition systems share: the encoder and decoder sizes,
SpecAugment, the training stage and evaluation. Paraformer and the autoregressive baseline train
the same Conformer encoder on the same data with the same schedule, so that what differs between
them is the decoder alone (the comparison ``benchmarks/nar_vs_ar.py`` makes).

Values marked [V] are FunASR's AISHELL-1 Paraformer recipe (``spec/papers.md`` §6,
``examples/aishell/paraformer/conf/paraformer_conformer_12e_6d_2048_256.yaml``), pinned by
``tests/experiments/test_paraformer_paper_preset.py``.
"""
import ml_collections

from experiments.asr import data as asr_data

PRESETS = ("smoke", "tiny", "paper")
TRAIN_STAGE = "train"


def model_section(preset: str) -> ml_collections.ConfigDict:
    """Encoder and decoder sizes and the CTC / label-smoothing weights."""
    m = ml_collections.ConfigDict()
    m.encoder = ml_collections.ConfigDict({
        "input_dim": 80, "d_model": 256, "heads": 4, "ffn_dim": 2048, "blocks": 12, "kernel": 15,  # [V] encoder_conf
        "dropout": 0.1, "attention_dropout": 0.0, "pos_dropout": 0.1})                              # [V]
    m.decoder_layers, m.decoder_heads, m.decoder_ffn = 6, 4, 2048                                   # [V] decoder_conf
    m.decoder_dropout, m.decoder_attention_dropout = 0.1, 0.0                                       # [V]
    m.ctc_weight, m.label_smoothing = 0.3, 0.1                                                      # [V] model_conf
    if preset in ("tiny", "smoke"):
        # 2 CPU cores in about 25 minutes (our choice): d 96, 4 blocks, FFN 384, 2 decoder layers;
        # d 144 ran at 2 s a step, d 96 at 0.47 s
        m.encoder.update({"d_model": 96, "heads": 4, "ffn_dim": 384, "blocks": 4, "kernel": 15})
        m.decoder_layers, m.decoder_ffn = 2, 384
    if preset == "smoke":
        m.encoder.update({"d_model": 64, "heads": 2, "ffn_dim": 128, "blocks": 1})
        m.decoder_layers, m.decoder_heads, m.decoder_ffn = 1, 2, 128
    return m


def specaug_section(preset: str) -> ml_collections.ConfigDict:
    """FunASR's SpecAugLFR settings for AISHELL-1 [V]: time warp 5, 2 freq masks 0-30, 2 time masks 0-40."""
    s = ml_collections.ConfigDict({"enabled": True, "warp_window": 5, "freq_masks": 2, "freq_width": 30,
                                   "time_masks": 2, "time_width": 40})
    if preset in ("tiny", "smoke"):
        s.time_width = 20   # our choice: built-in utterances are 1-3 s, AISHELL's ~5 s
        s.enabled = False   # the tiny runs' CERs were measured without it (README)
    return s


def train_stage(preset: str) -> ml_collections.ConfigDict:
    t = ml_collections.ConfigDict()
    t.steps = 150 * 120000 // 100   # our estimate of 150 epochs [V max_epoch] of AISHELL-1 train at ~100 utt per batch
    t.lr = 5e-4                      # [V] optim_conf lr (Adam)
    t.weight_decay = 0.0
    t.schedule = {"kind": "noam", "warmup_steps": 30000}   # [V] scheduler warmuplr, warmup_steps 30000
    t.clip_norm = 5.0                # [V] grad_clip
    t.eval_every, t.select = 5000, "best"   # FunASR averages the 10 best by valid acc [V]; we keep the best by CER
    t.log_every, t.checkpoint_every, t.keep = 100, 1000, 2
    if preset in ("tiny", "smoke"):
        # 2,200 steps: 25 minutes on 2 cores with data generation and evaluation (0.46 s a Paraformer step
        # alone); Paraformer's dev CER (measured, eval every 500) 0.623 / 0.266 / 0.196 / 0.156 / 0.120 at
        # 500 ... 2,500 steps
        t.steps, t.lr = 2200, 1e-3
        t.schedule = {"kind": "noam", "warmup_steps": 300}
        t.eval_every, t.log_every, t.checkpoint_every = 550, 50, 275
    if preset == "smoke":
        t.steps, t.lr = 60, 2e-3
        t.schedule = {"kind": "noam", "warmup_steps": 10}
        t.eval_every, t.log_every, t.checkpoint_every = 30, 10, 30
    return t


def base_config(preset: str) -> ml_collections.ConfigDict:
    """Everything but the system's own section (``paraformer`` / ``decode``)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data = asr_data.data_config(preset)
    c.model = model_section(preset)
    c.specaug = specaug_section(preset)
    c.speed_perturb = (0.9, 1.0, 1.1)   # [V] speed_perturb
    if preset in ("tiny", "smoke"):
        c.speed_perturb = ()        # our choice: the corpus already draws a speed per utterance
    c.batch = ml_collections.ConfigDict({"eval": 8 if preset == "smoke" else 32})
    c.stages = ml_collections.ConfigDict()
    c.stages[TRAIN_STAGE] = train_stage(preset)
    c.eval = ml_collections.ConfigDict()
    c.eval.validation_split = "dev"
    c.eval.primary_metric = "cer"
    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    c.sharding = ml_collections.ConfigDict({"rules": ()})
    return c
