"""Path helpers and the run files written through them, on local folders and on a fake ``gs://``.

The fake object store is fsspec's in-memory filesystem registered for the ``gs`` protocol, the
backend ``etils.epath`` uses for ``gs://`` without TensorFlow (with it, ``tf.io.gfile``). Like
GCS it refuses appends and has no rename, so anything that still appends or renames fails here.
"""
import importlib
import json
import os

import fsspec
import jax.numpy as jnp
import numpy as np
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from jaxaudio.io import paths
from jaxaudio.train.checkpoint import Checkpointer
from jaxaudio.train.log import MetricWriter, get_logger, read_metrics


class FakeObjectStore(MemoryFileSystem):
    """In-memory ``gs://``: whole-object writes only, no append, no rename."""

    protocol = ("gs", "gcs")
    store: dict = {}
    pseudo_dirs = [""]
    cachable = False

    @classmethod
    def _strip_protocol(cls, path):
        path = fsspec.utils.stringify_path(path)
        for prefix in ("gs://", "gcs://"):
            if path.startswith(prefix):
                path = path[len(prefix):]
        return super()._strip_protocol(path)

    def _open(self, path, mode="rb", **kwargs):
        if "a" in mode or "+" in mode:
            raise OSError(f"{path}: object stores cannot append ({mode!r})")
        return super()._open(path, mode, **kwargs)

    def mv(self, *args, **kwargs):
        raise OSError("object stores have no atomic rename")


@pytest.fixture
def gs(monkeypatch):
    """``gs://bucket`` backed by ``FakeObjectStore`` for the duration of one test."""
    from etils.epath import backend, gpath

    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)  # fsspec even where TF is installed
    registry = importlib.import_module("fsspec.registry")._registry  # fsspec.registry is a read-only view
    monkeypatch.setitem(registry, "gs", FakeObjectStore)
    monkeypatch.setitem(registry, "gcs", FakeObjectStore)
    backend.fsspec_backend._get_filesystem.cache_clear()
    FakeObjectStore.store.clear()
    yield "gs://bucket"
    backend.fsspec_backend._get_filesystem.cache_clear()
    FakeObjectStore.store.clear()


def test_is_remote_and_join():
    assert paths.is_remote("gs://b/run") and paths.is_remote("s3://b/x")
    assert not paths.is_remote("/tmp/run") and not paths.is_remote("workdirs/crnn")
    assert paths.join("gs://b/run", "round1/pretrain", "done.json") == "gs://b/run/round1/pretrain/done.json"
    assert paths.join("/tmp/run", "a") == os.path.join("/tmp/run", "a")


def test_fake_store_refuses_appends(gs):
    path = gs + "/x.txt"
    paths.write_text_atomic(path, "one\n")
    with pytest.raises(OSError):
        FakeObjectStore().open(path, "a")


@pytest.mark.parametrize("where", ["local", "gs"])
def test_atomic_write_read_exists(where, tmp_path, request):
    base = str(tmp_path / "deep" / "er") if where == "local" else request.getfixturevalue("gs") + "/deep/er"
    paths.makedirs(base)
    path = paths.join(base, "values.json")
    assert not paths.exists(path)
    paths.write_text_atomic(path, "first")
    paths.write_text_atomic(path, "second")
    assert paths.exists(path) and paths.read_text(path) == "second"
    with pytest.raises(RuntimeError):
        with paths.open_atomic(path) as f:
            f.write("torn")
            raise RuntimeError("killed mid-write")
    assert paths.read_text(path) == "second"  # a failed write leaves the old content
    paths.write_bytes_atomic(path + ".bin", b"\x89PNG")
    with paths.open_read(path + ".bin", binary=True) as f:
        assert f.read() == b"\x89PNG"
    paths.remove(path + ".bin")
    paths.remove(path + ".bin")  # missing: no error
    assert not paths.exists(path + ".bin")
    if where == "local":
        assert sorted(os.listdir(base)) == ["values.json"]  # no temporary file left


def _write_run(writer, steps):
    for step in steps:
        writer.write(step, "train", {"loss": 1.0 / step, "lr": 1e-3})
        if step % 2 == 0:
            writer.write(step, "eval", {"f1": step / 10})


def test_metric_writer_on_object_store_matches_local_and_resumes(gs, tmp_path, caplog):
    local = MetricWriter(tmp_path, tensorboard=False)
    logger = get_logger("jaxaudio.train")  # does not propagate: listen on it directly
    logger.addHandler(caplog.handler)
    try:
        remote = MetricWriter(gs + "/run", tensorboard=True)
    finally:
        logger.removeHandler(caplog.handler)
    assert "TensorBoard skipped" in caplog.text  # no google-cloud-storage here
    _write_run(local, range(1, 7))
    _write_run(remote, range(1, 7))
    remote.close()
    # the same file, byte for byte, as the local writer appends
    assert paths.read_text(gs + "/run/metrics.jsonl") == (tmp_path / "metrics.jsonl").read_text()
    assert [r["step"] for r in read_metrics(gs + "/run/metrics.jsonl", "eval")] == [2, 4, 6]

    # the killed run got to step 6; the checkpoint holds step 3: later lines go, new ones follow
    resumed = MetricWriter(gs + "/run", resume_step=3, tensorboard=False)
    assert [r["step"] for r in read_metrics(gs + "/run/metrics.jsonl")] == [1, 2, 2, 3]
    _write_run(resumed, [4, 5])
    records = read_metrics(gs + "/run/metrics.jsonl")
    assert [(r["step"], r["split"]) for r in records] == [
        (1, "train"), (2, "train"), (2, "eval"), (3, "train"), (4, "train"), (4, "eval"), (5, "train")]
    # a writer started without resume_step keeps what is there and adds to it
    again = MetricWriter(gs + "/run", tensorboard=False)
    again.write(6, "train", {"loss": 0.5})
    assert len(read_metrics(gs + "/run/metrics.jsonl")) == len(records) + 1


class _Batches:
    def __init__(self):
        self.drawn = 0

    def __iter__(self):
        return self

    def __next__(self):
        self.drawn += 1
        return {"x": np.float32(self.drawn)}

    def get_state(self):
        return {"drawn": self.drawn}

    def set_state(self, state):
        self.drawn = state["drawn"]


def test_train_loop_writes_its_metrics_to_an_object_store(gs, tmp_path, monkeypatch):
    """metrics.jsonl and metrics.json on gs://, across a resume. Checkpoints (orbax, which has
    its own gs:// support through tensorstore) are redirected to a local folder."""
    import jax

    from jaxaudio.train import loop
    from jaxaudio.train.state import TrainState

    monkeypatch.setattr(loop, "Checkpointer", lambda directory, **kw: Checkpointer(str(tmp_path / "ckpt"), **kw))

    @jax.jit
    def step(state, batch):
        return state.replace(step=state.step + 1, params={"w": state.params["w"] + batch["x"]}), {"loss": batch["x"]}

    def fresh():
        return TrainState(step=jnp.zeros((), jnp.int32), params={"w": jnp.zeros((), jnp.float32)}, model_state={},
                          opt_state={}, rng=jax.random.key(0))

    workdir = gs + "/run"
    config = loop.LoopConfig(total_steps=4, log_every=2, checkpoint_every=100)
    loop.train_loop(workdir=workdir, state=fresh(), train_step=step, batches=_Batches(), config=config)
    summary = json.loads(paths.read_text(workdir + "/metrics.json"))
    assert summary["steps"] == 4 and summary["train"] == {"loss": 3.5}  # mean over the window 3..4

    config = loop.LoopConfig(total_steps=6, log_every=2, checkpoint_every=100)
    state, _ = loop.train_loop(workdir=workdir, state=fresh(), train_step=step, batches=_Batches(), config=config)
    assert float(state.params["w"]) == 1 + 2 + 3 + 4 + 5 + 6
    assert [(r["step"], r["loss"]) for r in read_metrics(workdir + "/metrics.jsonl")] == [(2, 1.5), (4, 3.5), (6, 5.5)]
    summary = json.loads(paths.read_text(workdir + "/metrics.json"))
    assert summary["start_step"] == 4 and summary["steps"] == 6


def test_experiment_files_on_an_object_store(gs):
    from jaxaudio.train import stages

    run = stages.stage_dir(gs + "/run", "round1/pretrain")
    assert run == gs + "/run/round1/pretrain" and not stages.is_done(run)
    summary = stages.run_once(run, lambda: {"loss": 0.25, "steps": 10})
    assert stages.is_done(run) and stages.read_done(run) == {"loss": 0.25, "steps": 10}
    assert stages.run_once(run, lambda: pytest.fail("a finished stage runs again")) == summary
    stages.write_json(gs + "/run/metrics.json", {"b": 1, "a": [0.5]})
    assert json.loads(paths.read_text(gs + "/run/metrics.json")) == {"a": [0.5], "b": 1}
    other = gs + "/run/finetune1"
    stages.mark_done(other, {"psds1": np.float32(0.5)})  # numpy scalars are written as floats
    assert stages.is_done(other) and stages.read_done(other) == {"psds1": 0.5}


def test_a_torn_done_marker_on_an_object_store_is_named(gs):
    from jaxaudio.errors import CheckpointError
    from jaxaudio.train import stages

    paths.write_text_atomic(gs + "/run/finetune1/done.json", '{"psds1": ')
    with pytest.raises(CheckpointError, match=r"gs://bucket/run/finetune1/done.json: not valid JSON"):
        stages.read_done(gs + "/run/finetune1")


def test_save_run_config_on_an_object_store(gs):
    import ml_collections

    from jaxaudio.errors import CheckpointError
    from jaxaudio.train import run_record

    config = ml_collections.ConfigDict({"seed": 3, "model": {"dim": 8}})
    run_record.save(gs + "/run", "crnn", "tiny", config)
    record = json.loads(paths.read_text(gs + "/run/config.json"))
    assert record == {"exp": "crnn", "preset": "tiny", "config": {"seed": 3, "model": {"dim": 8}}}
    exp, preset, loaded = run_record.load(gs + "/run")
    assert (exp, preset, loaded.to_dict()) == ("crnn", "tiny", {"seed": 3, "model": {"dim": 8}})
    with pytest.raises(CheckpointError, match=r"gs://bucket/other/config.json: missing"):
        run_record.load(gs + "/other")
