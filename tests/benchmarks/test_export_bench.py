"""benchmarks/export.py builds its model from a workdir the way ``run.py --mode=export`` does.

No conversion here (the export tests cover it): the workdir's config.json names the
experiment, the registry gives its System, and ``inference_model(config, workdir, export=True)``
builds the model; a workdir that is not a finished run ends in a named error, exit code 2.
"""
import json
import types

from benchmarks import export as bench
from experiments import registry
from jaxaudio.train import run_record




def test_build_reads_the_workdirs_experiment_and_config(tmp_path, monkeypatch):
    config = registry.load_config("crnn", "smoke")
    config.stages.train.lr = 1.25e-3  # an override the builder must see: it reads config.json
    run_record.save(str(tmp_path), "crnn", "smoke", config)
    calls = []

    def inference_model(cfg, workdir, *, export):
        calls.append((cfg, workdir, export))
        return "model"

    monkeypatch.setattr(registry, "load", lambda name: types.SimpleNamespace(
        name=name, inference_model=inference_model) if name == "crnn" else None)
    assert bench.build_from_workdir(str(tmp_path)) == "model"
    (cfg, workdir, export), = calls
    assert workdir == str(tmp_path) and export is True
    assert cfg.stages.train.lr == 1.25e-3 and json.loads(cfg.to_json()) == json.loads(config.to_json())


def test_a_workdir_without_config_json_is_named(tmp_path, capsys):
    assert bench.main(["--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "config.json" in err and str(tmp_path) in err


def test_an_unfinished_run_names_the_command_that_finishes_it(tmp_path, capsys):
    """Through the real registry and the CRNN System down to ``restore_final`` (no training)."""
    run_record.save(str(tmp_path), "crnn", "smoke", registry.load_config("crnn", "smoke"))
    assert bench.main(["--workdir", str(tmp_path), "--formats", "float32"]) == 2
    err = capsys.readouterr().err
    assert "has not finished" in err and f"--exp=crnn --workdir={tmp_path}" in err


def test_an_unknown_experiment_is_named(tmp_path, capsys):
    config = registry.load_config("crnn", "smoke")
    run_record.save(str(tmp_path), "no_such_exp", "smoke", config)
    assert bench.main(["--workdir", str(tmp_path)]) == 2
    assert "no_such_exp" in capsys.readouterr().err
