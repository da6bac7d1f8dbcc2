"""The AST-SED ``paper`` preset pinned to the authors' network and front end, and to the shared
fine-tuning recipe (spec/papers.md §4: "same mean-teacher fine-tuning as PaSST-SED", issue #7).

Network and front end: Transformer4SED ``src/models/ast/ast_models.py`` (``AST_SED``) and
``ast_feature_extraction.py``, as papers.md §4 lists them. Fine-tuning: the values the MAT-SED
preset pins (``tests/experiments/test_matsed_paper_preset.py``, ``config/mat-sed/base/finetune{1,2}.yaml``),
restated here as numbers so that a change to either preset shows. No weights are built.
"""
from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from experiments import registry
from experiments.astsed import system as astsed
from experiments.pmam.model import frontend_config
from experiments.sed import augment as sed_augment
from experiments.sed.task import SEDData
from jaxaudio.errors import ConfigError
from tests.experiments.optimizer_groups import assignment, expect

EPOCH = 394                        # 1578 weak clips // 4 per batch, as MAT-SED's
HEADS = r"^(out_norm|fte|gru|classifier)/"
PAPER_FILTER = {"db_range": (-26.0, 26.0), "n_bands": (2, 5), "min_bw": 4, "mode": "step"}


def paper():
    return registry.load_config("astsed", "paper")


@pytest.fixture(scope="module")
def stages():
    return {s.name: s for s in astsed.stages(paper(), "/nonexistent/workdir") if s.trains}


@pytest.fixture(scope="module")
def params():
    model = nnx.eval_shape(lambda: astsed.ASTSED(astsed.model_config(paper()), rngs=nnx.Rngs(0)))
    return nnx.state(model, nnx.Param)


def test_network_is_the_authors_ast_sed():
    cfg = astsed.model_config(paper())
    a = cfg.ast
    assert (a.n_mels, a.max_frames, a.patch_size, a.freq_stride, a.time_stride) == (128, 1024, 16, 10, 10)
    assert (a.freq_patches, a.time_patches, a.dim, a.depth, a.num_heads, a.mlp_ratio) == (12, 101, 768, 12, 12, 4.0)
    assert a.out_layer == 10 and cfg.norm_eps == 1e-5                       # layer10_out + nn.LayerNorm(768)
    assert (cfg.freq_pool, cfg.fte_depth, cfg.fte_heads, cfg.fte_mlp_ratio) == ("fte", 2, 4, 4.0)
    assert (cfg.decoder, cfg.upsample, cfg.gru_hidden, cfg.gru_layers) == ("lgd", 10, 768, 2)
    assert cfg.pred_len == 1000 and cfg.n_classes == 10
    np.testing.assert_allclose(cfg.pad_value, 4.2677393 / (2 * 4.5689974), rtol=1e-6)
    g = paper().model.global_local      # ASTWithSlide: 256 / 16, windows only; off unless asked for
    assert (g.window, g.eval_step, g.local_weight) == (0, 16, 1.0)


def test_front_end_is_the_ast_fbank():
    c = paper()
    fe = frontend_config(c)
    assert (fe.sample_rate, fe.n_mels, fe.win_length, fe.hop_length, fe.window) == (16000, 128, 400, 160, "hann")
    assert (fe.mel_scale, fe.center, fe.preemphasis, fe.remove_dc_offset) == ("kaldi", False, 0.97, True)
    assert fe.norm_mean == pytest.approx(-4.2677393) and fe.norm_std == pytest.approx(2 * 4.5689974)
    assert (fe.fmin_aug_range, fe.fmax_aug_range) == (1, 1)                  # no mel-bank jitter
    assert c.data.sample_rate == 16000 and c.model.ast_frames == 1024


def test_stages_steps_schedules_and_selection(stages):
    """No pre-training; 15 / 30 epochs, exp-down from epochs 10 / 15 (ft1:18-24, ft2:22-28), best epoch."""
    assert {n: s.steps for n, s in stages.items()} == {"finetune1": 15 * EPOCH, "finetune2": 30 * EPOCH}
    assert [stages[n].init_from for n in ("finetune1", "finetune2")] == [None, "finetune1"]
    want = {"finetune1": {"kind": "warmup_exp_down", "warmup_steps": 0, "decay_start_step": 10 * EPOCH,
                          "exponent": -1.0},
            "finetune2": {"kind": "warmup_exp_down", "warmup_steps": EPOCH, "warmup_from": 0.1,
                          "decay_start_step": 15 * EPOCH, "exponent": -1.0}}
    for name, stage in stages.items():
        assert dict(stage.default_group["schedule"]) == want[name]
        assert stage.select == "best" and stage.eval_every == EPOCH and stage.ema == 0.999


def test_groups(stages, params):
    """Stage 1: everything after AST at 2e-4, AST frozen. Stage 2: AST 5e-6, its last four blocks 2x
    (of which 10 and 11 and the final norm are unused: frozen), the rest 1e-4; weight decay 1e-4."""
    t1 = assignment(stages["finetune1"], params)
    expect(t1, HEADS, 2e-4, 1e-4)
    expect(t1, r"^encoder/", 0.0)
    t2 = assignment(stages["finetune2"], params)
    expect(t2, r"^encoder/blocks/(8|9)/", 1e-5, 1e-4)
    expect(t2, r"^encoder/blocks/[0-7]/", 5e-6, 1e-4)
    expect(t2, r"^encoder/(patch_embed|cls_token|distillation_token|position_embeddings)", 5e-6, 1e-4)
    expect(t2, r"^encoder/(blocks/(10|11)|norm)/", 0.0)
    expect(t2, HEADS, 1e-4, 1e-4)


def test_loss_batches_and_augmentation():
    c = paper()
    f1, f2 = c.stages.finetune1, c.stages.finetune2
    assert (f1.consistency_max, f1.rampup, f1.rampup_steps) == (2.0, "linear", 8 * EPOCH)
    assert (f2.consistency_max, f2.rampup, f2.rampup_steps) == (40.0, "logistic", 15 * EPOCH)
    for f in (f1, f2):   # no AT branch: AT weight 0 (the pooled clip is AST_SED's at_out)
        assert (f.weak_weight, f.at_weight, f.weak_subset_only, f.teacher_global_local) == (0.5, 0.0, True, False)
    assert SEDData(c, c.model.frames).finetune_counts() == {"strong_real": 3, "synthetic_train": 1, "weak": 4,
                                                             "unlabeled": 4}
    fe, b = frontend_config(c), c.batch
    for name in ("finetune1", "finetune2"):
        aug = sed_augment.stage_augment(c.stages[name], fe, (), (b.strong, b.weak, b.unlabeled))
        assert aug.filter_kwargs == PAPER_FILTER and aug.freq_distortion == 0.03 and aug.two_views
        assert (aug.mixup_prob, aug.mixup_alpha, aug.mixup_beta, aug.mixup_per_batch) == (0.5, 10.0, 0.5, True)
        assert aug.frame_shift_sigma == 90.0
    # FilterAugment's dB in feature units: ln(10) / 20 over the AST normalisation's 2 * std
    assert sed_augment.filter_units_per_db(fe) == pytest.approx(np.log(10) / 20 / (2 * 4.5689974))
    assert tuple(c.eval.median_window) == tuple(int(w / 156 * 1000) for w in (5, 20, 5, 5, 5, 20, 20, 20, 5, 20))
    assert (c.eval.weak_mask, c.eval.temperature) == (True, 0.5)


def test_paper_without_ast_weights_is_refused():
    config = paper()
    with pytest.raises(ConfigError, match="--config.model.ast_checkpoint="):
        astsed.SYSTEM.finalize_config(config)
    config.model.allow_random_init = True
    astsed.SYSTEM.finalize_config(config)


def test_tiny_keeps_every_behaviour_that_is_not_a_size():
    tiny, c = registry.load_config("astsed", "tiny"), paper()
    for name in ("finetune1", "finetune2"):
        t, p = tiny.stages[name], c.stages[name]
        for key in ("weak_weight", "at_weight", "weak_subset_only", "rampup", "select", "mixup_prob", "mixup_alpha",
                    "mixup_beta", "mixup_coin", "freq_distortion", "two_views", "teacher_global_local"):
            assert t[key] == p[key], (name, key)
        assert dict(t.filter_augment) == dict(p.filter_augment)
    assert (tiny.eval.weak_mask, tiny.eval.temperature) == (True, 0.5)
    cfg = astsed.model_config(tiny)
    assert (cfg.freq_pool, cfg.decoder, cfg.ast.time_patches * cfg.upsample, cfg.pred_len) == ("fte", "lgd", 250, 250)
    assert (tiny.stages.finetune1.steps, tiny.stages.finetune2.steps) == (150, 3000)
