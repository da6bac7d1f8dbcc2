"""jaxaudio.train.log: reading metrics.jsonl (torn last line vs corrupt file) and progress off a terminal."""
import io
import json
import re
import sys

import pytest

from jaxaudio.errors import DataFormatError
from jaxaudio.train import log
from jaxaudio.train.log import MetricWriter, progress, read_metrics
from jaxaudio.utils import progress as progress_mod


def _write_lines(path, lines, end="\n"):
    path.write_text("\n".join(lines) + end)
    return path


RECORDS = [{"step": 1, "split": "train", "loss": 2.0}, {"step": 2, "split": "eval", "psds": 0.25},
           {"step": 3, "split": "train", "loss": 1.5}]


def test_read_metrics_reads_every_record_and_filters_a_split(tmp_path, recwarn):
    path = _write_lines(tmp_path / "metrics.jsonl", [json.dumps(RECORDS[0]), "", json.dumps(RECORDS[1]),
                                                     json.dumps(RECORDS[2])])
    assert read_metrics(path) == RECORDS
    assert read_metrics(path, split="train") == [RECORDS[0], RECORDS[2]]
    assert read_metrics(str(path), split="eval") == [RECORDS[1]]
    assert not recwarn.list


def test_read_metrics_skips_a_torn_last_line_with_a_warning_naming_file_and_line(tmp_path):
    torn = json.dumps(RECORDS[2])[:17]  # a kill mid-write: no closing brace, no newline
    path = _write_lines(tmp_path / "metrics.jsonl", [json.dumps(RECORDS[0]), json.dumps(RECORDS[1]), torn], end="")
    with pytest.warns(UserWarning, match=r"metrics\.jsonl: line 3 is not valid JSON") as caught:
        assert read_metrics(path) == RECORDS[:2]
    assert str(path) in str(caught[0].message)


def test_read_metrics_raises_on_an_invalid_line_before_the_last(tmp_path):
    path = _write_lines(tmp_path / "metrics.jsonl", [json.dumps(RECORDS[0]), '{"step": 2, "spl',
                                                     json.dumps(RECORDS[2])])
    with pytest.raises(DataFormatError, match=r"line 2 is not valid JSON") as err:
        read_metrics(path)
    assert err.value.row == 2 and err.value.path == str(path)
    assert str(path) in str(err.value)


def test_read_metrics_names_a_line_that_is_not_utf8(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1}\n\xff\xfe garbage\n{"step": 3}\n')
    with pytest.raises(DataFormatError, match="line 2 is not valid JSON: not UTF-8"):
        read_metrics(path)


def test_metric_writer_cuts_a_torn_tail_before_appending(tmp_path):
    path = _write_lines(tmp_path / "metrics.jsonl", [json.dumps(RECORDS[0]), '{"step": 2, "spl'], end="")
    with pytest.warns(UserWarning, match="line 2"):
        writer = MetricWriter(tmp_path, tensorboard=False)
    writer.write(5, "train", {"loss": 0.5})
    writer.close()
    assert read_metrics(path) == [RECORDS[0], {"step": 5, "split": "train", "loss": 0.5}]


# ---------------------------------------------------------------------------------------- progress


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_train_log_progress_is_the_utils_helper():
    assert log.progress is progress_mod.progress


def test_off_a_terminal_100_updates_write_about_ten_plain_lines(monkeypatch):
    monkeypatch.delenv("JAXAUDIO_PROGRESS", raising=False)
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)  # like `run.py ... > log 2>&1`
    with progress(100, desc="crnn") as bar:
        for _ in range(100):
            bar.update(1)
    out = err.getvalue()
    assert "\r" not in out
    lines = out.splitlines()
    assert 9 <= len(lines) <= 11
    assert lines[0].startswith("crnn: 10/100 (10%) ") and ", eta " in lines[0]
    assert lines[-1].startswith("crnn: 100/100 (100%) ") and ", took " in lines[-1]
    for line in lines:
        assert re.fullmatch(r"crnn: \d+/100 \(\d+%\) [0-9.e+-]+ (it/s|s/it), (eta|took) \S+", line), line


def test_lines_carry_the_postfix_and_resume_from_initial():
    out = io.StringIO()
    bar = progress(1200, 600, "pmam", file=out)
    assert (bar.n, bar.total, bar.disable) == (600, 1200, False)
    bar.set_postfix({"loss": "0.31"}, refresh=False)
    bar.update(120)
    bar.close()
    assert len(out.getvalue().splitlines()) == 1  # close() adds none: nothing counted since
    line = out.getvalue().strip()
    assert line.startswith("pmam: 720/1200 (60%) ") and line.endswith(", loss=0.31")


def test_every_and_a_line_where_an_early_stop_left_off():
    out = io.StringIO()
    bar = progress(50, desc="x", every=20, file=out)
    for _ in range(45):
        bar.update()
    assert [line.split(" ")[1] for line in out.getvalue().splitlines()] == ["20/50", "40/50"]
    bar.close()
    bar.close()
    assert [line.split(" ")[1] for line in out.getvalue().splitlines()] == ["20/50", "40/50", "45/50"]


def test_without_a_total_lines_count_items():
    out = io.StringIO()
    bar = progress(None, desc="clips", every=3, unit="clip", file=out)
    bar.update(7)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and re.fullmatch(r"clips: 7 [0-9.e+-]+ (clip/s|s/clip), elapsed \d+s", lines[0]), lines


@pytest.mark.parametrize("force, env", [(False, None), (None, "0"), (None, "false")])
def test_force_false_or_env_zero_shows_nothing(monkeypatch, force, env):
    if env is None:
        monkeypatch.delenv("JAXAUDIO_PROGRESS", raising=False)
    else:
        monkeypatch.setenv("JAXAUDIO_PROGRESS", env)
    for file in (io.StringIO(), _Tty()):
        bar = progress(10, desc="t", force=force, file=file)
        assert bar.disable
        bar.update(10)
        bar.close()
        assert file.getvalue() == ""


def test_force_true_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("JAXAUDIO_PROGRESS", "0")
    out = io.StringIO()
    bar = progress(10, desc="t", force=True, file=out)
    bar.update(10)
    bar.close()
    assert out.getvalue().startswith("t: 10/10 (100%)")


def test_on_a_terminal_a_tqdm_bar(monkeypatch):
    from tqdm.auto import tqdm

    monkeypatch.delenv("JAXAUDIO_PROGRESS", raising=False)
    tty = _Tty()
    bar = progress(10, 2, "t", file=tty)
    assert isinstance(bar, tqdm) and not bar.disable and (bar.n, bar.total) == (2, 10)
    bar.update(3)
    bar.set_postfix({"loss": "1"}, refresh=False)
    bar.close()
    assert "\r" in tty.getvalue() and "5/10" in tty.getvalue()


def test_durations_read_like_a_clock():
    assert [progress_mod._fmt_duration(s) for s in (4.4, 59.6, 486, 3600 + 62 * 60)] == ["4s", "1m00s", "8m06s",
                                                                                         "2h02m"]
