"""Paraformer's ``paper`` preset pinned to FunASR's AISHELL-1 recipe (``spec/papers.md`` §6:
paraformer_conformer_12e_6d_2048_256.yaml, cif_predictor.py, model.py [V]). Nothing is read or
trained; the token list and CMVN are set by hand (AISHELL-1's 4,234 classes), so no corpus is needed."""
from __future__ import annotations

import pytest

from experiments import registry
from experiments.asr import data as asr_data
from experiments.paraformer import system as paraformer_system
from jaxaudio.data.tokenizer import SPECIALS


@pytest.fixture(scope="module")
def config():
    c = registry.load_config("paraformer", "paper")
    c.data.tokens = SPECIALS + tuple(chr(0x4E00 + i) for i in range(4234 - len(SPECIALS)))
    c.data.cmvn_mean, c.data.cmvn_std = (0.0,) * 80, (1.0,) * 80    # what finalize would measure
    return c


def test_front_end_is_funasrs(config):
    fe = asr_data.frontend_config(config)
    # 16 kHz, 80-d fbank, 25 ms Hamming / 10 ms, Kaldi mel, snip edges, int16 scale
    assert (fe.sample_rate, fe.n_mels, fe.win_length, fe.hop_length, fe.window, fe.mel_scale, fe.center) == (
        16000, 80, 400, 160, "hamming", "kaldi", False)
    assert fe.input_scale == 32768.0 and fe.preemphasis == 0.97
    s = config.specaug     # SpecAug: time warp 5, 2 freq masks 0-30, 2 time masks 0-40
    assert (s.enabled, s.warp_window, s.freq_masks, s.freq_width, s.time_masks, s.time_width) == (
        True, 5, 2, 30, 2, 40)
    assert tuple(config.speed_perturb) == (0.9, 1.0, 1.1)
    assert config.data.tokenizer == "char"   # "Char tokenizer"


def test_network_is_the_12e_6d_2048_256_conformer(config):
    m = paraformer_system.model_config(config)
    e = m.encoder
    assert (e.input_dim, e.d_model, e.heads, e.ffn_dim, e.blocks, e.kernel) == (80, 256, 4, 2048, 12, 15)
    assert (e.dropout, e.attention_dropout) == (0.1, 0.0)
    assert (m.decoder_layers, m.decoder_heads, m.decoder_ffn, m.decoder_dropout) == (6, 4, 2048, 0.1)
    assert (m.threshold, m.tail_threshold, m.predictor_dropout) == (1.0, 0.45, 0.1)
    assert m.vocab_size == 4234


def test_losses_and_glancing_are_the_recipes(config):
    m = paraformer_system.model_config(config)
    assert (m.ctc_weight, m.ce_weight, m.predictor_weight) == pytest.approx((0.3, 0.7, 1.0))
    assert (m.label_smoothing, m.sampling_ratio) == (0.1, 0.4)


def test_optimiser_is_the_recipes(config):
    (stage,) = registry.load("paraformer").stages(config, "/nonexistent")
    g = stage.default_group
    assert g["lr"] == 5e-4 and g["schedule"] == {"kind": "noam", "warmup_steps": 30000}   # Adam, warmuplr
    assert stage.clip_norm == 5.0
    assert stage.select == "best"          # FunASR averages the 10 best by valid acc; we keep the best by CER
