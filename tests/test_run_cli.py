"""experiments/run.py: registry look-up, overrides and the errors a user sees."""
import ml_collections
import pytest

from experiments import registry
from experiments.overrides import apply_overrides
from experiments.run import main, parse_args
from jaxaudio.errors import ConfigError


def _config():
    c = ml_collections.ConfigDict()
    c.train = ml_collections.ConfigDict({"lr": 1e-3, "steps": 10, "ema": True, "name": "x", "sizes": (1, 2)})
    return c


def test_overrides_keep_types():
    c = apply_overrides(_config(), {"train.lr": "3e-4", "train.steps": "20", "train.ema": "false",
                                    "train.name": "y", "train.sizes": "(4, 5, 6)"})
    assert c.train.lr == pytest.approx(3e-4) and isinstance(c.train.lr, float)
    assert c.train.steps == 20 and isinstance(c.train.steps, int)
    assert c.train.ema is False and c.train.name == "y" and c.train.sizes == (4, 5, 6)


def test_unknown_key_lists_what_exists():
    with pytest.raises(ConfigError, match=r"unknown key 'lrr' under train; keys there: .*lr"):
        apply_overrides(_config(), {"train.lrr": "1"})


def test_bad_value_names_key():
    with pytest.raises(ConfigError, match="--config.train.steps: expected a number"):
        apply_overrides(_config(), {"train.steps": "many"})


def test_unknown_experiment_lists_known(capsys):
    assert main(["--exp", "no_such_system"]) == 2
    err = capsys.readouterr().err
    assert "unknown experiment 'no_such_system'" in err and "known experiments" in err


def test_parse_dotted_overrides():
    args, overrides = parse_args(["--exp", "a", "--config.train.lr=0.1", "--config.x.y=z"])
    assert args.exp == "a" and overrides == {"train.lr": "0.1", "x.y": "z"}


def test_list_runs(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in registry.SYSTEMS:
        assert name in out


def test_list_shows_every_registered_system_with_its_description(capsys):
    assert main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(registry.SYSTEMS)
    for name in registry.SYSTEMS:
        row = [line for line in lines if line.split()[0] == name]
        assert len(row) == 1, lines
        assert registry.load(name).description in row[0]
        assert ("(default)" in row[0]) == (name == registry.DEFAULT)


def test_registry_loads_each_system_under_its_own_name():
    for name in registry.SYSTEMS:
        system = registry.load(name)
        assert system.name == name and system.presets
        assert "smoke" in system.presets  # the tests' preset
        assert registry.load_config(name, system.presets[0]) is not None


def test_registry_unknown_name_is_a_config_error():
    with pytest.raises(ConfigError, match=r"unknown experiment 'nope'; known experiments: .*crnn"):
        registry.load("nope")


def test_unknown_preset_lists_the_presets(capsys):
    with pytest.raises(ConfigError) as err:
        registry.load_config("crnn", "huge")
    assert "no preset 'huge'" in str(err.value)
    for preset in registry.load("crnn").presets:
        assert preset in str(err.value)
    assert main(["--exp=crnn", "--preset=huge", "--print_config"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "no preset 'huge'" in err and "presets: smoke, tiny, paper" in err


def test_predict_without_input_is_a_clear_error(tmp_path, capsys):
    assert main(["--exp=crnn", "--mode=predict", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "error: --mode=predict needs --input" in err and "Traceback" not in err


@pytest.mark.parametrize("mode", ["export", "predict"])
def test_config_overrides_are_refused_where_the_workdir_decides(tmp_path, capsys, mode):
    argv = ["--exp=crnn", f"--mode={mode}", "--workdir", str(tmp_path), "--config.stages.train.lr=3e-4"]
    assert main(argv + (["--input", str(tmp_path)] if mode == "predict" else [])) == 2
    err = capsys.readouterr().err
    assert f"error: --mode={mode} reads the trained run's config.json" in err
    assert "--config overrides do not apply" in err


def test_print_config_applies_overrides_and_writes_nothing(tmp_path, capsys):
    workdir = tmp_path / "w"
    assert main(["--exp=crnn", "--preset=smoke", "--workdir", str(workdir), "--print_config",
                 "--config.stages.train.steps=7"]) == 0
    assert "steps: 7" in capsys.readouterr().out
    assert not workdir.exists()
