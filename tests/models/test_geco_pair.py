"""GeCoPair: each row reconstructed by its own machine type's PAE, the routed (one-PAE-cost) way
equal to running every PAE over every row and keeping each row's own."""
import jax
import numpy as np
from flax import nnx

from jaxaudio.models.geco import GeCoConfig
from jaxaudio.models.geco_pair import GeCoPair, GeCoPairConfig
from jaxaudio.models.pae import PAE, PAEConfig


def _pair(cfg: GeCoPairConfig) -> GeCoPair:
    """A GeCoPair whose PAEs are real (each its own init) and whose extractor is left out: the
    routing never touches the extractor, and building it eagerly costs most of a test's time."""
    pair = nnx.eval_shape(lambda: GeCoPair(cfg, rngs=nnx.Rngs(0)))
    pair.paes = nnx.List([PAE(cfg.pae, rngs=nnx.Rngs(k)) for k in range(cfg.n_types)])
    pair.net = nnx.List([])   # no shapes-only leaves, so nnx.jit can take the pair
    return pair


def test_routed_reconstruction_equals_every_pae_over_every_row():
    net = GeCoConfig(n_classes=5)
    cfg = GeCoPairConfig(net=net, pae=PAEConfig(n_mels=net.n_mels, dim=16, layers=1, heads=2),
                         class_types=(0, 0, 1, 2, 2))
    pair = _pair(cfg)
    mel = jax.random.normal(jax.random.key(1), (6, 12, net.n_mels))
    class_id = np.array([4, 0, 2, 1, 3, 2])
    # jitted: op by op, the attention layers take most of the test's time
    routed = np.asarray(nnx.jit(lambda m, x: m.reconstruct(x, class_id))(pair, mel))
    plain = np.asarray(nnx.jit(lambda m, x: m.reconstruct_every_pae(x, class_id))(pair, mel))
    np.testing.assert_allclose(routed, plain, atol=1e-5)
    # the PAEs differ, so the routing matters: row 0 (type 2) is not what type 0's PAE gives
    assert not np.allclose(routed[0], np.asarray(pair.paes[0](mel[:1], train=False))[0], atol=1e-3)


def test_routed_pae_loss_and_its_gradient_equal_each_pae_on_its_own_rows():
    from jaxaudio.models.machine_types import own_rows_mean
    from jaxaudio.models.pae import prediction_error

    net = GeCoConfig(n_classes=4)
    cfg = GeCoPairConfig(net=net, pae=PAEConfig(n_mels=net.n_mels, dim=16, layers=1, heads=2),
                         class_types=(0, 1, 1, 2))
    pair = _pair(cfg)
    mel = jax.random.normal(jax.random.key(2), (5, 10, net.n_mels))
    class_id = np.array([1, 2, 0, 3, 1])

    def plain(paes):
        types = pair.row_types(class_id)
        return sum(own_rows_mean(prediction_error(p(mel, train=True), mel), types, k) for k, p in enumerate(paes))

    got, grads = nnx.jit(nnx.value_and_grad(lambda m: m.pae_loss(mel, class_id, train=True)))(pair)
    want, want_grads = nnx.jit(nnx.value_and_grad(plain))(pair.paes)
    assert abs(float(got) - float(want)) < 1e-5
    for k in range(3):
        g = jax.tree.leaves(grads["paes"][k])
        w = jax.tree.leaves(want_grads[k])
        assert len(g) == len(w)
        for a, b in zip(g, w):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
