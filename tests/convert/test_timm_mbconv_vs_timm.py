"""MobileNet V1 / V2 and EfficientNet-B0 weight import against timm (``mobilenetv1_100``,
``mobilenetv2_100``, ``efficientnet_b0``: one MBConv family, built by timm's EfficientNet class too).

timm's models are built with random weights (``pretrained=False``: nothing is downloaded) and
randomised by ``conftest.randomise`` (calibrated BatchNorm statistics, so eval-mode
BatchNorm is not the identity; random affines and biases), the state dict copied into the
``published`` preset by ``convert/timm.py`` and both run in eval mode on the same random 64x64
images (NCHW for torch, NHWC for ours), float32.

Tolerance: ``max |ours - timm| <= 1e-4`` on logits of unit scale (asserted); the pooled features
within 1e-4 of their scale.
"""
import dataclasses

import numpy as np
import pytest
from flax import nnx

from jaxaudio.convert.timm import timm_to_nnx
from jaxaudio.models.cnn_zoo.mbconv import MBConvNet
from jaxaudio.models.cnn_zoo import efficientnet, mobilenet
from tests.convert.conftest import assert_close, assert_features_close

CLASSES = 7
NAME = "mobilenet_v2"  # the member the class-count test imports
ENTRIES = {**mobilenet.ENTRIES, **efficientnet.ENTRIES}


def ours(name, state, **overrides):
    """The published preset with ``state`` loaded. Built with shapes only (``nnx.eval_shape``):
    the converter sets every tensor, so the init, which eager JAX would compile shape by shape,
    is never computed."""
    entry = ENTRIES[name]
    cfg = dataclasses.replace(entry.presets["published"], **overrides)
    model = nnx.eval_shape(lambda: MBConvNet(cfg, rngs=nnx.Rngs(0)))
    return timm_to_nnx(state, model, rename=entry.rename, classifier=entry.classifier)


@nnx.jit
def run(model, x):
    """(logits, pooled features) in eval mode, one compiled program per model layout."""
    return model(x, train=False), model.features(x, train=False)


@pytest.fixture(scope="module")
def reference(timm_reference):
    """name -> (timm model, numpy state dict, NCHW images, timm logits, timm pooled features)."""
    def get(name):
        ref = timm_reference(ENTRIES[name].timm_name, num_classes=CLASSES)
        return ref["model"], ref["state"], ref["x"], ref["logits"], ref["features"]

    return get


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2", "efficientnet_b0"])
def test_logits_match_timm(name, reference):
    _, state, x, logits, feats = reference(name)
    model = ours(name, state, num_classes=CLASSES)
    got_logits, got_feats = run(model, x.transpose(0, 2, 3, 1))
    assert_features_close(got_feats, feats, f"{name} features")
    assert_close(got_logits, logits, f"{name} logits")


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2", "efficientnet_b0"])
def test_one_channel_import_matches_timm_adapt(name, reference, require_reference):
    """A 1-channel model from the RGB checkpoint equals timm's ``in_chans=1`` model holding
    timm's own ``adapt_input_conv`` of the stem (the RGB kernel summed over its inputs)."""
    timm, torch = require_reference("timm"), require_reference("torch")
    from timm.models import adapt_input_conv

    _, state, x, _, _ = reference(name)
    ref = timm.create_model(ENTRIES[name].timm_name, pretrained=False, num_classes=CLASSES, in_chans=1).eval()
    adapted = {k: torch.from_numpy(v) for k, v in state.items()}
    adapted["conv_stem.weight"] = adapt_input_conv(1, adapted["conv_stem.weight"])
    ref.load_state_dict(adapted)
    grey = x[:, :1]
    with torch.no_grad():
        want = ref(torch.from_numpy(grey)).numpy()
    model = ours(name, state, num_classes=CLASSES, in_channels=1)
    assert model.conv_stem.kernel.get_value().shape[2] == 1
    assert_close(run(model, grey.transpose(0, 2, 3, 1))[0], want, f"{name} 1-channel logits")


def test_new_class_count_keeps_fresh_classifier(reference):
    """45 classes from a 7-class checkpoint: every tensor but the classifier's is the checkpoint's
    (in our layout: the same values the 7-class import holds), the classifier keeps the values
    it had before the import."""
    _, state, _, _, _ = reference(NAME)
    cfg = dataclasses.replace(ENTRIES[NAME].presets["published"], num_classes=45)
    model = nnx.eval_shape(lambda: MBConvNet(cfg, rngs=nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    head = {"kernel": rng.normal(size=(model.num_features, 45)).astype(np.float32), "bias": np.zeros(45, np.float32)}
    for leaf, value in head.items():
        getattr(model.classifier, leaf).set_value(value)
    # Placeholders elsewhere, so anything the import failed to set would show.
    graph = nnx.state(model)
    for path, var in nnx.to_flat_state(graph):
        if path[0] != "classifier":
            var.set_value(np.full(var.get_value().shape, np.nan, np.float32))
    nnx.update(model, graph)
    entry = ENTRIES[NAME]
    timm_to_nnx(state, model, rename=entry.rename, classifier=entry.classifier)
    reference_model = ours(NAME, state, num_classes=CLASSES)
    want = dict(nnx.to_flat_state(nnx.state(reference_model)))
    for path, var in nnx.to_flat_state(nnx.state(model)):
        if path[0] == "classifier":
            np.testing.assert_array_equal(np.asarray(var.get_value()), head[str(path[-1])])
        else:
            np.testing.assert_array_equal(np.asarray(var.get_value()), np.asarray(want[path].get_value()))
