"""Paraformer: single-step non-autoregressive speech recognition (Conformer encoder, CIF predictor,
glancing-LM sampler), on AISHELL-1 or the built-in espeak corpus.

    python experiments/run.py --exp=paraformer                          # tiny: the built-in corpus, 2 CPU cores
    python experiments/run.py --exp=paraformer --preset=paper --data_dir=/path/to/aishell1
    python experiments/run.py --exp=paraformer --mode=predict --workdir=W --input a.wav b.wav

One training stage (``train``: 0.3 CTC + 0.7 label-smoothed CE of the glancing pass + 1.0 CIF
quantity loss, SpecAugment on the fbank), the best checkpoint by dev CER, then CER on the dev and
test voices (the built-in corpus speaks them with espeak variants training never hears). The
sections shared with the autoregressive baseline are ``experiments/asr/recipe.py``.

Sources: ``spec/papers.md`` §6, FunASR's ``examples/aishell/paraformer/conf/
paraformer_conformer_12e_6d_2048_256.yaml`` [V]; the values the paper preset takes from it are
pinned by ``tests/experiments/test_paraformer_paper_preset.py``.
"""
import ml_collections

from experiments.asr import recipe

PRESETS = recipe.PRESETS


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    c = recipe.base_config(preset)
    p = c.paraformer = ml_collections.ConfigDict()
    p.predictor_weight = 1.0       # [V] model_conf.predictor_weight
    p.sampling_ratio = 0.4         # [V] model_conf.sampling_ratio (glancing)
    p.predictor_dropout = 0.1      # [V] predictor_conf.dropout
    p.threshold, p.tail_threshold = 1.0, 0.45   # [V] predictor_conf
    # MWER fine-tuning (the paper's; FunASR's recipe has none and the paper gives no schedule):
    # opt-in with --config.stages.mwer.steps=N, starting from the train stage's best weights
    # our choices: N = 4 hypotheses; loss = MWER + 0.01 x the training loss (Prabhavalkar et al. 2018's
    # interpolation weight for MWER fine-tuning, which keeps CIF, CTC and CE anchored)
    c.mwer = ml_collections.ConfigDict({"hypotheses": 4, "weight": 1.0, "base_weight": 0.01})
    m = c.stages.mwer = recipe.train_stage(preset)
    m.steps = 0
    m.lr, m.schedule = m.lr * 0.1, {"kind": "constant"}   # our choice: a tenth of the training peak, held
    return c
