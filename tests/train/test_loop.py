"""train_loop: logged numbers, summary, best checkpoint, NaN step, resume, SIGTERM, logging.

The step is a toy whose metrics are known by hand: batch i (1-based) carries x = i, the
"loss" is x, and the parameter accumulates the sum of x. So the mean loss logged for a
window of steps a..b is (a + b) / 2 and the parameter after n steps is n (n + 1) / 2.
"""
from __future__ import annotations

import json
import os
import shutil
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxaudio.errors import ConfigError, NonFiniteLossError
from jaxaudio.train.checkpoint import Checkpointer
from jaxaudio.train.log import MetricWriter, get_logger, read_metrics
from jaxaudio.train.loop import LoopConfig, Preempted, train_loop
from jaxaudio.train.state import TrainState


class CountingBatches:
    """Batch i (1-based) is {"x": i}, or NaN from ``nan_from`` on; state = batches drawn."""

    def __init__(self, nan_from=None):
        self.drawn = 0
        self.nan_from = nan_from

    def __iter__(self):
        return self

    def __next__(self):
        self.drawn += 1
        value = np.nan if self.nan_from is not None and self.drawn >= self.nan_from else self.drawn
        return {"x": np.float32(value)}

    def get_state(self):
        return {"drawn": self.drawn}

    def set_state(self, state):
        self.drawn = state["drawn"]


def _initial_state() -> TrainState:
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params={"w": jnp.zeros((), jnp.float32)},
        model_state={},
        opt_state={"count": jnp.zeros((), jnp.int32)},
        rng=jax.random.key(0),
    )


@jax.jit
def _step(state, batch):
    x = batch["x"]
    new = state.replace(
        step=state.step + 1,
        params={"w": state.params["w"] + x},
        opt_state={"count": state.opt_state["count"] + 1},
    )
    return new, {"loss": x, "double": 2 * x}


def _records(workdir, split):
    return [{k: v for k, v in r.items() if k != "split"}
            for r in read_metrics(os.path.join(workdir, "metrics.jsonl"), split)]


def test_logged_means_summary_and_final_checkpoint(tmp_path):
    config = LoopConfig(total_steps=7, log_every=3, checkpoint_every=100)
    state, summary = train_loop(
        workdir=tmp_path, state=_initial_state(), train_step=_step, batches=CountingBatches(), config=config
    )
    assert float(state.params["w"]) == 7 * 8 / 2
    # Windows 1..3, 4..6 and the final partial window 7..7.
    assert _records(tmp_path, "train") == [
        {"step": 3, "loss": 2.0, "double": 4.0},
        {"step": 6, "loss": 5.0, "double": 10.0},
        {"step": 7, "loss": 7.0, "double": 14.0},
    ]
    with open(tmp_path / "metrics.json") as f:
        on_disk = json.load(f)
    assert on_disk["steps"] == 7 and on_disk["start_step"] == 0
    assert on_disk["train"] == {"loss": 7.0, "double": 14.0}
    assert on_disk["eval_last"] is None and on_disk["latest_checkpoint_step"] == 7
    assert on_disk["wall_time_s"] > 0 and on_disk["steps_per_s"] > 0
    assert summary["train"] == on_disk["train"]
    assert os.listdir(tmp_path / "tb")  # TensorBoard event file written


def test_eval_is_logged_and_best_checkpoint_is_kept(tmp_path):
    accuracy = {2: 0.5, 4: 0.9, 6: 0.7}

    def eval_fn(state, step):
        assert int(state.step) == step
        return {"acc": accuracy[step], "w": float(state.params["w"])}

    config = LoopConfig(total_steps=7, log_every=10, eval_every=2, checkpoint_every=100, keep=1, best_metric="acc")
    _, summary = train_loop(
        workdir=tmp_path, state=_initial_state(), train_step=_step, batches=CountingBatches(), config=config,
        eval_fn=eval_fn,
    )
    assert _records(tmp_path, "eval") == [
        {"step": 2, "acc": 0.5, "w": 3.0},
        {"step": 4, "acc": 0.9, "w": 10.0},
        {"step": 6, "acc": 0.7, "w": 21.0},
    ]
    assert summary["eval_best"] == {"step": 4, "acc": 0.9, "w": 10.0}
    assert summary["eval_last"] == {"step": 6, "acc": 0.7, "w": 21.0}
    assert summary["best_checkpoint_step"] == 4
    with Checkpointer(tmp_path / "checkpoints", keep=1, best_metric="acc") as ckpt:
        assert ckpt.all_steps() == [4, 7]  # the best plus the latest
        restored, data_state = ckpt.restore(jax.eval_shape(_initial_state), step=4)
    assert float(restored.params["w"]) == 10.0 and data_state == {"drawn": 4}


def test_nan_loss_raises_with_its_step_and_is_never_checkpointed(tmp_path):
    config = LoopConfig(total_steps=20, log_every=4, checkpoint_every=2)
    with pytest.raises(NonFiniteLossError) as info:
        train_loop(
            workdir=tmp_path, state=_initial_state(), train_step=_step, batches=CountingBatches(nan_from=5),
            config=config,
        )
    assert info.value.step == 5 and np.isnan(info.value.value)
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        assert ckpt.latest_step() == 4


def test_resume_continues_the_same_run(tmp_path):
    straight = tmp_path / "straight"
    _, _ = train_loop(
        workdir=straight, state=_initial_state(), train_step=_step, batches=CountingBatches(),
        config=LoopConfig(total_steps=9, log_every=2, checkpoint_every=3),
    )
    split = tmp_path / "split"
    config = LoopConfig(total_steps=6, log_every=2, checkpoint_every=4)
    train_loop(workdir=split, state=_initial_state(), train_step=_step, batches=CountingBatches(), config=config)
    # Lose the last checkpoint, as a kill before it committed would: the run goes back to
    # step 4, and the records it had logged after step 4 are dropped and written again.
    shutil.rmtree(split / "checkpoints" / "6")
    # A fresh process would build a fresh state and iterator; the loop restores both.
    batches = CountingBatches()
    state, summary = train_loop(
        workdir=split, state=_initial_state(), train_step=_step, batches=batches,
        config=LoopConfig(total_steps=9, log_every=2, checkpoint_every=4),
    )
    assert summary["start_step"] == 4 and summary["steps"] == 9
    assert float(state.params["w"]) == 9 * 10 / 2 and batches.drawn == 9
    assert _records(split, "train") == _records(straight, "train")


def test_sigterm_saves_the_current_step_and_raises_preempted(tmp_path):
    def step_then_sigterm(state, batch):
        new, metrics = _step(state, batch)
        if batch["x"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return new, metrics

    previous = signal.getsignal(signal.SIGTERM)
    config = LoopConfig(total_steps=10, log_every=2, checkpoint_every=100)
    with pytest.raises(Preempted) as info:
        train_loop(
            workdir=tmp_path, state=_initial_state(), train_step=step_then_sigterm, batches=CountingBatches(),
            config=config,
        )
    assert info.value.step == 3 and info.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is previous  # handler restored
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        assert ckpt.all_steps() == [3]
        state, data_state = ckpt.restore(jax.eval_shape(_initial_state))
    assert float(state.params["w"]) == 6.0 and data_state == {"drawn": 3}
    assert not (tmp_path / "metrics.json").exists()


def test_metric_writer_drops_records_after_the_resume_step(tmp_path):
    writer = MetricWriter(tmp_path, tensorboard=False)
    for step in (2, 4, 6):
        writer.write(step, "train", {"loss": step})
    writer.write(4, "eval", {"acc": float("nan")})
    writer.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 8, "spl')  # torn by a kill mid-write
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [2, 4, 6, 4]
    MetricWriter(tmp_path, resume_step=4, tensorboard=False).close()
    assert read_metrics(tmp_path / "metrics.jsonl") == [
        {"step": 2, "split": "train", "loss": 2.0},
        {"step": 4, "split": "train", "loss": 4.0},
        {"step": 4, "split": "eval", "acc": "nan"},
    ]


def test_bad_config_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="train.log_every"):
        train_loop(
            workdir=tmp_path, state=_initial_state(), train_step=_step, batches=CountingBatches(),
            config=LoopConfig(total_steps=3, log_every=0),
        )


def test_logger_prefixes_process_and_time(capsys):
    get_logger("jaxaudio.test").info("hello")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.endswith("[p0] INFO jaxaudio.test: hello")
    assert line[2] == ":" and line[5] == ":"  # HH:MM:SS time stamp


def test_progress_off_terminal_writes_lines_unless_disabled(monkeypatch):
    from jaxaudio.train.log import progress

    monkeypatch.delenv("JAXAUDIO_PROGRESS", raising=False)
    bar = progress(10, 2, "t")  # pytest's stderr is not a terminal: plain lines, shown by default
    assert not bar.disable and bar.n == 2 and bar.total == 10
    bar.close()
    assert progress(10, 2, "t", force=False).disable
    bar = progress(10, 2, "t", force=True)
    assert not bar.disable and bar.n == 2 and bar.total == 10
    bar.close()
    monkeypatch.setenv("JAXAUDIO_PROGRESS", "0")
    assert progress(10, 0, "t").disable
    monkeypatch.setenv("JAXAUDIO_PROGRESS", "1")
    assert not progress(10, 0, "t").disable
