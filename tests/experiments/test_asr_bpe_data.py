"""``--config.data.tokenizer=bpe`` in the speech-recognition runs: finalize saves the pieces and
their scores in the config, the run writes a SentencePiece model into its workdir, and a config
read back from config.json (predict, export, resume) labels every utterance as the training run
did. A user's manifest corpus stands in for the built-in one (a few noise clips: no synthesis)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import sentencepiece
import soundfile as sf

from experiments import registry
from experiments.asr import data as asr_data
from experiments.asr.training import training_data, vocab_size
from jaxaudio.data.bpe_tokenizer import bpe_text
from jaxaudio.errors import ConfigError
from jaxaudio.train import run_record

TEXTS = {"train": ["seven three two", "turn on the light", "打开 电视", "three two one", "turn off the light",
                   "关闭 电视", "seven seven two"] * 2,
         "dev": ["two three", "turn on the light"], "test": ["seven one", "打开 电视"]}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bpe_corpus")
    rng = np.random.default_rng(0)
    for split, texts in TEXTS.items():
        rows = []
        for i, text in enumerate(texts):
            name = f"{split}_{i}.wav"
            sf.write(root / name, 0.1 * rng.standard_normal(16000).astype(np.float32), 16000)
            rows.append(json.dumps({"path": name, "text": text, "speaker": f"s{i % 2}"}, ensure_ascii=False))
        (root / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return str(root)


def _config(corpus, **data):
    config = registry.load_config("paraformer", "smoke")
    config.data.data_dir, config.data.synth_preset = corpus, ""
    for key, value in data.items():
        setattr(config.data, key, value)
    return config


def test_bpe_run_saves_its_model_and_a_saved_config_labels_alike(corpus, tmp_path):
    config = _config(corpus, tokenizer="bpe", bpe_vocab_size=48)
    data = training_data(config, str(tmp_path))
    assert len(config.data.tokens) == len(config.data.token_scores) == 48 == vocab_size(config)
    assert "▁seven" in config.data.tokens
    reference = sentencepiece.SentencePieceProcessor(model_file=str(tmp_path / "bpe.model"))
    train = data.source("train")
    for utt, ids in zip(train.utterances, train.tokens):
        assert reference.encode(bpe_text(utt.text)) == ids.tolist()
    run_record.save(str(tmp_path), "paraformer", "smoke", config)
    _, _, saved = run_record.load(str(tmp_path))
    again = asr_data.ASRData(saved)
    for split in ("train", "dev", "test"):
        assert [t.tolist() for t in again.source(split).tokens] == [t.tolist() for t in data.source(split).tokens]
    evaluators = asr_data.evaluators(saved)
    assert evaluators["dev"].word_text is bpe_text
    assert again.tokenizer.decode(again.source("dev").tokens[1]) == "turn on the light"


def test_char_runs_write_no_model_and_report_no_wer(corpus, tmp_path):
    config = _config(corpus)
    training_data(config, str(tmp_path))
    assert not (tmp_path / "bpe.model").exists() and config.data.token_scores == ()
    assert asr_data.evaluators(config)["dev"].word_text is None


def test_tokenizer_settings_are_named_errors(corpus, tmp_path):
    with pytest.raises(ConfigError, match="data.tokenizer='wordpiece': expected 'char' or 'bpe'"):
        asr_data.ASRData(_config(corpus, tokenizer="wordpiece")).tokenizer
    with pytest.raises(ConfigError, match="data.bpe_vocab_size=0"):
        asr_data.ASRData(_config(corpus, tokenizer="bpe")).tokenizer
    with pytest.raises(ConfigError, match="data.bpe_vocab_size=9000: sentencepiece cannot train it"):
        asr_data.ASRData(_config(corpus, tokenizer="bpe", bpe_vocab_size=9000)).tokenizer
