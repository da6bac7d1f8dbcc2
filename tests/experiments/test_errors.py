"""Torn, hand-edited or foreign run files fail with a ``jaxaudio.errors`` type whose message names
the file and the problem, never a raw JSONDecodeError / KeyError / ValueError / BadZipFile.

Covered elsewhere (same rule, other files): tsv that is not UTF-8 in
``tests/data/test_bad_input.py::test_tsv_that_is_not_utf8``; median filter windows and shapes in
``tests/data/sed/test_labels.py::test_median_filter_*``; metrics.jsonl in
``tests/train/test_log.py::test_read_metrics_*``.
"""
from __future__ import annotations

import io
import json
import os

import ml_collections
import numpy as np
import pytest

from experiments import registry
from experiments import run as run_cli
from experiments.pmam.prototypes import Prototypes, load_labels
from jaxaudio.errors import CheckpointError
from jaxaudio.train import run_record, stages


def write(path, data) -> str:
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return path


def config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"seed": 1, "model": {"dim": 4}})


# ------------------------------------------------------------------------------------ done.json
def test_done_json_that_is_not_json(tmp_path):
    marker = write(tmp_path / "stage" / stages.DONE, '{"loss": 0.5, "steps": ')  # torn mid-write
    with pytest.raises(CheckpointError) as err:
        stages.read_done(str(tmp_path / "stage"))
    message = str(err.value)
    assert marker in message and "not valid JSON" in message and "line 1" in message
    assert "delete it to rerun the stage" in message


def test_done_json_that_is_not_an_object(tmp_path):
    marker = write(tmp_path / "stage" / stages.DONE, "[0.5, 10]")
    with pytest.raises(CheckpointError) as err:
        stages.read_done(str(tmp_path / "stage"))
    message = str(err.value)
    assert marker in message and "expected a JSON object" in message and "got list" in message


def test_a_torn_done_json_stops_run_once_before_the_work(tmp_path):
    write(tmp_path / "stage" / stages.DONE, "{")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        stages.run_once(str(tmp_path / "stage"), lambda: pytest.fail("a stage marked done ran again"))


def test_done_json_that_is_not_utf8(tmp_path):
    write(tmp_path / "stage" / stages.DONE, b'{"loss": "\xe9"}')
    with pytest.raises(CheckpointError, match="done.json"):
        stages.read_done(str(tmp_path / "stage"))


# ---------------------------------------------------------------------------------- config.json
def test_config_json_round_trip(tmp_path):
    run_record.save(str(tmp_path), "crnn", "smoke", config())
    exp, preset, loaded = run_record.load(str(tmp_path))
    assert (exp, preset, loaded.to_dict()) == ("crnn", "smoke", config().to_dict())


def test_config_json_missing(tmp_path):
    with pytest.raises(CheckpointError) as err:
        run_record.load(str(tmp_path))
    message = str(err.value)
    assert os.path.join(str(tmp_path), run_record.RECORD) in message and "missing" in message
    assert "not a training workdir" in message


def test_config_json_that_is_not_json(tmp_path):
    path = write(tmp_path / run_record.RECORD, '{"exp": "crnn",\n "preset": ')
    with pytest.raises(CheckpointError) as err:
        run_record.load(str(tmp_path))
    message = str(err.value)
    assert path in message and "not valid JSON" in message and "line 2" in message


def test_config_json_that_is_not_utf8(tmp_path):
    path = write(tmp_path / run_record.RECORD, b'{"exp": "\xff"}')
    with pytest.raises(CheckpointError) as err:
        run_record.load(str(tmp_path))
    assert path in str(err.value) and "not UTF-8" in str(err.value)


@pytest.mark.parametrize("record, lacks", [
    ({"exp": "crnn"}, "preset, config"),
    ({"preset": "tiny", "config": {}}, "exp"),
    ([1, 2], "exp, preset, config"),
])
def test_config_json_without_its_keys(tmp_path, record, lacks):
    path = write(tmp_path / run_record.RECORD, json.dumps(record))
    with pytest.raises(CheckpointError) as err:
        run_record.load(str(tmp_path))
    message = str(err.value)
    assert path in message and f"lacks {lacks}" in message and "'exp', 'preset', 'config'" in message


def test_config_json_whose_config_is_not_an_object(tmp_path):
    path = write(tmp_path / run_record.RECORD, json.dumps({"exp": "crnn", "preset": "tiny", "config": "x"}))
    with pytest.raises(CheckpointError) as err:
        run_record.load(str(tmp_path))
    assert path in str(err.value) and "'config' is a str, expected an object" in str(err.value)


BAD_RECORDS = {
    "missing": None,
    "not_json": '{"exp": "crnn", ',
    "no_keys": json.dumps({"exp": "crnn"}),
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_cli_export_names_a_bad_config_json(tmp_path, capsys, case):
    workdir = str(tmp_path / "w")
    os.makedirs(workdir)
    if BAD_RECORDS[case] is not None:
        write(os.path.join(workdir, run_record.RECORD), BAD_RECORDS[case])
    assert run_cli.main(["--exp=crnn", "--mode=export", "--workdir", workdir]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert os.path.join(workdir, run_record.RECORD) in errors[0]
    assert "Traceback" not in err


# ------------------------------------------------------------------------------ prototypes.npz
def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def kmeans_file(tmp_path, k=10, dim=4) -> str:
    path = str(tmp_path / "round1" / "prototypes" / "prototypes.npz")
    write(path, b"")
    Prototypes("kmeans", np.random.default_rng(0).normal(size=(k, dim))).save(path)
    return path


def test_prototypes_round_trip(tmp_path):
    path = kmeans_file(tmp_path)
    fitted = Prototypes.load(path, n_prototypes=10, dim=4)
    assert fitted.kind == "kmeans" and fitted.prototypes.shape == (10, 4)


def done_hint(path) -> str:
    return f"delete {os.path.join(os.path.dirname(path), stages.DONE)} to refit the prototypes"


def test_prototypes_missing(tmp_path):
    path = str(tmp_path / "round1" / "prototypes" / "prototypes.npz")
    with pytest.raises(CheckpointError) as err:
        Prototypes.load(path, n_prototypes=10, dim=4)
    message = str(err.value)
    assert path in message and "missing" in message and done_hint(path) in message


@pytest.mark.parametrize("data", [
    pytest.param(os.urandom(256), id="random_bytes"),
    pytest.param(b"", id="empty"),
    pytest.param(npz_bytes(prototypes=np.zeros((10, 4)), kind=np.asarray("kmeans"))[:150], id="truncated_npz"),
])
def test_prototypes_corrupt(tmp_path, data):
    path = write(tmp_path / "round1" / "prototypes" / "prototypes.npz", data)
    with pytest.raises(CheckpointError) as err:
        Prototypes.load(path, n_prototypes=10, dim=4)
    message = str(err.value)
    assert path in message and "cannot be read as a .npz file" in message and done_hint(path) in message


@pytest.mark.parametrize("arrays, missing", [
    ({"weights": np.ones(3)}, "kind"),
    ({"kind": np.asarray("kmeans")}, "prototypes"),
    ({"kind": np.asarray("gmm"), "prototypes": np.zeros((10, 4))}, "weights"),
])
def test_prototypes_npz_without_the_arrays(tmp_path, arrays, missing):
    path = write(tmp_path / "round1" / "prototypes" / "prototypes.npz", npz_bytes(**arrays))
    with pytest.raises(CheckpointError) as err:
        Prototypes.load(path, n_prototypes=10, dim=4)
    message = str(err.value)
    assert path in message and "not a prototypes file" in message and f"no array '{missing}" in message
    assert done_hint(path) in message


def test_prototypes_of_an_unknown_kind(tmp_path):
    path = write(tmp_path / "prototypes.npz", npz_bytes(kind=np.asarray("spectral"), prototypes=np.zeros((10, 4))))
    with pytest.raises(CheckpointError) as err:
        Prototypes.load(path)
    assert path in str(err.value) and "'spectral' is neither 'gmm' nor 'kmeans'" in str(err.value)


@pytest.mark.parametrize("k, dim", [(12, 4), (10, 6)], ids=["other_K", "other_width"])
def test_prototypes_of_another_k_or_feature_width(tmp_path, k, dim):
    path = kmeans_file(tmp_path, k=k, dim=dim)
    with pytest.raises(CheckpointError) as err:
        Prototypes.load(path, n_prototypes=10, dim=4)
    message = str(err.value)
    assert path in message and f"shape ({k}, {dim})" in message and "(10, 4)" in message
    assert "model.n_prototypes" in message and done_hint(path) in message


def test_prototypes_that_are_not_a_matrix(tmp_path):
    path = write(tmp_path / "prototypes.npz", npz_bytes(kind=np.asarray("kmeans"), prototypes=np.zeros(10)))
    with pytest.raises(CheckpointError, match=r"prototypes of shape \(10,\)"):
        Prototypes.load(path)


# ---------------------------------------------------------------------------- labels_<subset>.npy
def labels_dir(tmp_path) -> str:
    out = tmp_path / "round1" / "prototypes"
    out.mkdir(parents=True, exist_ok=True)
    return str(out)


def save_labels(out_dir, name, shape) -> str:
    path = os.path.join(out_dir, f"labels_{name}.npy")
    np.save(path, np.zeros(shape, np.float16))
    return path


def test_labels_round_trip(tmp_path):
    out = labels_dir(tmp_path)
    save_labels(out, "weak", (3, 5, 10))
    labels = load_labels(out, ["weak"], {"weak": (3, 5, 10)})
    assert labels["weak"].shape == (3, 5, 10)


def test_labels_missing(tmp_path):
    out = labels_dir(tmp_path)
    save_labels(out, "weak", (3, 5, 10))
    with pytest.raises(CheckpointError) as err:
        load_labels(out, ["weak", "unlabeled"], {"weak": (3, 5, 10), "unlabeled": (4, 5, 10)})
    message = str(err.value)
    assert os.path.join(out, "labels_unlabeled.npy") in message and "pseudo labels missing" in message
    assert f"delete {os.path.join(out, stages.DONE)} to recompute them" in message


def full_npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros((3, 5, 10), np.float16))
    return buf.getvalue()


@pytest.mark.parametrize("data", [
    pytest.param(os.urandom(256), id="random_bytes"),
    pytest.param(b"", id="empty"),
    pytest.param(full_npy()[:-20], id="truncated_data"),
    pytest.param(full_npy()[:60], id="truncated_header"),
])
def test_labels_corrupt(tmp_path, data):
    out = labels_dir(tmp_path)
    path = write(os.path.join(out, "labels_weak.npy"), data)
    with pytest.raises(CheckpointError) as err:
        load_labels(out, ["weak"], {"weak": (3, 5, 10)})
    message = str(err.value)
    assert path in message and "cannot be read as a .npy array" in message
    assert f"delete {os.path.join(out, stages.DONE)} to recompute them" in message


@pytest.mark.parametrize("shape", [(4, 5, 10), (3, 6, 10), (3, 5, 12), (3, 5)],
                         ids=["other_clips", "other_frames", "other_K", "other_rank"])
def test_labels_of_another_shape(tmp_path, shape):
    out = labels_dir(tmp_path)
    path = save_labels(out, "weak", shape)
    with pytest.raises(CheckpointError) as err:
        load_labels(out, ["weak"], {"weak": (3, 5, 10)})
    message = str(err.value)
    assert path in message and f"shape {shape}" in message and "expected (3, 5, 10)" in message
    assert "(clips, model.frames, model.n_prototypes)" in message


# ------------------------------------------------------------------- runs that never trained
def test_a_missing_data_dir_writes_no_workdir(tmp_path, capsys):
    workdir = tmp_path / "w"
    assert run_cli.main(["--exp=crnn", "--preset=smoke", "--workdir", str(workdir),
                         "--data_dir", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "--data_dir" in err and "no such folder" in err
    assert not workdir.exists()


def test_a_run_that_fails_on_its_data_removes_the_workdir_it_made(tmp_path, capsys):
    """A data folder that is not a DESED layout fails when the first stage reads it, before any
    training: the new workdir (config.json and all) is removed, so nothing looks like a run."""
    (tmp_path / "notdesed").mkdir()
    workdir = tmp_path / "w"
    assert run_cli.main(["--exp=crnn", "--preset=smoke", "--workdir", str(workdir),
                         "--data_dir", str(tmp_path / "notdesed")]) == 2
    err = capsys.readouterr().err
    assert "audio folder does not exist" in err and "removed (the run stopped before training started)" in err
    assert not workdir.exists()


def test_a_workdir_killed_before_training_is_refused_then_cleaned(tmp_path):
    """A run killed before training leaves its mark: predict and export refuse the folder, and
    the next run clears it instead of resuming from it."""
    workdir = str(tmp_path / "w")
    run_record.begin(workdir, "crnn", "smoke", config())
    write(os.path.join(workdir, "train", "stale.txt"), "left by the killed run")
    with pytest.raises(CheckpointError, match="stopped before training started"):
        run_record.load(workdir)
    run_record.begin(workdir, "crnn", "smoke", config())
    assert sorted(os.listdir(workdir)) == [run_record.RECORD, run_record.NOT_STARTED]
    run_record.mark_started(workdir)
    write(os.path.join(workdir, "train", "checkpoint.txt"), "training got going")
    assert run_record.load(workdir)[0] == "crnn" and not run_record.abandon(workdir)
    run_record.begin(workdir, "crnn", "smoke", config())  # a started workdir is kept, not remade
    assert sorted(os.listdir(workdir)) == [run_record.RECORD, "train"]


def test_a_folder_the_user_had_is_never_marked_or_removed(tmp_path):
    workdir = tmp_path / "mine"
    write(workdir / "notes.txt", "mine")
    run_record.begin(str(workdir), "crnn", "smoke", config())
    assert not (workdir / run_record.NOT_STARTED).exists() and not run_record.abandon(str(workdir))
    assert (workdir / "notes.txt").exists()


def test_the_paper_preset_without_passt_weights_is_refused(tmp_path, capsys):
    workdir = tmp_path / "w"
    assert run_cli.main(["--exp=pmam", "--preset=paper", "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err
    assert "--config.model.passt_checkpoint=" in err and "--config.model.allow_random_init=True" in err
    assert not workdir.exists()
    assert run_cli.main(["--exp=pmam", "--preset=paper", "--workdir", str(workdir), "--print_config",
                         "--config.model.allow_random_init=True"]) == 0
    assert "allow_random_init: true" in capsys.readouterr().out


def test_a_folder_without_the_real_strong_subset_trains_on_synthetic_strong_rows(tmp_path):
    """The AudioSet-strong subset is optional (a set mixed from your own banks has none): the
    strong rows then all come from the synthetic subset, and the run says so."""
    from experiments.sed import data as sed_data
    from experiments.sed.task import SEDData

    config = registry.load_config("pmam", "tiny")
    config.data.data_dir = str(tmp_path)
    assert config.data.train_strong_real == "strong_real" and config.batch.strong_real > 0
    (tmp_path / "audio/train/strong_label_real").mkdir(parents=True)
    kept = config.copy_and_resolve_references()
    sed_data.resolve_strong_real(kept)
    assert kept.data.train_strong_real == "strong_real" and kept.batch.strong_real == config.batch.strong_real
    (tmp_path / "audio/train/strong_label_real").rmdir()
    import logging

    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("jaxaudio.data")
    logger.addHandler(handler)
    try:
        sed_data.resolve_strong_real(config)
    finally:
        logger.removeHandler(handler)
    assert any("has no strong_real subset" in line for line in lines)
    assert (config.data.train_strong_real, config.batch.strong_real, config.batch.pretrain_strong_real) == ("", 0, 0)
    counts = SEDData(config, config.model.frames).finetune_counts()
    assert counts == {"synthetic_train": config.batch.strong, "weak": config.batch.weak,
                      "unlabeled": config.batch.unlabeled}
