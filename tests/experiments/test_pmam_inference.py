"""PMAM's inference pass (validation, evaluation, predict, export): temperature and the weak soft
mask as the reference decodes (``src/models/cnn_transformer/passt_cnn.py``: sigmoid(x / temp_w),
linear-softmax pooling; ``src/codec/decoder.py``: strong scores times the pooled clip score),
checked against numpy from the plain logits."""
import numpy as np

from experiments import registry
from experiments.pmam import system as pmam


def _logit(p):
    return np.log(p) - np.log1p(-p)


def test_temperature_and_weak_mask_follow_the_reference_decode():
    config = registry.load_config("pmam", "smoke")
    model = pmam.build_model(config)
    model.eval()
    audio = np.random.default_rng(0).normal(0, 0.1, (2, int(config.data.clip_seconds * config.data.sample_rate)))
    batch = {"audio": audio.astype(np.float32)}
    config.eval.temperature, config.eval.weak_mask = 1.0, False
    plain = pmam.predict(config)(model, batch)  # temperature 1, no mask

    config.eval.temperature, config.eval.weak_mask = 0.5, True
    masked = pmam.predict(config)(model, batch)

    logits = _logit(np.asarray(plain["strong"], np.float64))
    strong = 1 / (1 + np.exp(-logits / 0.5))
    weak = np.clip((strong ** 2).sum(1) / strong.sum(1), 1e-7, 1.0)
    np.testing.assert_allclose(np.asarray(masked["weak"]), weak, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(masked["strong"]), strong * weak[:, None, :], rtol=1e-4, atol=1e-6)
    assert np.abs(np.asarray(masked["strong"]) - np.asarray(plain["strong"])).max() > 1e-2


def test_paper_post_processing_pins():
    """sed_recipes.md rows 2, 3, 11, 19 and 4 (the values the paper preset must hold)."""
    config = registry.load_config("pmam", "paper")
    assert tuple(config.eval.median_window) == tuple(int(w / 156 * 1000) for w in (5, 20, 5, 5, 5, 20, 20, 20, 5, 20))
    assert (config.eval.weak_mask, config.eval.temperature) == (True, 0.5)
    assert config.stages.finetune2.rampup == "logistic" and config.stages.finetune2.consistency_max == 40.0
    g = config.model.global_local
    assert (g.window, g.teacher_step, g.eval_step, g.local_weight) == (512, 49, 31, 0.5)
    assert (config.stages.finetune1.teacher_global_local, config.stages.finetune2.teacher_global_local) == (False, True)
