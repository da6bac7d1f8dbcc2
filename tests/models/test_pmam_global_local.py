"""PMAM with global-local fusion: the PaSST branch is mixed with its own windowed encodings, and
nothing else changes (the CNN and AT branches see the whole clip, as in the reference).

The reference loop is written here from the recipe (windows of ``window`` mel frames at
``range(0, T + step - window, step)``, cut at the clip's end, each placed at its start frame,
overlap-averaged, frames no window reaches 0, then 0.5 local + 0.5 global); it calls the
model's own PaSST branch once per window.
"""
import dataclasses

import jax
import numpy as np
from flax import nnx

from jaxaudio.models.pmam import PMAM, TINY
from jaxaudio.nn.global_local import GlobalLocal

SHORT = dataclasses.replace(TINY, vit=dataclasses.replace(TINY.vit, max_frames=198), pred_len=200)


def test_the_passt_branch_is_fused_with_its_windows_and_nothing_else_changes():
    model = PMAM(SHORT, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    mel = jax.random.normal(jax.random.key(1), (2, 200, 128))

    def encode(sliding):
        return jax.jit(lambda s, x: nnx.merge(graphdef, s).encode(x, train=False, sliding=sliding))(state, mel)

    def branch(window):
        return jax.jit(lambda s, x: nnx.merge(graphdef, s)._passt_frames(x, train=False, rngs=None,
                                                                         pad_to=None)[0])(state, window)

    whole = encode(None)
    np.testing.assert_array_equal(np.asarray(encode(GlobalLocal(200, 31))["fused"]), np.asarray(whole["fused"]))

    window, step = 100, 30
    fused = encode(GlobalLocal(window, step))
    acc = np.zeros(whole["passt_frames"].shape)
    count = np.zeros(acc.shape[1])
    for start in range(0, 200 + step - window, step):  # 0, 30, 60, 90, 120 (the last cut to 80 frames)
        out = np.asarray(branch(mel[:, start:start + window]))
        acc[:, start:start + out.shape[1]] += out
        count[start:start + out.shape[1]] += 1
    # each window of 100 frames gives 9 patch columns = 90 frames: frame 100 is in the windows at 30, 60
    # and 90, frame 150 in those at 90 and 120; the last (120..200, 7 columns) ends at frame 190, so the last
    # 10 frames get none
    assert count[0] == 1 and count[100] == 3 and count[150] == 2 and count[189] == 1 and count[-1] == 0
    local = acc / np.maximum(count, 1)[None, :, None]
    expected = 0.5 * local + 0.5 * np.asarray(whole["passt_frames"])
    np.testing.assert_allclose(np.asarray(fused["passt_frames"]), expected, atol=1e-5)
    assert np.abs(expected - np.asarray(whole["passt_frames"])).max() > 1e-2  # the windows do change it

    np.testing.assert_array_equal(np.asarray(fused["passt_final"]), np.asarray(whole["passt_final"]))
    projected = jax.jit(lambda s, x: nnx.merge(graphdef, s).passt_proj(x))
    delta = projected(state, fused["passt_frames"]) - projected(state, whole["passt_frames"])
    np.testing.assert_allclose(np.asarray(fused["fused"] - whole["fused"]), np.asarray(delta), atol=1e-5)
