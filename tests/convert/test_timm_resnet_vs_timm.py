"""ResNet-50 and ResNet-V2 weight import against timm (``resnet50``, ``resnetv2_50``, ``resnetv2_152``).

timm's models are built with random weights (``pretrained=False``: nothing is downloaded) and
randomised by ``conftest.randomise`` (calibrated BatchNorm statistics, random affines and
biases: timm zero-inits ResNet-50's last BN per block and ResNet-V2's classifier, which would hide a
wrong mapping); the state dict is copied into our preset by ``convert/timm.py`` and both run in eval
mode on the same random 64x64 images (NCHW for torch, NHWC for ours), float32. ResNet-V2's
``published`` preset is the 152-layer model (in the default run); the 1-channel and class-count
tests use ``resnetv2_50``, which has every module type the 152-layer one has.

Tolerance: ``max |ours - timm| <= 1e-4`` on logits of unit scale (asserted); the pooled features
within 1e-4 of their scale.

Ours are built abstractly (``nnx.eval_shape``) and filled by the converter, which saves the random
init of up to 60 M parameters (its compile time, one program per kernel shape, dominates otherwise).
"""
import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from jaxaudio.convert.timm import timm_to_nnx
from jaxaudio.models.cnn_zoo.resnet import ENTRIES, RESNETV2_TIMM_NAMES
from tests.convert.conftest import assert_close, assert_features_close

CLASSES = 7
# (zoo entry, preset) -> the timm model it equals
MODELS = {
    ("resnet50", "published"): "resnet50",
    ("resnetv2", "resnetv2_50"): RESNETV2_TIMM_NAMES["resnetv2_50"],
    ("resnetv2", "published"): RESNETV2_TIMM_NAMES["published"],
}


def sub(state, path):
    for key in path:
        state = state[key]
    return state


def config(name, preset, **overrides):
    return dataclasses.replace(ENTRIES[name].presets[preset], **overrides)


def ours(name, preset, state, **overrides):
    """Our model, built abstractly (shapes only) and filled from ``state``."""
    entry = ENTRIES[name]
    cfg = config(name, preset, **overrides)
    model = nnx.eval_shape(lambda: entry.model(cfg, rngs=nnx.Rngs(0)))
    return timm_to_nnx(state, model, rename=entry.rename, classifier=entry.classifier)


@pytest.fixture(scope="module")
def reference(timm_reference):
    """(entry, preset) -> (numpy state dict, NCHW images, timm logits, timm pooled features)."""
    def get(name, preset):
        ref = timm_reference(MODELS[name, preset], num_classes=CLASSES)
        return ref["state"], ref["x"], ref["logits"], ref["features"]

    return get


@pytest.mark.parametrize("name, preset", [("resnet50", "published"), ("resnetv2", "published"),
                                          ("resnetv2", "resnetv2_50")])
def test_logits_match_timm(name, preset, reference):
    """ResNet-152-V2 (``published``) takes ~15 s on 2 busy cores (timm's 60 M-parameter init, our
    eager forward through 50 blocks at 64x64): inside the default run's budget."""
    state, x, logits, feats = reference(name, preset)
    model = ours(name, preset, state, num_classes=CLASSES)
    nhwc = x.transpose(0, 2, 3, 1)
    assert_features_close(model.features(nhwc, train=False), feats, f"{name}/{preset} features")
    assert_close(model(nhwc, train=False), logits, f"{name}/{preset} logits")


@pytest.mark.parametrize("name, preset, stem", [("resnet50", "published", "conv1"),
                                                ("resnetv2", "resnetv2_50", "stem.conv")])
def test_one_channel_import_matches_timm_adapt(name, preset, stem, reference, require_reference):
    """A 1-channel model from the RGB checkpoint equals timm's ``in_chans=1`` model holding
    timm's own ``adapt_input_conv`` of the stem (the RGB kernel summed over its inputs)."""
    timm, torch = require_reference("timm"), require_reference("torch")
    from timm.models import adapt_input_conv

    state, x, _, _ = reference(name, preset)
    ref = timm.create_model(MODELS[name, preset], pretrained=False, num_classes=CLASSES, in_chans=1).eval()
    adapted = {k: torch.from_numpy(v) for k, v in state.items()}
    adapted[f"{stem}.weight"] = adapt_input_conv(1, adapted[f"{stem}.weight"])
    ref.load_state_dict(adapted)
    grey = x[:, :1]
    with torch.no_grad():
        want = ref(torch.from_numpy(grey)).numpy()
    model = ours(name, preset, state, num_classes=CLASSES, in_channels=1)
    kernel = np.asarray(sub(nnx.state(model), stem.split("."))["kernel"].get_value())
    np.testing.assert_allclose(kernel, adapted[f"{stem}.weight"].numpy().transpose(2, 3, 1, 0), rtol=1e-6)
    assert_close(model(grey.transpose(0, 2, 3, 1), train=False), want, f"{name}/{preset} 1-channel logits")


@pytest.mark.parametrize("name, preset", [("resnet50", "published"), ("resnetv2", "resnetv2_50")])
def test_new_class_count_keeps_fresh_classifier(name, preset, reference):
    """45 classes from a 7-class checkpoint: everything but the classifier loads (the pooled
    features equal timm's), the classifier keeps its fresh init. Only the classifier is
    initialised for real (the rest is abstract until loaded): a 25 M-parameter random init costs
    more compile time than the whole parity check."""
    state, x, _, feats = reference(name, preset)
    entry = ENTRIES[name]
    model = nnx.eval_shape(lambda: entry.model(config(name, preset, num_classes=45), rngs=nnx.Rngs(0)))
    fresh = nnx.Linear(model.num_features, 45, rngs=nnx.Rngs(jax.random.key(1, impl="rbg")))
    parent = model.head if name == "resnetv2" else model
    parent.fc = fresh
    init = {k: np.asarray(v.get_value()) for k, v in nnx.to_flat_state(nnx.state(fresh))}
    timm_to_nnx(state, model, rename=entry.rename, classifier=entry.classifier)
    for k, v in nnx.to_flat_state(nnx.state(parent.fc)):
        np.testing.assert_array_equal(np.asarray(v.get_value()), init[k])
    assert_features_close(model.features(x.transpose(0, 2, 3, 1), train=False), feats,
                          f"{name}/{preset} features, 45 classes")
