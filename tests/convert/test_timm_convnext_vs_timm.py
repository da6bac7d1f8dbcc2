"""ConvNeXt-T weight import against timm (``convnext_tiny``).

timm's model is built with random weights (``pretrained=False``: nothing is downloaded), then
randomised by ``conftest.randomise``: every LayerNorm's affine, every bias and every layer scale
``gamma`` is drawn at random (timm inits them to ones / zeros / 1e-6, which would make each block
nearly the identity and hide a wrong mapping of its MLP). The state dict is copied into the
``published`` preset by ``convert/timm.py`` and both run in eval mode on the same random 64x64
images (NCHW for torch, NHWC for ours), float32.

Tolerance: ``max |ours - timm| <= 1e-4`` on logits of unit scale (asserted); the pooled features
within 1e-4 of their scale.
"""
import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from jaxaudio.convert.timm import timm_to_nnx
from jaxaudio.models.cnn_zoo.convnext import ENTRIES
from tests.convert.conftest import assert_close, assert_features_close

NAME = "convnext_tiny"
CLASSES = 7


def config(**overrides):
    return dataclasses.replace(ENTRIES[NAME].presets["published"], **overrides)


def ours(state, **overrides):
    """Our model, built abstractly (shapes only: no random init to compile) and filled from ``state``."""
    entry = ENTRIES[NAME]
    cfg = config(**overrides)
    model = nnx.eval_shape(lambda: entry.model(cfg, rngs=nnx.Rngs(0)))
    return timm_to_nnx(state, model, rename=entry.rename, classifier=entry.classifier)


@pytest.fixture(scope="module")
def reference(timm_reference):
    """(numpy state dict, NCHW images, timm logits, timm pooled features)."""
    ref = timm_reference(ENTRIES[NAME].timm_name, num_classes=CLASSES)
    return ref["state"], ref["x"], ref["logits"], ref["features"]


def test_logits_match_timm(reference):
    state, x, logits, feats = reference
    model = ours(state, num_classes=CLASSES)
    nhwc = x.transpose(0, 2, 3, 1)
    assert_features_close(model.features(nhwc, train=False), feats, f"{NAME} features")
    assert_close(model(nhwc, train=False), logits, f"{NAME} logits")


def test_one_channel_import_matches_timm_adapt(reference, require_reference):
    """A 1-channel model from the RGB checkpoint equals timm's ``in_chans=1`` model holding
    timm's own ``adapt_input_conv`` of the stem (the RGB kernel summed over its inputs)."""
    timm, torch = require_reference("timm"), require_reference("torch")
    from timm.models import adapt_input_conv

    state, x, _, _ = reference
    ref = timm.create_model(ENTRIES[NAME].timm_name, pretrained=False, num_classes=CLASSES, in_chans=1).eval()
    adapted = {k: torch.from_numpy(v) for k, v in state.items()}
    adapted["stem.0.weight"] = adapt_input_conv(1, adapted["stem.0.weight"])
    ref.load_state_dict(adapted)
    grey = x[:, :1]
    with torch.no_grad():
        want = ref(torch.from_numpy(grey)).numpy()
    model = ours(state, num_classes=CLASSES, in_channels=1)
    np.testing.assert_allclose(np.asarray(model.stem[0].kernel.get_value()),
                               adapted["stem.0.weight"].numpy().transpose(2, 3, 1, 0), rtol=1e-6)
    assert_close(model(grey.transpose(0, 2, 3, 1), train=False), want, f"{NAME} 1-channel logits")


def test_new_class_count_keeps_fresh_classifier(reference):
    """45 classes from a 7-class checkpoint: everything but the classifier loads (the pooled,
    normalised features equal timm's), the classifier keeps its fresh init. Only the classifier
    is initialised for real (the rest is abstract until loaded), to save the random init's compiles."""
    state, x, _, feats = reference
    model = nnx.eval_shape(lambda: ENTRIES[NAME].model(config(num_classes=45), rngs=nnx.Rngs(0)))
    model.head.fc = nnx.Linear(model.num_features, 45, rngs=nnx.Rngs(jax.random.key(1, impl="rbg")))
    init = {k: np.asarray(v.get_value()) for k, v in nnx.to_flat_state(nnx.state(model.head.fc))}
    timm_to_nnx(state, model, rename=ENTRIES[NAME].rename, classifier=ENTRIES[NAME].classifier)
    for k, v in nnx.to_flat_state(nnx.state(model.head.fc)):
        np.testing.assert_array_equal(np.asarray(v.get_value()), init[k])
    assert_features_close(model.features(x.transpose(0, 2, 3, 1), train=False), feats, f"{NAME} features, 45 classes")
