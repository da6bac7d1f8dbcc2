"""Data of a speech-recognition run (Paraformer, the autoregressive baseline): the corpus (a user's
AISHELL-1 folder or manifests, or the built-in espeak corpus generated on first use), its
tokenizer, global CMVN, the training buckets, the evaluation sources and the device front end.

``finalize`` writes what depends on the data into the config (the token list, a BPE model's
scores and the CMVN statistics), so a saved config.json rebuilds the model and its front end without the corpus
(predict, export).
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxaudio.audio import features
from jaxaudio.audio.cmvn import CMVNStats
from jaxaudio.data import speech
from jaxaudio.data.source import eval_batches
from jaxaudio.data.speech_batches import BucketBatches, SpeechSource, utterance_samples
from jaxaudio.data.synth import speech as speech_synth
from jaxaudio.data.synth.roots import user_or_builtin_root
from jaxaudio.data.bpe_tokenizer import BPETokenizer, bpe_text
from jaxaudio.data.tokenizer import SPECIALS, CharTokenizer, Tokenizer
from jaxaudio.errors import ConfigError
from jaxaudio.evaluators.asr import ASREvaluator
from jaxaudio.train.log import get_logger

LOG = get_logger("jaxaudio.data")
SPLITS = ("train", "dev", "test")


def data_config(preset: str):
    """The ``config.data`` section every ASR system shares."""
    import ml_collections

    d = ml_collections.ConfigDict()
    # AISHELL-1 (wav/{train,dev,test}/..., transcript/aishell_transcript_v0.8.txt) or a folder with
    # {train,dev,test}.jsonl / .tsv manifests; "" = the built-in corpus (synth_preset)
    d.data_dir = ""
    d.synth_preset = ""           # the paper preset is AISHELL-1's recipe: no built-in corpus by default
    d.synth_dir = "data/speech_synth_tiny"
    d.sample_rate = 16000
    # length buckets (seconds of audio) and the audio seconds per training batch (a batch of a
    # bucket holds batch_seconds / bucket seconds utterances: FunASR batches by length too)
    d.buckets_s = (2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 15.0)
    # FunASR batch_size 25000 by length [V]: read as 10-ms fbank frames, 250 s of audio per batch
    d.batch_seconds = 250.0
    d.max_tokens = 64             # padded transcript length (AISHELL-1: at most 44 characters)
    d.cache = False               # keep decoded waveforms in memory (the built-in corpus: ~200 MB)
    # "char": the characters of the training text, whitespace removed (AISHELL is scored so, and
    # FunASR's AISHELL-1 recipe uses characters); "bpe": SentencePiece BPE of bpe_vocab_size pieces
    # trained from the training text (English word boundaries kept, so WER is meaningful)
    d.tokenizer = "char"
    d.bpe_vocab_size = 0          # with tokenizer "bpe": pieces, the 4 specials included
    d.tokens = ()                 # the token list; () = trained from the training text (saved by finalize)
    d.token_scores = ()           # with tokenizer "bpe": the pieces' scores (saved by finalize)
    d.cmvn_mean = ()              # global CMVN over the training fbank (saved by finalize)
    d.cmvn_std = ()
    d.cmvn_utterances = 0         # 0 = every training utterance
    if preset in ("tiny", "smoke"):
        d.synth_preset, d.synth_dir, d.cache = "tiny", "data/speech_synth_tiny", True
        d.buckets_s, d.batch_seconds, d.max_tokens = (1.6, 2.0, 2.4, 2.8, 3.4, 4.2), 32.0, 40
    if preset == "smoke":
        d.synth_preset, d.synth_dir = "smoke", "data/speech_synth_smoke"
        # one bucket (the smoke corpus's longest is 2.52 s): one training program to compile, not two
        d.buckets_s, d.batch_seconds = (2.6,), 16.0
    return d


def data_root(data_cfg) -> str:
    return user_or_builtin_root(
        data_cfg, speech_synth.PRESETS, speech_synth.ensure_dataset, what="built-in speech corpus",
        needs_data="the paper preset trains on AISHELL-1: pass its folder with --data_dir=/path (wav/ and "
                   "transcript/ inside), or use the built-in corpus with --config.data.synth_preset=tiny",
        adapt=lambda synth: dataclasses.replace(synth, sample_rate=data_cfg.sample_rate))


def read_split(root: str, split: str) -> list[speech.Utterance]:
    """AISHELL-1 when its transcript is there, else ``<root>/<split>.jsonl`` or ``.tsv``."""
    if os.path.isfile(os.path.join(root, speech.AISHELL_TRANSCRIPT)):
        return speech.read_aishell(root, split)
    for suffix in speech.MANIFEST_SUFFIXES:
        path = os.path.join(root, split + suffix)
        if os.path.isfile(path):
            return speech.read_manifest(path)
    raise ConfigError(f"data.data_dir {root!r}: neither AISHELL-1 ({speech.AISHELL_TRANSCRIPT}) nor a "
                      f"{split}.jsonl / {split}.tsv manifest")


def frontend_config(config) -> features.FrontEndConfig:
    """FunASR's fbank (``features.FUNASR_16K``, 80 bins), the FFT path for training speed."""
    return dataclasses.replace(features.FUNASR_16K, sample_rate=config.data.sample_rate,
                               n_mels=config.model.encoder.input_dim, dft="fft")


def fbank_frames(samples, cfg: features.FrontEndConfig):
    """Frames Kaldi's snip-edges fbank gives for ``samples`` samples (0 below one window)."""
    return jnp.maximum(0, 1 + (samples - cfg.win_length) // cfg.hop_length)


def feature_frames(audio, audio_len, fe: features.FrontEndConfig):
    """``(fbank (B, T, F), mask (B, T))`` of padded waveforms, before CMVN."""
    feats = features.log_mel(audio, fe)
    mask = jnp.arange(feats.shape[1])[None, :] < fbank_frames(audio_len, fe)[:, None]
    return feats, mask


def cmvn_arrays(config):
    d = config.data
    if len(d.cmvn_mean) != config.model.encoder.input_dim:
        raise ConfigError(f"data.cmvn_mean holds {len(d.cmvn_mean)} values for {config.model.encoder.input_dim} "
                          "fbank bins; finalize computes it from the training set")
    return np.asarray(d.cmvn_mean, np.float32), np.asarray(d.cmvn_std, np.float32)


def device_features(config, audio, audio_len, *, fe=None):
    """Normalised fbank and its mask: what the encoder reads (training, evaluation, predict)."""
    fe = fe or frontend_config(config)
    feats, mask = feature_frames(audio, audio_len, fe)
    mean, std = cmvn_arrays(config)
    return (feats - mean) / std * mask[..., None], mask


def make_tokenizer(data_cfg, training_texts: Callable[[], list[str]]) -> Tokenizer:
    """``data.tokenizer``'s tokenizer: from ``data.tokens`` (and ``token_scores``) once finalize
    saved them, else trained from ``training_texts()``."""
    kind, tokens = data_cfg.tokenizer, tuple(data_cfg.tokens)
    if kind == "char":
        return CharTokenizer(tokens) if tokens else CharTokenizer.train(training_texts())
    if kind == "bpe":
        if tokens:
            return BPETokenizer(tokens, tuple(data_cfg.token_scores))
        if int(data_cfg.bpe_vocab_size) <= len(SPECIALS):
            raise ConfigError(f"data.bpe_vocab_size={data_cfg.bpe_vocab_size}: tokenizer 'bpe' needs more "
                              f"pieces than the {len(SPECIALS)} specials (e.g. --config.data.bpe_vocab_size=300)")
        return BPETokenizer.train(training_texts(), vocab_size=int(data_cfg.bpe_vocab_size))
    raise ConfigError(f"data.tokenizer={kind!r}: expected 'char' or 'bpe'")


class ASRData:
    """Utterances, tokenizer and sources of one run (read when first needed)."""

    def __init__(self, config):
        self.config = config
        self._utterances, self._sources = {}, {}
        self._root = None
        self._tokenizer = None

    @property
    def root(self) -> str:
        if self._root is None:
            self._root = data_root(self.config.data)
        return self._root

    def utterances(self, split: str) -> list[speech.Utterance]:
        if split not in SPLITS:
            raise ConfigError(f"speech split {split!r}: expected one of {', '.join(SPLITS)}")
        if split not in self._utterances:
            self._utterances[split] = read_split(self.root, split)
            LOG.info("%s: %d utterances (%s)", split, len(self._utterances[split]), self.root)
        return self._utterances[split]

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = make_tokenizer(self.config.data, lambda: [u.text for u in self.utterances("train")])
        return self._tokenizer

    def source(self, split: str) -> SpeechSource:
        """Every utterance of ``split`` padded to the split's longest (a multiple of 0.1 s)."""
        if split not in self._sources:
            d = self.config.data
            utts = self.utterances(split)
            lengths = utterance_samples(utts, d.sample_rate, desc=f"scan {split}")
            tenth = d.sample_rate // 10
            samples = int(math.ceil(lengths.max() / tenth) * tenth)
            tok = self.tokenizer
            self._sources[split] = SpeechSource(utts, tok.encode, sample_rate=d.sample_rate, samples=samples,
                                                max_tokens=d.max_tokens, cache=bool(d.cache))
            self._sources[split].lengths = lengths
            tok.report_unknown(f"{split} transcripts")
            tok.unknown.clear()
        return self._sources[split]

    def buckets(self) -> speech.Buckets:
        d = self.config.data
        count = jax.device_count()   # a global batch splits over every device of the data axis
        sizes = tuple(max(count, int(d.batch_seconds / s) // count * count) for s in d.buckets_s)
        return speech.Buckets(tuple(int(round(s * d.sample_rate)) for s in d.buckets_s), sizes)

    def train_batches(self, seed: int) -> BucketBatches:
        source = self.source("train")
        return BucketBatches(source, source.lengths, self.buckets(), seed=seed, shard_index=jax.process_index(),
                             shard_count=jax.process_count(), speeds=tuple(self.config.speed_perturb))


def compute_cmvn(config, data: ASRData) -> CMVNStats:
    """Global CMVN over the training set's fbank (or its first ``cmvn_utterances``), once."""
    fe = frontend_config(config)
    source = data.source("train")
    limit = int(config.data.cmvn_utterances) or len(source)
    step = jax.jit(lambda audio, n: feature_frames(audio, n, fe))
    stats = CMVNStats(fe.n_mels)
    batch = 16
    seen = 0
    for host in eval_batches(source, batch):
        feats, mask = step(host["audio"], host["audio_len"])
        mask = np.asarray(mask) & np.asarray(host["valid"])[:, None]
        stats.accumulate(np.asarray(feats), mask)
        seen += int(np.sum(host["valid"]))
        if seen >= limit:
            break
    LOG.info("global CMVN over %d training utterances (%d frames)", min(seen, limit), int(stats.count))
    return stats


def finalize(config) -> None:
    """The token list and the CMVN statistics into the config (config.json then rebuilds the model)."""
    data = ASRData(config)
    if not config.data.tokens:
        config.data.tokens = tuple(data.tokenizer.tokens)
        if isinstance(data.tokenizer, BPETokenizer):
            config.data.token_scores = data.tokenizer.scores
    if not config.data.cmvn_mean:
        stats = compute_cmvn(config, data)
        config.data.cmvn_mean = tuple(float(v) for v in stats.mean)
        config.data.cmvn_std = tuple(float(v) for v in stats.std)


def evaluators(config) -> dict:
    """CER on the dev voices (validation, best checkpoint) and on the test voices (and WER with BPE)."""
    data = ASRData(config)
    words = bpe_text if config.data.tokenizer == "bpe" else None   # WER only where words are kept
    return {split: ASREvaluator(lambda split=split: data.source(split), int(config.batch.eval),
                                lambda ids: data.tokenizer.decode(ids), word_text=words)
            for split in ("dev", "test")}
