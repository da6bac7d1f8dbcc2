"""Acceptance: each bad input raises our error type, naming the file (and row) and the problem."""
import numpy as np
import pytest

from jaxaudio.audio.io import read_audio, write_audio
from jaxaudio.data.sed.desed import SubsetSpec, load_subset, read_strong_tsv, read_weak_tsv
from jaxaudio.errors import AudioFileError, DataFormatError

STRONG_HEADER = "filename\tonset\toffset\tevent_label\n"


def test_corrupt_audio(tmp_path):
    path = tmp_path / "garbage.wav"
    path.write_bytes(b"this is not a RIFF file at all" * 20)
    with pytest.raises(AudioFileError) as err:
        read_audio(path)
    assert err.value.path == str(path)
    assert "garbage.wav" in str(err.value) and "corrupt or unreadable" in str(err.value)


def test_empty_audio(tmp_path):
    path = tmp_path / "empty.wav"
    write_audio(path, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioFileError) as err:
        read_audio(path)
    assert "empty.wav" in str(err.value) and "empty (0 samples)" in str(err.value)


def test_tsv_with_wrong_columns(tmp_path):
    path = tmp_path / "labels.tsv"
    path.write_text("filename\tstart\tend\tlabel\na.wav\t0\t1\tDog\n")
    with pytest.raises(DataFormatError) as err:
        read_strong_tsv(path)
    message = str(err.value)
    assert err.value.row == 1 and "labels.tsv, row 1" in message
    assert "wrong columns" in message
    assert "['filename', 'onset', 'offset', 'event_label']" in message  # expected
    assert "['filename', 'start', 'end', 'label']" in message  # found


def test_tsv_that_is_not_utf8(tmp_path):
    """A Latin-1 tsv (e.g. exported by an old spreadsheet) names the line and byte offset."""
    path = tmp_path / "weak.tsv"
    body = "filename\tevent_labels\na.wav\tDog\ncaf\u00e9.wav\tCat\n"
    path.write_bytes(body.encode("latin-1"))
    with pytest.raises(DataFormatError) as err:
        read_weak_tsv(path)
    message = str(err.value)
    offset = body.encode("latin-1").index(b"\xe9")
    assert err.value.row == 3 and "weak.tsv, row 3" in message
    assert "not UTF-8" in message and f"byte offset {offset}" in message and "0xe9" in message


def test_unknown_class(tmp_path):
    path = tmp_path / "weak.tsv"
    path.write_text("filename\tevent_labels\na.wav\tDog\nb.wav\tDog,Unicorn\n")
    with pytest.raises(DataFormatError) as err:
        read_weak_tsv(path)
    message = str(err.value)
    assert err.value.row == 3 and "weak.tsv, row 3" in message
    assert "unknown class 'Unicorn'" in message and "Vacuum_cleaner" in message


def test_onset_not_before_offset(tmp_path):
    path = tmp_path / "strong.tsv"
    path.write_text(STRONG_HEADER + "a.wav\t0\t1\tDog\na.wav\t4.0\t4.0\tCat\n")
    with pytest.raises(DataFormatError) as err:
        read_strong_tsv(path)
    message = str(err.value)
    assert err.value.row == 3 and "strong.tsv, row 3" in message
    assert "onset 4.0 must be before offset 4.0" in message


def test_referenced_file_does_not_exist(tmp_path):
    write_audio(tmp_path / "audio/a.wav", np.zeros(16, np.float32), 16000)
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta/strong.tsv").write_text(
        STRONG_HEADER + "a.wav\t0\t1\tDog\nghost.wav\t0\t1\tCat\n"
    )
    spec = SubsetSpec("s", "audio", strong_tsv="meta/strong.tsv")
    with pytest.raises(DataFormatError) as err:
        load_subset(tmp_path, spec)
    message = str(err.value)
    assert err.value.row == 3 and "strong.tsv, row 3" in message
    assert str(tmp_path / "audio/ghost.wav") in message and "does not exist" in message


def test_sample_rate_that_cannot_be_resampled(tmp_path):
    path = tmp_path / "odd_rate.wav"
    write_audio(path, np.zeros(441, np.float32), 44101)
    with pytest.raises(AudioFileError) as err:
        read_audio(path, sample_rate=16000)
    message = str(err.value)
    assert "odd_rate.wav" in message and "cannot resample 44101 Hz to 16000 Hz" in message
    with pytest.raises(AudioFileError) as err:
        read_audio(path, sample_rate=0)
    assert "odd_rate.wav" in str(err.value) and "positive integer" in str(err.value)
