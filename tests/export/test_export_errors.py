"""Bad inputs to the exporter fail with errors that name the file, op or choices."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments.configs.crnn import get_config
from jaxaudio.errors import CheckpointError, ExportError
from jaxaudio.export import FORMATS, load_inference_model, parse_formats
from jaxaudio.export.model import InferenceModel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_config(workdir):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump({"exp": "crnn", "preset": "tiny", "config": json.loads(get_config("tiny").to_json())}, f)


def test_workdir_without_checkpoint_names_it(tmp_path):
    workdir = str(tmp_path / "w")
    write_config(workdir)
    with pytest.raises(CheckpointError, match=str(tmp_path / "w" / "checkpoints")):
        load_inference_model(workdir)
    os.makedirs(os.path.join(workdir, "checkpoints"))
    with pytest.raises(CheckpointError, match="checkpoints: holds no checkpoint"):
        load_inference_model(workdir)


def test_workdir_without_config_names_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="config.json: missing"):
        load_inference_model(str(tmp_path))


def test_unknown_format_lists_the_known_ones():
    with pytest.raises(ExportError) as err:
        parse_formats("float32,int4")
    assert "'int4'" in str(err.value)
    for name in FORMATS:
        assert name in str(err.value)


def test_cli_reports_unknown_format(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "jaxaudio.export", "--workdir", str(tmp_path), "--formats", "bf16"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown format" in proc.stderr and "int8_dynamic" in proc.stderr


def test_unexportable_op_is_named():
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    from jaxaudio.export.tflite import convert
    import jax.numpy as jnp

    def spectrum(variables, waveform):  # complex FFT: no TFLite builtin takes it
        return {"weak": jnp.abs(jnp.fft.fft(waveform))}

    model = InferenceModel(name="fft_model", fn=spectrum, variables={}, sample_rate=16, clip_samples=16,
                           class_names=("a",), frame_timestamps=np.zeros(2))
    with pytest.raises(ExportError) as err:
        convert(model, "float32")
    message = str(err.value)
    assert "fft_model (float32)" in message and "stablehlo.fft" in message
    assert "no builtin FFT" in message  # why, and what to do instead


def write_exp(workdir, exp):
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump({"exp": exp, "preset": "tiny", "config": {}}, f)


def test_experiment_without_export_hook_is_named(tmp_path, monkeypatch):
    from experiments import configs as registry

    monkeypatch.setitem(registry.EXPERIMENTS, "hookless", ("experiments.configs.crnn",
                                                           "experiments.systems.sed_eval", "no hook"))
    write_exp(str(tmp_path), "hookless")
    with pytest.raises(ExportError) as err:
        load_inference_model(str(tmp_path))
    message = str(err.value)
    assert "'hookless' cannot be exported" in message
    assert "experiments.systems.sed_eval_inference" in message and "inference_model(config, workdir)" in message


def test_unregistered_experiment_lists_the_known_ones(tmp_path):
    write_exp(str(tmp_path), "no_such_exp")
    with pytest.raises(ExportError, match=r"'no_such_exp' is not registered; known: .*crnn"):
        load_inference_model(str(tmp_path))


def test_cli_reports_missing_checkpoint(tmp_path):
    workdir = str(tmp_path / "w")
    write_config(workdir)
    proc = subprocess.run([sys.executable, "-m", "jaxaudio.export", "--workdir", workdir, "--formats", "float32"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "error:" in proc.stderr and os.path.join(workdir, "checkpoints") in proc.stderr
    assert "Traceback" not in proc.stderr
