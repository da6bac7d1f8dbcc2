"""Speech recognition: decoded token ids per utterance -> corpus CER (the primary metric, lower
is better), its substitution / deletion / insertion parts, CER per speaker, a per-speaker plot
and every utterance's transcript next to its reference.

A system's ``predict`` returns ``{"tokens": (rows, max_tokens) int, "token_len": (rows,)}``;
``decode(ids) -> text`` turns a row into text (the run's tokenizer). The references are the
source's ``texts`` (in its order), so padding rows need none.

WER is reported too when the tokenizer keeps word boundaries (BPE: ``word_text`` is the text
rule it reads by, so a reference is split where the hypothesis can be); a character tokenizer
drops all spaces, and its WER would count whole utterances.
"""
from __future__ import annotations

import csv
import dataclasses
import os
from collections import defaultdict
from typing import Callable, Optional, Sequence

import numpy as np

from jaxaudio.evaluators.base import collect_rows
from jaxaudio.metrics.asr import cer_counts, char_tokens, edit_counts, wer_counts

TOKENS, TOKEN_LEN = "tokens", "token_len"


def hypotheses(outputs: dict, decode: Callable[[Sequence[int]], str]) -> list[str]:
    tokens = np.asarray(outputs[TOKENS]).astype(np.int64)
    lengths = np.asarray(outputs[TOKEN_LEN]).astype(np.int64)
    return [decode(row[:n].tolist()) for row, n in zip(tokens, lengths)]


def score_texts(refs: Sequence[str], hyps: Sequence[str], speakers: Sequence[str] = ()) -> dict:
    """CER and its parts over the corpus, and CER per speaker (``cer/<speaker>``)."""
    total = cer_counts(list(refs), list(hyps))
    n = max(total.ref_len, 1)
    out = {"cer": total.rate(), "sub": total.substitutions / n, "del": total.deletions / n,
           "ins": total.insertions / n, "sentence_error_rate": float(np.mean([char_tokens(r) != char_tokens(h)
                                                                               for r, h in zip(refs, hyps)]))}
    if speakers:
        per = defaultdict(list)
        for r, h, s in zip(refs, hyps, speakers):
            per[s].append((r, h))
        for s, pairs in sorted(per.items()):
            out[f"cer/{s}"] = cer_counts([r for r, _ in pairs], [h for _, h in pairs]).rate()
    return out


def plot_speaker_cer(metrics: dict, path: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    speakers = sorted(k[4:] for k in metrics if k.startswith("cer/"))
    if not speakers:
        return
    values = [100 * metrics[f"cer/{s}"] for s in speakers]
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(speakers) + 2), 3.5))
    ax.bar(range(len(speakers)), values, color="tab:blue")
    ax.axhline(100 * metrics["cer"], color="tab:red", linestyle="--", label=f"all: {100 * metrics['cer']:.1f}%")
    ax.set_xticks(range(len(speakers)), speakers, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("CER (%)")
    ax.set_title(title or "CER per speaker")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@dataclasses.dataclass
class ASREvaluator:
    """source_fn: builds the Source (``texts``, ``files``, ``utterances`` with speakers), called when
    first needed; decode: token ids -> text. ``mode`` "min": a lower CER is better (the trainer's
    best-checkpoint choice reads it)."""

    source_fn: Callable[[], object]
    batch_size: int
    decode: Callable[[Sequence[int]], str]
    primary_metric: str = "cer"
    mode: str = "min"
    word_text: Optional[Callable[[str], str]] = None   # set: WER of word_text(reference) vs the hypothesis
    _source: object = dataclasses.field(default=None, init=False, repr=False)

    @property
    def source(self):
        if self._source is None:
            self._source = self.source_fn()
        return self._source

    def collect(self, predict) -> dict:
        return {key: collect_rows(self.source, predict, self.batch_size, key) for key in (TOKENS, TOKEN_LEN)}

    def run(self, predict, *, plot_dir: Optional[str] = None, plot_prefix: str = "", title: str = "") -> dict:
        return self.score_arrays(self.collect(predict), plot_dir=plot_dir, plot_prefix=plot_prefix, title=title)

    def score_arrays(self, outputs: dict, item_ids: Optional[Sequence[int]] = None, *,
                     plot_dir: Optional[str] = None, plot_prefix: str = "", title: str = "") -> dict:
        """Metrics of outputs already computed; ``item_ids``: the source positions they belong to."""
        ids = np.arange(len(self.source)) if item_ids is None else np.asarray(item_ids, np.int64)
        utterances = [self.source.utterances[i] for i in ids]
        refs = [u.text for u in utterances]
        hyps = hypotheses(outputs, self.decode)
        speakers = [u.speaker for u in utterances] if all(u.speaker for u in utterances) else ()
        metrics = score_texts(refs, hyps, speakers)
        if self.word_text is not None:
            metrics["wer"] = wer_counts([self.word_text(r) for r in refs], hyps).rate()
        if plot_dir:
            prefix = f"{plot_prefix}_" if plot_prefix else ""
            plot_speaker_cer(metrics, os.path.join(plot_dir, f"{prefix}cer_per_speaker.png"), title=title)
            with open(os.path.join(plot_dir, f"{prefix}transcripts.tsv"), "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f, delimiter="\t")
                writer.writerow(["path", "speaker", "reference", "hypothesis", "char_errors", "ref_chars"])
                for u, r, h in zip(utterances, refs, hyps):
                    e = edit_counts(char_tokens(r), char_tokens(h))
                    writer.writerow([u.path, u.speaker, r, h, e.errors, e.ref_len])
        return metrics
