"""experiments/run.py: registry look-up, overrides and the errors a user sees."""
import ml_collections
import pytest

from experiments import configs as registry
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
    for name in registry.EXPERIMENTS:
        assert name in out
