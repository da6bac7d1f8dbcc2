"""Data-parallel, FSDP and mixed layouts train exactly like one device (8 simulated CPUs).

Same model, same data, same optimizer: only the mesh changes, so any difference beyond
float32 reduction-order noise would be a sharding bug (a missing all-reduce, a batch
statistic computed per shard, an optimizer moment on the wrong layout).
"""
import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest


def _helper():
    """Load tests/train/tiny_training.py once (tests are not a package)."""
    if "tiny_training" not in sys.modules:
        spec = importlib.util.spec_from_file_location("tiny_training", Path(__file__).with_name("tiny_training.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules["tiny_training"] = module
        spec.loader.exec_module(module)
    return sys.modules["tiny_training"]


tt = _helper()

SINGLE = (1, 1, 1)
LAYOUTS = {"dp8": (8, 1, 1), "fsdp8": (1, 8, 1), "dp4_fsdp2": (4, 2, 1)}
# A leaf whose exact gradient is zero holds only rounding noise, which Adam scales to +-lr:
# its value is arbitrary in every layout. Softmax ignores a bias shared by all keys;
# BatchNorm cancels the bias of the conv before it.
GRADIENT_FREE = {
    "transformer": r"attention/key/bias$",
    "cnn_bn": None,
    "crnn": r"^cnn/blocks/\d+/conv/bias$",
}
LOSS_RTOL = 1e-5
# Params: the same 1e-5 relative bound, with an absolute floor of 1e-6 for entries near
# zero (a thousandth of one step's update at lr 1e-3).
PARAM_RTOL, PARAM_ATOL = 1e-5, 1e-6


def _assert_same_training(case, result, reference):
    np.testing.assert_allclose(result["losses"], reference["losses"], rtol=LOSS_RTOL, atol=0)
    assert result["params"].keys() == reference["params"].keys()
    for path, value in reference["params"].items():
        if GRADIENT_FREE[case] and re.search(GRADIENT_FREE[case], path):
            continue
        np.testing.assert_allclose(result["params"][path], value, rtol=PARAM_RTOL, atol=PARAM_ATOL, err_msg=path)


@pytest.mark.parametrize("case", sorted(tt.MODEL_CASES))
def test_layouts_match_single_device(case):
    reference = tt.run_cached(case, SINGLE)
    assert reference["traces"] == 1  # one compile for all steps
    losses = reference["losses"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]  # it does learn
    for name, shape in LAYOUTS.items():
        result = tt.run_cached(case, shape)
        assert result["traces"] == 1, name
        _assert_same_training(case, result, reference)


@pytest.mark.parametrize("case", sorted(tt.MODEL_CASES))
def test_fsdp_actually_shards_big_params(case):
    """The size floor lets the MLP/dense kernels through: each device holds 1/8 of them,
    and so do their Adam moments; small params stay whole."""
    import jax

    from jaxaudio.train.sharding import path_to_str

    result = tt.run_cached(case, LAYOUTS["fsdp8"])
    params = {path_to_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(result["state"].params)[0]}
    for path in tt.MODEL_CASES[case].fsdp_sharded:
        array = params[path]
        assert "fsdp" in array.sharding.spec, path
        assert array.addressable_shards[0].data.size * 8 == array.size, path
    small = [v for p, v in params.items() if v.size < 2**14]
    assert small and all(v.sharding.is_fully_replicated for v in small)

    moments = [
        (path_to_str(p), v)
        for p, v in jax.tree_util.tree_flatten_with_path(result["state"].opt_state)[0]
        if path_to_str(p).endswith(tt.MODEL_CASES[case].fsdp_sharded[0])
    ]
    assert len(moments) == 2  # Adam's mu and nu
    for path, moment in moments:
        assert moment.addressable_shards[0].data.size * 8 == moment.size, path


@pytest.mark.slow
def test_tensor_parallel_matches_single_device():
    """DP2 x FSDP2 x TP2: the q/k/v/MLP kernels split over 'tensor' too."""
    reference = tt.run_cached("transformer", SINGLE)
    result = tt.run_cached("transformer", (2, 2, 2))
    spec = result["shardings"].params["encoder"]["layers"][0]["mlp"]["fc_in"]["kernel"].spec
    assert "tensor" in spec
    _assert_same_training("transformer", result, reference)


@pytest.mark.slow
def test_crnn_layouts_match_single_device():
    """The DCASE CRNN baseline (BatchNorm, BiGRU scan, attention pooling, dropout, teacher)."""
    pytest.importorskip("jaxaudio.models.crnn")
    reference = tt.run_cached("crnn", SINGLE)
    for name, shape in LAYOUTS.items():
        result = tt.run_cached("crnn", shape)
        assert result["traces"] == 1, name
        _assert_same_training("crnn", result, reference)
