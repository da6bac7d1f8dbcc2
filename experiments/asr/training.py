"""What the speech-recognition systems' training shares: the encoder config and vocabulary read
from the run config, the (SpecAugmented) training features and the one training stage. Each
system adds its model, its loss and its decoding (``experiments/paraformer``, ``experiments/ar_asr``)."""
from __future__ import annotations

import jax

from experiments.asr import data as asr_data
from experiments.asr.recipe import TRAIN_STAGE
from jaxaudio.audio.specaugment import spec_augment
from jaxaudio.data.bpe_tokenizer import BPETokenizer
from jaxaudio.io import paths
from jaxaudio.nn.conformer import ConformerConfig
from jaxaudio.train.stage_config import stage_fields
from jaxaudio.train.system import Stage, System

BATCH_KEYS = ("audio", "audio_len", "tokens", "token_len")
EVAL_KEYS = ("audio", "audio_len")


def encoder_config(config) -> ConformerConfig:
    return ConformerConfig(**dict(config.model.encoder))


def vocab_size(config) -> int:
    tokens = config.data.tokens or asr_data.ASRData(config).tokenizer.tokens
    return len(tokens)


def augmented_features(config, batch, key):
    """Normalised fbank of a training batch, SpecAugmented when ``config.specaug.enabled``."""
    feats, mask = asr_data.device_features(config, batch["audio"], batch["audio_len"])
    s = config.specaug
    if s.enabled:
        feats = spec_augment(key, feats, mask.sum(axis=1), warp_window=s.warp_window, freq_masks=s.freq_masks,
                             freq_width=s.freq_width, time_masks=s.time_masks, time_width=s.time_width)
    return feats, mask


def eval_features(config, batch):
    """Normalised fbank of an evaluation / predict batch."""
    return asr_data.device_features(config, batch["audio"], batch["audio_len"])


def frame_seconds(config) -> float:
    """Seconds per encoder frame: the fbank hop times the ÷4 subsampling."""
    fe = asr_data.frontend_config(config)
    return 4 * fe.hop_length / fe.sample_rate


def training_data(config, workdir: str) -> asr_data.ASRData:
    """The run's data, with its token list and CMVN in the config (``finalize``: a no-op after
    run.py's; a Trainer built directly needs them too). One per ``stages`` call, shared by its stages.
    A BPE model is also written to the workdir as a SentencePiece file, for other tools."""
    asr_data.finalize(config)
    data = asr_data.ASRData(config)
    if isinstance(data.tokenizer, BPETokenizer) and jax.process_index() == 0:
        paths.makedirs(workdir)
        data.tokenizer.save(workdir)
    return data


def train_stage(config, loss, data: asr_data.ASRData, *, name: str = TRAIN_STAGE, **fields) -> Stage:
    """A training stage over ``data``'s length buckets, validated by dev CER (``fields``: e.g. init_from)."""
    return Stage(name, loss=loss, batch_keys=BATCH_KEYS, batches=lambda: data.train_batches(config.seed),
                 **stage_fields(config.stages[name], f"stages.{name}"), **fields)


def asr_system(**fields) -> System:
    """A speech-recognition ``System``: the ASR evaluators (CER on dev and test), the one training
    stage as the final one, the shared batch keys and finalize, unless ``fields`` say otherwise."""
    defaults = dict(evaluators=asr_data.evaluators, final_stage=lambda config: TRAIN_STAGE, eval_keys=EVAL_KEYS,
                    finalize_config=asr_data.finalize, task="asr")
    return System(**{**defaults, **fields})
