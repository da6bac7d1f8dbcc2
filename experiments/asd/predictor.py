"""``--mode=predict`` for the ASD systems: the trained model as an ``ASDPredictor``."""
from __future__ import annotations

import numpy as np

from experiments.asd import data as asd_run_data
from experiments.asd.thresholds import load_thresholds
from jaxaudio.errors import JaxAudioError
from jaxaudio.evaluators.asd import SCORE
from jaxaudio.predict.asd import ASDPredictor
from jaxaudio.train.system import System


def predictor(system: System, config, workdir: str) -> tuple[ASDPredictor, str]:
    """(ASDPredictor, a description of the weights and thresholds) of a trained workdir: the final
    stage's weights through the System's compiled predict (``batch_predictor``, as evaluation
    scores), in ``config.batch.eval`` batches, with the thresholds stage's per-class thresholds.
    The thresholds are read first, so a run trained before that stage existed is told how to make
    them before any model is restored."""
    from jaxaudio.train import run_record
    from jaxaudio.train.trainer import batch_predictor

    classes = tuple(asd_run_data.ASDData(config).classes)   # config.data.classes (saved by finalize), or the data's
    try:
        preset = run_record.load(workdir)[1]   # for the command that makes missing thresholds
    except JaxAudioError:
        preset = None
    thresholds, record, path = load_thresholds(workdir, classes, exp=system.name, preset=preset)
    predict_batch, source = batch_predictor(system, config, workdir)

    def score_batch(audio: np.ndarray, class_id: np.ndarray) -> np.ndarray:
        return predict_batch(audio, class_id=class_id)[SCORE]

    asd = ASDPredictor(score_batch=score_batch, batch_size=int(config.batch.eval),
                       sample_rate=int(config.data.sample_rate), clip_samples=asd_run_data.clip_samples(config.data),
                       class_names=classes, thresholds=thresholds, thresholds_file=path)
    return asd, f"{source}; thresholds {path} (step {record.get('step')}, {record.get('quantile')} quantile)"
