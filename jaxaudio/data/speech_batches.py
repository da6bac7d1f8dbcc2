"""Utterances -> fixed-shape batches of waveforms and token ids: a Source for evaluation, length
buckets for training.

Why waveforms and not features: the front end (Kaldi fbank, CMVN) runs on the device inside the
jitted step, as every other system's does, so training, evaluation, predict and the exported
model compute the same features from the same samples.

Why buckets: utterances range from one second to several; padding all to the longest would
spend most of the compute on zeros. ``BucketBatches`` pads each batch to the smallest of a few
lengths that holds it, with a batch size per bucket, so the step compiles once per bucket.
Every process computes the same epoch order (``speech.bucket_batches``, seeded per epoch) and
takes its own rows of each batch, so multi-host data parallelism sees disjoint shards of the same
batches; ``get_state`` / ``set_state`` (epoch, position) resume exactly.

Speed perturbation (``speeds``, e.g. FunASR's 0.9 / 1.0 / 1.1) draws each utterance's factor per
epoch as a pure function of (seed, epoch, index) (``jaxaudio.audio.speed_perturb.choose_speed``),
so every host and a resumed run perturb alike; the bucket of an utterance is chosen by its
perturbed length.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import soundfile as sf

from jaxaudio.audio.io import read_audio
from jaxaudio.audio.speed_perturb import choose_speed, perturbed_length, speed_perturb
from jaxaudio.data.source import padding_from_spec
from jaxaudio.data.speech import Buckets, Utterance, bucket_batches
from jaxaudio.errors import AudioFileError, CheckpointError, ConfigError
from jaxaudio.utils.progress import progress as progress_reporter

BATCH_KEYS = ("audio", "audio_len", "tokens", "token_len")


def utterance_samples(utterances: Sequence[Utterance], sample_rate: int, *, desc: str = "") -> np.ndarray:
    """Samples of each utterance at ``sample_rate``, from the file headers (nothing is decoded)."""
    out = np.zeros(len(utterances), np.int64)
    bar = progress_reporter(len(utterances), desc=desc or "scan audio", unit="file",
                            force=None if len(utterances) > 2000 else False)
    for i, u in enumerate(utterances):
        try:
            info = sf.info(u.path)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise AudioFileError(u.path, f"cannot decode audio header ({err})") from err
        out[i] = int(round(info.frames * sample_rate / info.samplerate))
        bar.update()
    bar.close()
    return out


class SpeechSource:
    """Utterances as items ``{audio (samples,), audio_len, tokens (max_tokens,), token_len, index}``.

    ``encode(text) -> ids``; ``samples``: the padded length (longer audio is an error naming the
    file), ``max_tokens``: the padded token count (a longer transcript is an error naming the
    utterance). Token id 0 pads. ``cache``: keep decoded waveforms (a small corpus).
    """

    def __init__(self, utterances: Sequence[Utterance], encode: Callable[[str], list], *, sample_rate: int,
                 samples: int, max_tokens: int, cache: bool = False):
        self.utterances = list(utterances)
        self.sample_rate, self.samples, self.max_tokens = int(sample_rate), int(samples), int(max_tokens)
        self.tokens = [np.asarray(encode(u.text), np.int32) for u in self.utterances]
        for u, ids in zip(self.utterances, self.tokens):
            if len(ids) > self.max_tokens:
                raise ConfigError(f"{u.path}: transcript of {len(ids)} tokens, more than max_tokens={self.max_tokens} "
                                  f"(raise data.max_tokens)")
            if len(ids) == 0:
                raise ConfigError(f"{u.path}: transcript {u.text!r} has no tokens")
        self._cache = {} if cache else None

    @property
    def files(self) -> list[str]:
        return [u.path for u in self.utterances]

    @property
    def texts(self) -> list[str]:
        return [u.text for u in self.utterances]

    def __len__(self) -> int:
        return len(self.utterances)

    def audio(self, index: int) -> np.ndarray:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        u = self.utterances[index]
        wave = read_audio(u.path, self.sample_rate)
        if len(wave) > self.samples:
            raise AudioFileError(u.path, f"{len(wave) / self.sample_rate:.2f} s, longer than the "
                                         f"{self.samples / self.sample_rate:.2f} s this source pads to")
        if self._cache is not None:
            self._cache[index] = wave
        return wave

    def item(self, index: int, samples: int, speed: float = 1.0) -> dict:
        """Utterance ``index`` padded to ``samples``, played ``speed`` times faster (speed perturbation)."""
        wave = self.audio(index)
        if speed != 1.0:
            wave = speed_perturb(wave, speed, self.sample_rate)
        if len(wave) > samples:
            raise AudioFileError(self.utterances[index].path,
                                 f"{len(wave)} samples, longer than the bucket of {samples}")
        audio = np.zeros(samples, np.float32)
        audio[:len(wave)] = wave
        tokens = np.zeros(self.max_tokens, np.int32)
        ids = self.tokens[index]
        tokens[:len(ids)] = ids
        return {"audio": audio, "audio_len": np.int32(len(wave)), "tokens": tokens, "token_len": np.int32(len(ids)),
                "index": np.int32(index)}

    def __getitem__(self, index: int) -> dict:
        return self.item(int(index), self.samples)

    def batch_spec(self):
        return {"audio": ((self.samples,), np.float32), "audio_len": ((), np.int32),
                "tokens": ((self.max_tokens,), np.int32), "token_len": ((), np.int32), "index": ((), np.int32)}

    def padding_item(self) -> dict:
        return padding_from_spec(self.batch_spec())


def stack(items: Sequence[dict]) -> dict:
    return {k: np.stack([it[k] for it in items]) for k in items[0]}


class BucketBatches:
    """Endless training batches of ``source`` in length buckets (module docstring).

    buckets.frames are bucket lengths in *samples* here; lengths: each utterance's samples.
    """

    def __init__(self, source: SpeechSource, lengths: Sequence[int], buckets: Buckets, *, seed: int,
                 shard_index: int = 0, shard_count: int = 1, speeds: Sequence[float] = ()):
        for size in buckets.batch_sizes:
            if size % shard_count:
                raise ConfigError(f"bucket batch size {size} is not divisible by the {shard_count} processes")
        self.source, self.lengths, self.buckets = source, np.asarray(lengths), buckets
        self.seed, self.shard_index, self.shard_count = int(seed), int(shard_index), int(shard_count)
        self.speeds = tuple(float(f) for f in speeds)
        self._speeds_of_epoch = None
        self.epoch, self.position = 0, 0
        names = [u.path for u in source.utterances]
        self._order = self._epoch_order(0, names)  # warns once about utterances no bucket holds
        if not self._order:
            raise ConfigError(f"no training batch: {len(source)} utterances fill no bucket of {buckets}")

    def epoch_speeds(self, epoch: int) -> np.ndarray:
        """Each utterance's speed factor in ``epoch`` (all 1 without speed perturbation)."""
        if not self.speeds:
            return np.ones(len(self.lengths))
        return np.asarray([choose_speed(self.seed, epoch, i, self.speeds) for i in range(len(self.lengths))])

    def _epoch_order(self, epoch: int, names=()) -> list:
        # an epoch's seed from (run seed, epoch): a resumed run rebuilds the same order
        seed = int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0])
        self._speeds_of_epoch = self.epoch_speeds(epoch)
        lengths = self.lengths if not self.speeds else np.asarray(
            [perturbed_length(n, f) for n, f in zip(self.lengths, self._speeds_of_epoch)])
        return bucket_batches(lengths, self.buckets, seed=seed, names=names, unit="samples", warn=epoch == 0)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._order is None:
            self._order = self._epoch_order(self.epoch)
        if self.position >= len(self._order):
            self.epoch, self.position = self.epoch + 1, 0
            self._order = self._epoch_order(self.epoch)
        bucket, rows = self._order[self.position]
        self.position += 1
        local = len(rows) // self.shard_count
        mine = rows[self.shard_index * local:(self.shard_index + 1) * local]
        samples = self.buckets.frames[bucket]
        return stack([self.source.item(int(i), samples, float(self._speeds_of_epoch[i])) for i in mine])

    def get_state(self) -> dict:
        return {"config": self._config(), "epoch": self.epoch, "position": self.position}

    def _config(self) -> dict:
        return {"seed": self.seed, "size": len(self.source), "buckets": [list(self.buckets.frames),
                                                                          list(self.buckets.batch_sizes)],
                "shard_index": self.shard_index, "shard_count": self.shard_count, "speeds": list(self.speeds)}

    def set_state(self, state: dict) -> None:
        if state.get("config") != self._config():
            raise CheckpointError(f"data iterator state was saved for {state.get('config')}, but this pipeline is "
                                  f"{self._config()}; it cannot resume from it")
        self.epoch, self.position, self._order = int(state["epoch"]), int(state["position"]), None

    def close(self) -> None:
        pass
