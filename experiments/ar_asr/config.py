"""The autoregressive baseline of the Paraformer comparison: the same Conformer encoder, a causal
Transformer decoder over token embeddings, joint CTC, beam search with length normalisation.

    python experiments/run.py --exp=ar_asr                          # tiny: the built-in corpus, 2 CPU cores
    python experiments/run.py --exp=ar_asr --preset=paper --data_dir=/path/to/aishell1

Everything but the decoder is Paraformer's (``experiments/asr/recipe.py``): data, encoder, decoder
sizes, CTC weight 0.3, label smoothing 0.1, SpecAugment, optimiser and schedule. That is the
comparison the Paraformer paper makes (its AR baseline shares the encoder and the training setup);
ESPnet's AISHELL-1 Conformer recipe, which ``jaxaudio/models/ar_asr.py`` follows in its layers, uses
the same sizes and loss weights.
"""
import ml_collections

from experiments.asr import recipe

PRESETS = recipe.PRESETS


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    c = recipe.base_config(preset)
    d = c.decode = ml_collections.ConfigDict()
    # beam width of evaluation and predict (benchmarks/nar_vs_ar.py measures 1 and 5 itself);
    # ESPnet's AISHELL-1 decoding uses 10 (our reading of its decode config, not pinned)
    d.beam = 10
    d.length_penalty = 0.0
    if preset in ("tiny", "smoke"):
        d.beam = 1   # our choice: greedy keeps the tiny run's dev evaluations short on 2 cores
    return c
