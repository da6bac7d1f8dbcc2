"""The autoregressive baseline shares everything but its decoder with Paraformer (the comparison
``benchmarks/nar_vs_ar.py`` makes): each preset's data, encoder, decoder sizes, loss weights,
SpecAugment and training stage equal Paraformer's, whose paper preset is pinned to FunASR's recipe
(``test_paraformer_paper_preset.py``). The model config built from it is checked too."""
from __future__ import annotations

import pytest

from experiments import registry
from experiments.ar_asr import system as ar_system
from experiments.paraformer import system as paraformer_system
from jaxaudio.data.tokenizer import SPECIALS

SHARED = ("seed", "data", "model", "specaug", "speed_perturb", "batch", "eval", "mesh")


def _config(name, preset):
    c = registry.load_config(name, preset)
    c.data.tokens = SPECIALS + tuple(chr(0x4E00 + i) for i in range(40))
    c.data.cmvn_mean, c.data.cmvn_std = (0.0,) * 80, (1.0,) * 80
    return c


def _plain(value):
    return value.to_dict() if hasattr(value, "to_dict") else value


@pytest.mark.parametrize("preset", ["smoke", "tiny", "paper"])
def test_everything_but_the_decoder_is_paraformers(preset):
    ar, para = _config("ar_asr", preset), _config("paraformer", preset)
    for key in SHARED:
        assert _plain(ar[key]) == _plain(para[key]), key
    assert _plain(ar.stages.train) == _plain(para.stages.train)
    assert set(ar.stages) == {"train"} and set(para.stages) == {"train", "mwer"}   # MWER is Paraformer's
    a, p = ar_system.model_config(ar), paraformer_system.model_config(para)
    assert a.encoder == p.encoder
    assert (a.vocab_size, a.decoder_layers, a.decoder_heads, a.decoder_ffn, a.decoder_dropout, a.max_tokens,
            a.ctc_weight, a.label_smoothing) == (p.vocab_size, p.decoder_layers, p.decoder_heads, p.decoder_ffn,
                                                 p.decoder_dropout, p.max_tokens, p.ctc_weight, p.label_smoothing)


def test_decoding_presets():
    assert _config("ar_asr", "paper").decode.beam == 10
    assert _config("ar_asr", "tiny").decode.beam == 1
    # joint CTC / attention decoding: ESPnet's AISHELL-1 decode_asr_transformer.yaml (paper), ours (tiny)
    assert _config("ar_asr", "paper").decode.ctc_weight == 0.5
    assert _config("ar_asr", "tiny").decode.ctc_weight == _config("ar_asr", "smoke").decode.ctc_weight == 0.3
    assert (_config("ar_asr", "paper").decode.ctc_tokens, _config("ar_asr", "tiny").decode.ctc_tokens) == (0, 5)
