"""The MAT-SED ``paper`` preset pinned to the authors' recipe, field by field.

Values: ``spec/sed_recipes.md`` (the MAT-SED paragraph of "The same facts as values", and the table's
rows, which MAT-SED shares with PMAM), read from cai525/Transformer4SED at becbea2,
``config/mat-sed/base/{pretrain,finetune1,finetune2}.yaml`` (``pre``, ``ft1``, ``ft2`` below). No
weights are built: the network is ``nnx.eval_shape``'d for its parameter paths and the stages are
the System's own ``Stage`` objects (their data is read lazily, so nothing loads).
"""
from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from experiments import registry
from experiments.matsed import config as matsed_config
from experiments.matsed import system as matsed
from experiments.pmam.model import frontend_config
from experiments.sed import augment as sed_augment
from experiments.sed.task import SEDData
from jaxaudio.nn.masking import masked_block_count
from jaxaudio.train.optim import make_lr_schedule
from tests.experiments.optimizer_groups import assignment, expect

EPOCH = 394                       # 1578 weak clips // 4 per batch (ref src/preprocess/dataset.py:190-195)
DESED = {"weak": 1578, "strong_real": 3463, "synthetic": 10000, "unlabeled": 14412}
PAPER_FILTER = {"db_range": (-26.0, 26.0), "n_bands": (2, 5), "min_bw": 4, "mode": "step"}
ENCODER_TOP = r"^encoder/(blocks/(8|9|10|11)|norm)/"
HEADS = r"^(out_norm|classifier|at_pool|at_class_head)/"


def paper():
    return registry.load_config("matsed", "paper")


@pytest.fixture(scope="module")
def stages():
    return {s.name: s for s in matsed.stages(paper(), "/nonexistent/workdir") if s.trains}


@pytest.fixture(scope="module")
def params():
    model = nnx.eval_shape(lambda: matsed.MATSED(matsed.model_config(paper()), rngs=nnx.Rngs(0)))
    return nnx.state(model, nnx.Param)


def test_epoch_is_the_reference_sampler_length():
    pretrain = min(DESED["strong_real"] // 4, DESED["weak"] // 4, DESED["unlabeled"] // 16)
    finetune = min(DESED["strong_real"] // 3, DESED["synthetic"] // 1, DESED["weak"] // 4, DESED["unlabeled"] // 4)
    assert matsed_config.EPOCH_STEPS == pretrain == finetune == EPOCH


def test_steps_and_selection(stages):
    """15 / 15 / 30 epochs (ref pre:13, ft1:20, ft2:24); fine-tuning keeps its best epoch (row 14)."""
    assert {n: s.steps for n, s in stages.items()} == {"pretrain": 15 * EPOCH, "finetune1": 15 * EPOCH,
                                                        "finetune2": 30 * EPOCH}
    assert [stages[n].init_from for n in ("pretrain", "finetune1", "finetune2")] == [None, "pretrain", "finetune1"]
    for name in ("finetune1", "finetune2"):
        assert stages[name].select == "best" and stages[name].eval_every == EPOCH


SCHEDULES = {  # (warm-up epochs, warm-up start, decay from epoch, exponent)
    "pretrain": (1, 0.1, 10, -0.5),     # ref pre:12-16
    "finetune1": (0, 0.1, 10, -1.0),    # ref ft1:18-24
    "finetune2": (1, 0.1, 15, -1.0),    # ref ft2:22-28
}


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedules(stages, name):
    stage = stages[name]
    warm, rate, cut, exponent = SCHEDULES[name]
    schedule = dict(stage.default_group["schedule"])
    assert schedule == {"kind": "warmup_exp_down", "warmup_steps": warm * EPOCH, "decay_start_step": cut * EPOCH,
                        "exponent": exponent, **({"warmup_from": rate} if warm else {})}
    lr = make_lr_schedule(1.0, stage.default_group["schedule"], stage.steps)
    end = float(lr(stage.steps - 1))
    assert end == pytest.approx(np.exp(exponent * ((stage.steps - 1 - cut * EPOCH) / (stage.steps - cut * EPOCH)) ** 2),
                                rel=1e-4)


def test_pretrain_trains_the_context_network_only(stages, params):
    """Encoder frozen (ref recipes/desed/mlm/mlm_passt/passt_mlm_setting.py), decoder and head 1e-4 (pre:88-102)."""
    t = assignment(stages["pretrain"], params)
    expect(t, r"^encoder/", 0.0)
    expect(t, r"^context/", 1e-4, 1e-4)
    expect(t, r"^(out_norm|mlm_hidden|mlm_out)/", 1e-4, 1e-4)
    expect(t, r"^mask_token$", 1e-4, 1e-4)
    expect(t, r"^(classifier|at_pool|at_class_head)/", 0.0)   # never read in pre-training


def test_finetune_groups(stages, params):
    """Stage 1: heads 2e-4, the rest frozen (ft1:131-142). Stage 2: PaSST 5e-6, blocks 9-12 and the final
    norm 2x, context 1e-4, heads 1e-4 (ft2:90-100; ref recipes/desed/finetune/passt/setting.py:40-62)."""
    t1 = assignment(stages["finetune1"], params)
    expect(t1, HEADS, 2e-4, 1e-4)
    expect(t1, r"^(encoder|context)/", 0.0)
    t2 = assignment(stages["finetune2"], params)
    expect(t2, ENCODER_TOP, 1e-5, 1e-4)
    expect(t2, r"^encoder/blocks/[0-7]/", 5e-6, 1e-4)
    expect(t2, r"^encoder/(patch_embed|cls_token|dist_token|freq_pos_embed|time_pos_embed|token_pos_embed)", 5e-6)
    expect(t2, r"^context/", 1e-4, 1e-4)
    expect(t2, HEADS, 1e-4, 1e-4)


def test_mean_teacher_and_ramps(stages):
    c = paper()
    f1, f2 = c.stages.finetune1, c.stages.finetune2
    assert (f1.ema, f2.ema) == (0.999, 0.999)                                   # ft1:29, ft2:32
    assert (f1.consistency_max, f1.rampup, f1.rampup_steps) == (2.0, "linear", 8 * EPOCH)      # ft1:25-31
    assert (f2.consistency_max, f2.rampup, f2.rampup_steps) == (40.0, "logistic", 15 * EPOCH)  # ft2:29-35
    for f in (f1, f2):
        assert (f.weak_weight, f.at_weight, f.weak_subset_only) == (0.5, 2.0, True)
    assert (f1.teacher_global_local, f2.teacher_global_local) == (False, True)


def test_masking():
    """Blocks of 10 frames at rate 0.75, 0.8 token / 0.1 random / 0.1 kept (pre:52-53, mask.py:50)."""
    p = paper().pretrain
    assert (p.mask_block, p.mask_rate, p.p_mask_token, p.p_random) == (10, 0.75, 0.8, 0.1)
    assert masked_block_count(100, p.mask_rate, reference_count=p.mask_reference_count) == 76


def test_batches_include_the_real_strong_subset():
    """[4 strong, 4 weak, 16 unlabeled] with AudioSet-strong (pre:4,63); [3 real + 1 synthetic, 4, 4] (ft1:12)."""
    c = paper()
    data = SEDData(c, c.model.frames)
    assert data.pretrain_counts() == {"strong_real": 4, "synthetic_train": 0, "weak": 4, "unlabeled": 16}
    assert data.finetune_counts() == {"strong_real": 3, "synthetic_train": 1, "weak": 4, "unlabeled": 4}


def test_augmentation():
    """Rows 7-10 and 18: FilterAugment +-26 dB, 2-4 bands, width 4; frequency distortion 0.03; own draw
    per network in fine-tuning; mixup one coin p 0.5, Beta(10, 0.5), strong and weak; mel jitter 10 / 2000 Hz."""
    c = paper()
    fe = frontend_config(c)
    assert (fe.fmin_aug_range, fe.fmax_aug_range) == (10, 2000)
    b = c.batch
    for name in ("pretrain", "finetune1", "finetune2"):
        aug = sed_augment.stage_augment(c.stages[name], fe, (), (b.strong, b.weak, b.unlabeled))
        assert aug.filter_kwargs == PAPER_FILTER and aug.freq_distortion == 0.03
        assert aug.frame_shift_sigma == 90.0
        assert aug.two_views is (name != "pretrain")
        if name == "pretrain":
            assert aug.mixup_prob == 0.0
        else:
            assert (aug.mixup_prob, aug.mixup_alpha, aug.mixup_beta, aug.mixup_per_batch) == (0.5, 10.0, 0.5, True)
            assert aug.mixed == frozenset({0, 1})


def test_post_processing_and_fusion():
    c = paper()
    assert tuple(c.eval.median_window) == tuple(int(w / 156 * 1000) for w in (5, 20, 5, 5, 5, 20, 20, 20, 5, 20))
    assert (c.eval.weak_mask, c.eval.temperature) == (True, 0.5)
    assert c.eval.max_filter_psds2 is True   # PSDS2 after the max filter too (ref src/codec/decoder.py:94)
    g = c.model.global_local
    assert (g.window, g.teacher_step, g.eval_step, g.local_weight) == (512, 49, 31, 0.5)
    assert c.train.clip_norm == 20.0   # kept on purpose: the reference's clip is a no-op (README)
    assert not c.model.passt_checkpoint and not c.model.allow_random_init


def test_frames_follow_the_encoder_time_step():
    """Paper: PaSST's 10-frame time stride, each time patch interpolated to 10 frames (x10,
    papers.md §2). A finer ``model.vit_time_stride`` (the tiny ablation's 5) upsamples by 5 to the
    same 250 tiny frames."""
    cfg = matsed.model_config(paper())
    assert (cfg.vit.stride, cfg.vit.step, cfg.upsample) == (10, 10, 10)
    tiny = registry.load_config("matsed", "tiny")
    tiny.model.vit_time_stride = 5
    fine = matsed.model_config(tiny)
    assert (fine.vit.stride, fine.vit.step, fine.upsample, fine.vit.time_patches) == (10, 5, 5, 47)
    model = nnx.eval_shape(lambda: matsed.MATSED(fine, rngs=nnx.Rngs(0)))
    mel = jax.ShapeDtypeStruct((1, 250, 64), np.float32)
    frames = nnx.eval_shape(lambda m, x: m.encode(x, train=False), model, mel)
    assert frames["fused"].shape == (1, 250, 64)
