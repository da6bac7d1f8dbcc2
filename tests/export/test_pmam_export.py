"""TFLite export of a PMAM workdir (ViT + CNN + Transformer-XL context network), run in LiteRT.

The workdir holds a random-init fine-tuning state saved where the PMAM run leaves its last
stage, with 2 s clips (50 frames) of the small synthetic set, so the conversions stay fast.
Reference: the float32 model must match the training-time JAX path (``features.log_mel``
with the stored DFT matrix, ``PMAM.sed_forward`` on the teacher weights).
"""
import json
import os

import jax
import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

from flax import nnx  # noqa: E402

from experiments.configs.pmam import get_config  # noqa: E402
from experiments.systems import stages  # noqa: E402
from experiments.systems.pmam import stage_plan  # noqa: E402
from experiments.systems.pmam_model import build_model, frontend_config, mel_frames  # noqa: E402
from jaxaudio.export import export_model, load_inference_model  # noqa: E402
from jaxaudio.export.report import model_facts  # noqa: E402
from jaxaudio.export.verify import run_tflite, verify  # noqa: E402
from jaxaudio.train.checkpoint import Checkpointer  # noqa: E402
from jaxaudio.train.state import create_train_state  # noqa: E402


def make_workdir(root: str):
    config = get_config("tiny")
    config.data.synth_dir = os.path.join(root, "synth")
    config.data.synth_preset = "small"
    config.data.clip_seconds = 2.0
    config.model.frames = 50
    workdir = os.path.join(root, "w")
    final = os.path.join(workdir, "finetune2")
    os.makedirs(final)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump({"exp": "pmam", "preset": "tiny", "config": json.loads(config.to_json())}, f)
    _, state = create_train_state(build_model(config), stage_plan(config, "finetune2")["tx"], jax.random.key(0),
                                  with_teacher=True)
    with Checkpointer(os.path.join(final, "checkpoints"), async_save=False) as ckpt:
        ckpt.save(1, state)
    stages.mark_done(final, {})
    return workdir, config, state


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("pmam_export"))
    workdir, config, state = make_workdir(root)
    model = load_inference_model(workdir)
    written = export_model(model, ("float32", "int8"), os.path.join(root, "out"), calibration_clips=4)
    variants = {fmt: item["bytes"] for fmt, item in written.items()}
    return {"model": model, "config": config, "state": state, "variants": variants,
            "checks": verify(model, variants, max_clips=4)}


def training_path_outputs(config, state, waveforms):
    model = build_model(config)
    graphdef, _, _ = nnx.split(model, nnx.Param, ...)
    teacher = nnx.merge(graphdef, state.teacher["params"], state.teacher["model_state"])
    teacher.eval()
    out = teacher.sed_forward(mel_frames(waveforms, frontend_config(config), config.model.frames))
    return {k: np.asarray(out[k]) for k in ("strong", "weak")}


def test_float32_matches_training_path_within_1e4(exported):
    held = exported["model"].held_out(4)
    reference = training_path_outputs(exported["config"], exported["state"], held.waveforms)
    got = run_tflite(exported["variants"]["float32"], held.waveforms)
    assert got["strong"].shape == reference["strong"].shape == (4, 50, 10)
    for key in ("strong", "weak"):
        np.testing.assert_allclose(got[key], reference[key], atol=1e-4, rtol=0)
    assert exported["checks"]["variants"]["float32"]["frame_agreement"] == 1.0


def test_variants_are_builtin_only(exported):
    for fmt, data in exported["variants"].items():
        facts = model_facts(data)
        assert facts["builtin_only"] and not facts["non_builtin_ops"], (fmt, facts["non_builtin_ops"])


def test_int8_runs_and_is_smaller(exported):
    checks = exported["checks"]["variants"]["int8"]
    assert np.isfinite(checks["max_abs"])
    assert len(exported["variants"]["int8"]) < 0.5 * len(exported["variants"]["float32"])


def test_unfinished_run_cannot_be_exported(tmp_path):
    from jaxaudio.errors import JaxAudioError

    config = get_config("tiny")
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / "config.json").write_text(json.dumps({"exp": "pmam", "preset": "tiny",
                                                     "config": json.loads(config.to_json())}))
    with pytest.raises(JaxAudioError, match="finetune2.*has not finished"):
        load_inference_model(str(workdir))
