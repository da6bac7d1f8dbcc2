"""Our published InceptionV3 against timm's ``inception_v3`` (random weights, nothing downloaded).

timm is built with ``aux_logits=True`` so its state dict has the ``AuxLogits.*`` tensors the
torchvision-ported checkpoint carries (its forward then skips the aux head, which needs larger
inputs than these); our model drops the auxiliary head, and the import refuses
those tensors unless the entry's ``skip_prefixes`` drop them. ``conftest.randomise`` gives every
BatchNorm a random affine and the running statistics of a calibration batch, so eval-mode BN
is neither the identity nor the test batch's statistics; the biases are random too.
Ours is built abstractly (``nnx.eval_shape``) and filled by the converter (no random init of the
published size); the other-channel-count tests give their abstract model a real fresh classifier,
which must survive the import. Forwards are jitted (one compile beats eager's per-op compiles here). Inputs
are 75x75, the least the model takes.
Tolerance: max |ours - timm| <= 1e-4 on logits of unit scale (asserted), float32.
"""
import dataclasses

import numpy as np
import pytest
from flax import nnx

from jaxaudio.convert.timm import load_timm, timm_to_nnx
from jaxaudio.errors import CheckpointError
from jaxaudio.models.cnn_zoo import inception
from tests.convert.conftest import assert_close, logits_of, out_shape

NAME = "inception_v3"
ENTRY = inception.ENTRIES[NAME]
SIDE = 75
CLASSES = 10


@pytest.fixture(scope="module")
def reference(timm_reference):
    """timm built with ``aux_logits=True`` for the ``AuxLogits.*`` tensors; its forward_head skips
    the aux head (which needs inputs of >= 299)."""
    return timm_reference(NAME, side=SIDE, num_classes=CLASSES, aux_logits=True)


@pytest.fixture(scope="module")
def ours():
    cfg = dataclasses.replace(ENTRY.presets["published"], num_classes=CLASSES)
    return nnx.eval_shape(lambda: ENTRY.model(cfg, rngs=nnx.Rngs(0)))


def test_aux_logits_are_skipped_explicitly(reference, ours):
    assert any(k.startswith("AuxLogits.") for k in reference["state"])
    with pytest.raises(CheckpointError, match="AuxLogits"):
        timm_to_nnx(reference["state"], ours, rename=ENTRY.rename, classifier=ENTRY.classifier)


def test_logits_match_timm(reference, ours, tmp_path):
    """Through a checkpoint file with AuxLogits, as torchvision's: ``load_timm`` skips them (the
    entry's ``skip_prefixes``)."""
    path = tmp_path / "inception_v3.pth"
    reference["torch"].save(reference["model"].state_dict(), path)
    load_timm(str(path), "inception_v3", ours)
    got = np.asarray(logits_of(ours, reference["x"].transpose(0, 2, 3, 1)))
    want = reference["logits"]
    assert got.shape == (2, CLASSES)
    assert_close(got, want, "inception_v3 logits")


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
    ours.fc = nnx.Linear(2048, 7, rngs=nnx.Rngs(1))     # a real fresh head on the abstract body
    fresh = np.asarray(ours.fc.kernel.get_value()).copy()
    timm_to_nnx(reference["state"], ours, rename=ENTRY.rename, classifier=ENTRY.classifier,
                skip_prefixes=ENTRY.skip_prefixes)
    np.testing.assert_array_equal(ours.fc.kernel.get_value(), fresh)
    want = adapt_input_conv(channels, torch.from_numpy(reference["state"]["Conv2d_1a_3x3.conv.weight"])).numpy()
    np.testing.assert_allclose(ours.Conv2d_1a_3x3.conv.kernel.get_value(), want.transpose(2, 3, 1, 0),
                               rtol=1e-6, atol=1e-7)
    assert out_shape(ours, SIDE, channels) == (2, 7)
