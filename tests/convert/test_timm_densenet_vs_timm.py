"""Our published DenseNet-121 against timm's ``densenet121`` (random weights, nothing downloaded).

timm's norms are ``BatchNormAct2d`` (BatchNorm + ReLU in one module, a ``BatchNorm2d`` subclass);
their tensors keep the norm's name, which our ``nnx.BatchNorm`` attributes carry (timm's
``features`` prefix is our ``trunk``: ``ZooEntry.rename``). ``conftest.randomise`` gives every
BatchNorm a random affine and the running statistics of a calibration batch, so eval-mode BN
is neither the identity nor the test batch's statistics; the biases are random too.
Ours is built abstractly (``nnx.eval_shape``) and filled by the converter (no random init of the
published size); the other-channel-count tests give their abstract model a real fresh classifier,
which must survive the import. Forwards are jitted (one compile beats eager's per-op compiles here). Inputs are 64x64.
Tolerance: max |ours - timm| <= 1e-4 on logits of unit scale (asserted), float32.
"""
import dataclasses

import numpy as np
import pytest
from flax import nnx

from jaxaudio.convert.timm import timm_to_nnx
from jaxaudio.models.cnn_zoo import densenet
from tests.convert.conftest import assert_close, logits_of, out_shape

NAME = "densenet121"
ENTRY = densenet.ENTRIES[NAME]
SIDE = 64
CLASSES = 10


@pytest.fixture(scope="module")
def reference(timm_reference):
    return timm_reference(NAME, side=SIDE, num_classes=CLASSES)


def test_logits_match_timm(reference):
    cfg = dataclasses.replace(ENTRY.presets["published"], num_classes=CLASSES)
    ours = nnx.eval_shape(lambda: ENTRY.model(cfg, rngs=nnx.Rngs(0)))
    timm_to_nnx(reference["state"], ours, rename=ENTRY.rename, classifier=ENTRY.classifier)
    got = np.asarray(logits_of(ours, reference["x"].transpose(0, 2, 3, 1)))
    want = reference["logits"]
    assert got.shape == (2, CLASSES)
    assert_close(got, want, "densenet121 logits")


@pytest.mark.parametrize("channels", [1, 2])
def test_other_channel_count_and_fresh_classifier(reference, channels):
    """A 3-channel checkpoint into a {1, 2}-channel, 7-class model: the stem kernel is timm's own
    ``adapt_input_conv`` of the RGB kernel (summed for 1 channel, repeated and scaled by 3 / 2 for
    2), the classifier keeps its fresh init. The rest of the network is the checkpoint's, which
    ``test_logits_match_timm`` checks end to end; so no second forward here."""
    torch = reference["torch"]
    from timm.models import adapt_input_conv

    cfg = dataclasses.replace(ENTRY.presets["published"], num_classes=7, in_channels=channels)
    ours = nnx.eval_shape(lambda: ENTRY.model(cfg, rngs=nnx.Rngs(1)))
    ours.classifier = nnx.Linear(1024, 7, rngs=nnx.Rngs(1))     # a real fresh head on the abstract body
    fresh = np.asarray(ours.classifier.kernel.get_value()).copy()
    timm_to_nnx(reference["state"], ours, rename=ENTRY.rename, classifier=ENTRY.classifier)
    np.testing.assert_array_equal(ours.classifier.kernel.get_value(), fresh)
    want = adapt_input_conv(channels, torch.from_numpy(reference["state"]["features.conv0.weight"])).numpy()
    np.testing.assert_allclose(ours.trunk.conv0.kernel.get_value(), want.transpose(2, 3, 1, 0), rtol=1e-6, atol=1e-7)
    assert out_shape(ours, SIDE, channels) == (2, 7)
