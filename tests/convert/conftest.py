"""What the zoo's timm parity tests share: a randomisation that keeps a deep random net's logits
near unit scale, so that ``max |ours - timm| <= 1e-4`` is an absolute check on the logits.

timm's own init leaves eval-mode BatchNorm nearly the identity (running mean 0, variance 1), zeroes
some norms and biases (which would hide a wrong mapping) and lets the activations of a 50-block net
grow to 1e7. Here every BatchNorm gets a random affine and the running statistics of a calibration
batch (the 2 test images among 14 others), so eval-mode BN is neither the identity nor the test
batch's own statistics, yet each norm's output stays near unit scale; LayerNorms, layer scales and
biases are drawn at random (BatchNorm shifts positive, and the norm ending each residual branch
small: both keep float32 rounding error from growing with depth); the classifier is drawn with
variance 1 / fan_in, which carries unit-scale features into unit-scale logits. (Perturbing the
calibrated statistics as well compounds over InceptionV3's 94 norms into logits of 40.)

Logits are compared with an absolute 1e-4 and their scale is asserted to be near 1; the pooled
features (ResNet-50's residual stream is not normalised before pooling) are compared relative to
their scale.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

SIDE = 64
# The logits' scale where an absolute 1e-4 means what it says (float32 carries about 7 digits).
LOGIT_SCALE = (0.3, 30.0)
# The norm that ends each residual branch, by timm model: drawn 4x smaller, as timm zero-inits it,
# else each block doubles the float32 rounding error (ResNet-50: 1.3e-4 on the logits against
# float64 in timm itself; 4e-7 with it).
BRANCH_END_NORMS = {"resnet50": "bn3"}


def numpy_state(model):
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


def images(count=2, side=SIDE, channels=3, seed=0):
    """The test batch, NCHW float32 (the same for every member of the zoo)."""
    return np.random.default_rng(seed).normal(size=(count, channels, side, side)).astype(np.float32)


def randomise(torch, model, x, seed=0, calibration_size=16, branch_end=None):
    """Randomise ``model`` in place (see the module docstring) and leave it in eval mode. ``x``
    (NCHW numpy) is part of the calibration batch, so the test images see statistics of their
    own distribution."""
    g = torch.Generator().manual_seed(seed)
    extra = torch.randn((calibration_size - len(x),) + tuple(x.shape[1:]), generator=g)
    calibration = torch.cat([torch.from_numpy(x), extra])
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    classifier = model.get_classifier()
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "gamma" or (leaf == "weight" and p.ndim == 1):   # layer scale, norm weight
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            elif leaf == "bias":
                p.copy_(0.4 * torch.rand(p.shape, generator=g) - 0.2)
        for bn in norms:    # a positive shift keeps most units past the ReLU: InceptionV3's error
            bn.bias.copy_(0.5 + 0.5 * torch.rand(bn.bias.shape, generator=g))   # 2.7e-4 -> 1.5e-5
        for name, bn in model.named_modules():
            if branch_end and name.endswith(branch_end):
                bn.weight.mul_(0.25)
                bn.bias.mul_(0.25)
        fan_in = classifier.weight[0].numel()
        classifier.weight.copy_(torch.randn(classifier.weight.shape, generator=g) / fan_in ** 0.5)
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None          # cumulative average: the calibration batch's statistics
        model.train()
        model(calibration)
        for bn in norms:
            bn.momentum = 0.1
    return model.eval()


@nnx.jit
def logits_of(model, x):
    """Eval-mode logits, one compiled program (beats eager's per-op compiles at the published size)."""
    return model(x, train=False)


def out_shape(model, side, channels):
    """The logits' shape for a batch of 2, from shapes only (no forward computed)."""
    graphdef, state = nnx.split(model)
    x = jax.ShapeDtypeStruct((2, side, side, channels), jnp.float32)
    return jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, train=False), state, x).shape


def _errors(got, want, what):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    err, scale = float(np.abs(got - want).max()), float(np.abs(want).max())
    print(f"{what}: max abs err {err:.2e}, output scale {scale:.3g}")
    return err, scale


def assert_close(got, want, what, atol=1e-4):
    """Logits: absolute tolerance, on a reference of unit scale (asserted, so a randomisation that
    blows the logits up cannot pass as a loose check)."""
    err, scale = _errors(got, want, what)
    assert LOGIT_SCALE[0] <= scale <= LOGIT_SCALE[1], f"{what}: reference output scale {scale:.3g} is not near 1"
    assert err <= atol, f"{what}: max abs error {err:.3g} (tolerance {atol:g})"


def assert_features_close(got, want, what, rtol=1e-4):
    """Pooled features: ``rtol`` times their scale (at least 1)."""
    err, scale = _errors(got, want, what)
    assert err <= rtol * max(1.0, scale), f"{what}: max abs error {err:.3g} at output scale {scale:.3g}"


@pytest.fixture(scope="module")
def timm_reference(require_reference):
    """``timm_reference(timm_name, side=64, **create_kwargs)`` -> dict with the randomised eval-mode
    model, its numpy state dict, the NCHW images, the logits and the pooled pre-logits features.
    Cached per module."""
    timm, torch = require_reference("timm"), require_reference("torch")
    cache = {}

    def get(timm_name, side=SIDE, **kwargs):
        key = (timm_name, side, tuple(sorted(kwargs.items())))
        if key not in cache:
            torch.manual_seed(0)
            model = timm.create_model(timm_name, pretrained=False, **kwargs)
            if getattr(model, "aux_logits", False):
                model.aux_logits = False    # InceptionV3: keep AuxLogits' tensors, skip its forward (needs >= 299 px)
            x = images(side=side)
            randomise(torch, model, x, branch_end=BRANCH_END_NORMS.get(timm_name))
            with torch.no_grad():
                trunk = model.forward_features(torch.from_numpy(x))
                feats = model.forward_head(trunk, pre_logits=True)
                logits = model.forward_head(trunk)
            cache[key] = {"torch": torch, "model": model, "state": numpy_state(model), "x": x,
                          "logits": logits.numpy(), "features": feats.reshape(len(x), -1).numpy()}
        return cache[key]

    return get
