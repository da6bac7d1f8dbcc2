"""Speech corpora for recognition: the AISHELL-1 layout, a generic manifest, and length buckets.

AISHELL-1 (openslr 33)::

    <root>/wav/{train,dev,test}/<speaker>/<utterance>.wav
    <root>/transcript/aishell_transcript_v0.8.txt     "<utterance> 而 对 楼市 成交 ..."

One transcript file serves every split, so a transcript line whose utterance is not in the split
asked for is normal; a wav with no transcript line (the released corpus has a few) is left out
and counted in one warning, and so are transcript lines with no wav in any split. A manifest
(``.jsonl`` with ``path``/``text``/``speaker`` keys, or ``.tsv`` with a ``path<TAB>text[<TAB>speaker]``
header) names its files itself, so a row whose file is missing is an error naming the manifest
and the line.

Length buckets: a batch of speech is padded to one of a few fixed frame counts, so a jitted step
compiles once per bucket rather than once per length; `bucket_batches` gives every host the same
order of the same batches (one seeded permutation), which multi-host data parallelism needs.
"""
from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from jaxaudio.errors import ConfigError, DataFormatError

_logger = logging.getLogger(__name__)

AISHELL_SPLITS = ("train", "dev", "test")
AISHELL_TRANSCRIPT = os.path.join("transcript", "aishell_transcript_v0.8.txt")
MANIFEST_SUFFIXES = (".jsonl", ".tsv")


@dataclass(frozen=True)
class Utterance:
    """One recording and its transcript (``text`` as written: AISHELL's keeps its word spaces)."""

    utt_id: str
    path: str
    text: str
    speaker: str = ""


def _read_text_lines(path: Path) -> list[str]:
    """The file's lines; a file that is not UTF-8 is refused with the line it fails on."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise DataFormatError(path, f"not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8 "
                                    f"(AISHELL's own transcript is)", row=line) from None


def read_aishell_transcript(path: os.PathLike | str) -> dict[str, str]:
    """``utterance id -> text`` from an AISHELL transcript file. An id with no words after it, or
    an id given twice, is an error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "AISHELL transcript not found (expected <root>/" + AISHELL_TRANSCRIPT + ")")
    texts: dict[str, str] = {}
    for number, line in enumerate(_read_text_lines(path), start=1):
        if not line.strip():
            continue
        utt_id, _, text = line.strip().partition(" ")
        if not text.strip():
            raise DataFormatError(path, f"utterance {utt_id!r} has an empty transcript", row=number)
        if utt_id in texts:
            raise DataFormatError(path, f"utterance {utt_id!r} is transcribed twice", row=number)
        texts[utt_id] = " ".join(text.split())
    return texts


def read_aishell(root: os.PathLike | str, split: str) -> list[Utterance]:
    """The utterances of one split (``train``, ``dev`` or ``test``), sorted by id; the speaker is
    the wav's folder. Wavs without a transcript line are left out, counted in one warning."""
    if split not in AISHELL_SPLITS:
        raise ConfigError(f"AISHELL split {split!r}: expected one of {', '.join(AISHELL_SPLITS)}")
    root = Path(root)
    folder = root / "wav" / split
    if not folder.is_dir():
        raise DataFormatError(folder, f"no such folder: an AISHELL-1 root holds wav/{{{','.join(AISHELL_SPLITS)}}}/"
                                      "<speaker>/<utterance>.wav")
    texts = read_aishell_transcript(root / AISHELL_TRANSCRIPT)
    utterances, untranscribed = [], []
    for wav in sorted(folder.glob("*/*.wav")):
        text = texts.get(wav.stem)
        if text is None:
            untranscribed.append(wav)
            continue
        utterances.append(Utterance(wav.stem, str(wav), text, wav.parent.name))
    if untranscribed:
        _logger.warning("%s: %d wav files have no line in %s and are left out (first: %s)", folder,
                        len(untranscribed), AISHELL_TRANSCRIPT, untranscribed[0].name)
    recorded = {wav.stem for wav in (root / "wav").glob("*/*/*.wav")}
    unrecorded = sorted(set(texts) - recorded)
    if unrecorded:
        _logger.warning("%s: %d transcript lines have no wav in any split (first: %s)", root / AISHELL_TRANSCRIPT,
                        len(unrecorded), unrecorded[0])
    if not utterances:
        raise DataFormatError(folder, f"no transcribed .wav files under <speaker>/ folders of split {split!r}")
    return utterances


def read_manifest(path: os.PathLike | str) -> list[Utterance]:
    """Utterances listed in a ``.jsonl`` or ``.tsv`` manifest, in its order; relative paths are
    taken from the manifest's folder. A missing file, an empty text or a bad row is an error
    naming the manifest and the line."""
    path = Path(path)
    if path.suffix not in MANIFEST_SUFFIXES:
        raise DataFormatError(path, f"manifest must be one of {', '.join(MANIFEST_SUFFIXES)}")
    if not path.is_file():
        raise DataFormatError(path, "manifest not found")
    lines = _read_text_lines(path)
    rows = _jsonl_rows(path, lines) if path.suffix == ".jsonl" else _tsv_rows(path, lines)
    utterances, seen = [], set()
    for number, row in rows:
        audio = row.get("path") or row.get("audio") or ""
        text = " ".join(str(row.get("text") or "").split())
        if not audio:
            raise DataFormatError(path, "row has no 'path'", row=number)
        if not text:
            raise DataFormatError(path, f"{audio}: empty transcript", row=number)
        full = audio if os.path.isabs(audio) else str(path.parent / audio)
        if not os.path.isfile(full):
            raise DataFormatError(path, f"audio file {full} not found", row=number)
        utt_id = str(row.get("id") or Path(audio).with_suffix("").as_posix())
        if utt_id in seen:
            raise DataFormatError(path, f"utterance {utt_id!r} listed twice", row=number)
        seen.add(utt_id)
        utterances.append(Utterance(utt_id, full, text, str(row.get("speaker") or "")))
    if not utterances:
        raise DataFormatError(path, "manifest lists no utterances")
    return utterances


def _jsonl_rows(path: Path, lines: Sequence[str]) -> Iterable[tuple[int, dict]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFormatError(path, f"not a JSON object ({err.msg})", row=number) from None
        if not isinstance(row, dict):
            raise DataFormatError(path, "not a JSON object", row=number)
        yield number, row


def _tsv_rows(path: Path, lines: Sequence[str]) -> Iterable[tuple[int, dict]]:
    reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(reader, None)
    if not header or "path" not in header or "text" not in header:
        raise DataFormatError(path, f"header must name 'path' and 'text' columns (tab-separated), got {header}",
                              row=1)
    for number, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise DataFormatError(path, f"{len(cells)} columns, the header has {len(header)}", row=number)
        yield number, dict(zip(header, cells))


@dataclass(frozen=True)
class Buckets:
    """Frame counts a batch is padded to (ascending) and the batch size of each."""

    frames: tuple[int, ...]
    batch_sizes: tuple[int, ...]

    def __post_init__(self):
        if not self.frames or list(self.frames) != sorted(set(self.frames)) or self.frames[0] <= 0:
            raise ConfigError(f"buckets.frames must be distinct positive ascending frame counts, got {self.frames}")
        if len(self.batch_sizes) != len(self.frames) or min(self.batch_sizes) <= 0:
            raise ConfigError(f"buckets.batch_sizes must give one positive size per bucket, got {self.batch_sizes} "
                              f"for {len(self.frames)} buckets")

    def index(self, frames: int) -> Optional[int]:
        """The smallest bucket that holds ``frames``; None when none does."""
        found = int(np.searchsorted(np.asarray(self.frames), frames, side="left"))
        return found if found < len(self.frames) else None


def bucket_batches(lengths: Sequence[int], buckets: Buckets, *, seed: int, names: Sequence[str] = (),
                   drop_remainder: bool = True, unit: str = "frames",
                   warn: bool = True) -> list[tuple[int, np.ndarray]]:
    """``(bucket, utterance indices)`` batches of one epoch, in an order fixed by ``seed``: every
    host computes the same list and takes its share of each batch. Utterances longer than the
    largest bucket are left out, counted in one warning that names the first (``names[i]``)."""
    rng = np.random.default_rng(seed)
    members: list[list[int]] = [[] for _ in buckets.frames]
    too_long = []
    for i, length in enumerate(lengths):
        b = buckets.index(int(length))
        if b is None:
            too_long.append(i)
        else:
            members[b].append(i)
    if too_long and warn:
        first = names[too_long[0]] if names else f"utterance {too_long[0]}"
        _logger.warning("%d utterances are longer than the largest bucket (%d %s) and are left out (first: %s, "
                        "%d %s); add a larger bucket to keep them", len(too_long), buckets.frames[-1], unit, first,
                        int(lengths[too_long[0]]), unit)
    batches = []
    for b, (idx, size) in enumerate(zip(members, buckets.batch_sizes)):
        idx = rng.permutation(np.asarray(idx, np.int64))
        stop = len(idx) - len(idx) % size if drop_remainder else len(idx)
        batches += [(b, idx[start:start + size]) for start in range(0, stop, size)]
    order = rng.permutation(len(batches))
    return [batches[k] for k in order]
