"""The export form of a scene classifier: one RGB image in [0, 1] -> the probability of each class.

Why [0, 1] pixels in, not the normalised tensor the network trains on: a device holds uint8 pixels,
and dividing by 255 is all it should have to do; the ImageNet mean and std are subtracted inside the
graph, in the front end's named scope, so the int8 variant keeps that step in float (its input
stays float and is quantized only after it, as the network's own input). The softmax is spelled
out under ``PROBS_SCOPE`` and kept in float too: TFLite's int8 SOFTMAX has the fixed output scale
1/256, which would tie close classes.

Held-out examples are the test part, scored by the run's ``ClassificationEvaluator`` on the
probabilities (argmax as on the logits), so the report states each variant's accuracy next to
JAX's; calibration images (int8) come from the training part.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments.rsic_kd.data import SceneData
from jaxaudio.audio.features import FRONTEND_SCOPE
from jaxaudio.data.images import default_normalisation
from jaxaudio.evaluators.classification import ClassificationEvaluator
from jaxaudio.export.model import CLASS_PROBS, HeldOut, InferenceModel, Output, round_robin
from jaxaudio.train.state import split_model

PROBS = "class_probs"
PROBS_SCOPE = "class_softmax"
REPORT_METRICS = ("average_accuracy",)


def softmax(logits):
    """Class probabilities under ``PROBS_SCOPE`` (``jax.nn.softmax`` is a jitted helper whose ops
    lose the enclosing name scope in the converted graph)."""
    with jax.named_scope(PROBS_SCOPE):
        shifted = logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
        e = jnp.exp(shifted)
        return e / jnp.sum(e, axis=-1, keepdims=True)


def classifier_fn(graphdef, channels: int):
    """``fn(variables, images (batch, H, W, C) in [0, 1]) -> {PROBS: (batch, classes)}``."""
    mean, std = (jnp.asarray(v, jnp.float32) for v in default_normalisation(channels))

    def fn(variables, images):
        model = nnx.merge(graphdef, variables["params"], variables["model_state"])
        with jax.named_scope(FRONTEND_SCOPE):
            x = (images - mean) / std
        return {PROBS: softmax(model(x, train=False))}

    return fn


def inference_model(config, data: SceneData, module: nnx.Module, *, name: str, source: str,
                    references: tuple[InferenceModel, ...] = ()) -> InferenceModel:
    """``module`` (a zoo network with its trained weights) as an ``InferenceModel`` on ``data``'s
    test part; ``references``: the models the report compares it against."""
    graphdef, params, model_state = split_model(module)
    variables = {"params": params, "model_state": model_state}
    channels, size = int(config.data.channels), int(config.data.image_size)
    evaluator = ClassificationEvaluator(lambda: data.source("test"), int(config.batch.eval), data.classes,
                                        output=PROBS)

    def calibration(n: int) -> np.ndarray:
        train = data.source("train", plain=True)
        picks = np.linspace(0, len(train) - 1, num=min(n, len(train))).round().astype(int)
        return np.stack([train[int(i)]["image"] for i in picks]).astype(np.float32)

    def held_out(max_examples: int) -> HeldOut:
        test = data.source("test", plain=True)
        positions = spread(test.labels, max_examples)
        images = np.stack([test[int(i)]["image"] for i in positions]).astype(np.float32)
        return HeldOut(images, tuple(test.files[int(i)] for i in positions),
                       lambda outputs: evaluator.score_arrays(outputs, positions))

    return InferenceModel(name=name, fn=classifier_fn(graphdef, channels), variables=variables,
                          input_shape=(size, size, channels), outputs=(Output(PROBS, CLASS_PROBS, data.classes),),
                          primary_metric="accuracy", calibration=calibration, held_out=held_out, source=source,
                          float_scopes=(PROBS_SCOPE,), report_metrics=REPORT_METRICS, references=references)


def spread(labels: np.ndarray, max_examples: int) -> np.ndarray:
    """Positions of the first ``max_examples`` test images (0: all) taking the classes in turn, so a
    few held-out images cover every class rather than the first ones."""
    labels = np.asarray(labels)
    order = round_robin(np.flatnonzero(labels == c) for c in np.unique(labels))
    return order if max_examples <= 0 else order[:max_examples]
