"""MobileNet V1 / V2 and EfficientNet-B0 weight import against timm (``mobilenetv1_100``,
``mobilenetv2_100``, ``efficientnet_b0``: one MBConv family, built by timm's EfficientNet class too).

timm's models are built with random weights (``pretrained=False``: nothing is downloaded), every
BatchNorm's weight, bias and running statistics randomised so eval-mode BatchNorm is not the
identity, the state dict copied into the ``published`` preset by ``convert/timm.py`` and both run
in eval mode on the same random 64x64 images (NCHW for torch, NHWC for ours), float32.

Tolerance: ``max |ours - timm| <= 1e-4 * max(1, max |timm|)``, i.e. atol 1e-4 on logits of unit
scale and relative to the logit scale beyond (the randomised BatchNorms grow the logits to ~5-40);
the measured errors are below 1e-5 relative.
"""
import dataclasses

import numpy as np
import pytest
from flax import nnx

from jaxaudio.convert.timm import timm_to_nnx
from jaxaudio.models.cnn_zoo.mbconv import MBConvNet
from jaxaudio.models.cnn_zoo import efficientnet, mobilenet

CLASSES = 7
NAME = "mobilenet_v2"  # the member the class-count test imports
ENTRIES = {**mobilenet.ENTRIES, **efficientnet.ENTRIES}


def randomise_batchnorm(model, torch, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.4 * torch.rand(n, generator=g) - 0.2)
                m.running_mean.copy_(0.4 * torch.rand(n, generator=g) - 0.2)
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))


def numpy_state(model):
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


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


def assert_close(got, want, what):
    got, want = np.asarray(got), np.asarray(want)
    err, scale = np.abs(got - want).max(), max(1.0, np.abs(want).max())
    print(f"{what}: max abs err {err:.2e}, scale {np.abs(want).max():.3g}")
    assert err <= 1e-4 * scale, f"{what}: max abs error {err:.3g} at output scale {scale:.3g}"


@pytest.fixture(scope="module")
def reference(require_reference):
    """name -> (timm model, numpy state dict, NCHW images, timm logits, timm pooled features)."""
    timm, torch = require_reference("timm"), require_reference("torch")
    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            model = timm.create_model(ENTRIES[name].timm_name, pretrained=False, num_classes=CLASSES).eval()
            randomise_batchnorm(model, torch)
            x = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
            with torch.no_grad():
                feats = model.forward_head(model.forward_features(torch.from_numpy(x)), pre_logits=True)
                logits = model.classifier(feats)
            cache[name] = (model, numpy_state(model), x, logits.numpy(), feats.numpy())
        return cache[name]

    return get


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2", "efficientnet_b0"])
def test_logits_match_timm(name, reference):
    _, state, x, logits, feats = reference(name)
    model = ours(name, state, num_classes=CLASSES)
    got_logits, got_feats = run(model, x.transpose(0, 2, 3, 1))
    assert_close(got_feats, feats, f"{name} features")
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
