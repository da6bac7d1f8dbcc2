"""The study on 8 simulated CPU devices: collective bytes against closed forms.

Closed forms come from the parameter tree and the sharding rules (``param_shardings``),
never from the HLO. Per device, per step, counting only arrays of at least 1 KiB (scalar
losses and tiny statistics that XLA's combiner merges into the gradient reduction are left
out on both sides; ``study.SMALL_BYTES``):

* data-parallel: one all-reduce of every gradient, ``G`` bytes.
* FSDP (f devices): each sharded parameter gathered once (XLA keeps the forward gathers
  for the backward), ``S`` bytes (full size); gradients reduce-scattered (sharded params)
  or all-reduced (replicated ones): ``G``. XLA's CPU pipeline does not form reduce-scatter,
  it all-reduces and slices, so AR + RS is compared with ``G``.
* DP x FSDP (d x f): as FSDP, plus the all-reduce of each gradient *shard* over ``data``:
  AR + RS = ``G + S / f``.
"""
import jax
import numpy as np
import pytest
from flax import nnx

from jaxaudio.scaling import report, study
from jaxaudio.train.mesh import make_mesh
from jaxaudio.train.sharding import param_shardings, path_to_str

TOLERANCE = 0.05


def param_bytes(case, shape):
    """(G, S, S_shard) in bytes over parameters of >= SMALL_BYTES; S_shard sums the 1/f shards >= SMALL_BYTES."""
    n = int(np.prod(shape))
    mesh = make_mesh(*shape, devices=jax.devices()[:n])
    params = nnx.state(nnx.eval_shape(case.model_fn), nnx.Param)
    shardings = param_shardings(params, mesh)
    f = shape[1]
    g = s = s_shard = 0
    for leaf, sharding in zip(jax.tree.leaves(params), jax.tree.leaves(shardings)):
        size = int(np.prod(leaf.shape)) * leaf.dtype.itemsize
        if size >= study.SMALL_BYTES:
            g += size
            if "fsdp" in sharding.spec:
                s += size
                if size // f >= study.SMALL_BYTES:
                    s_shard += size // f
    return g, s, s_shard


def expected(case, strategy, n):
    shape = study.mesh_shape(strategy, n)
    g, s, s_shard = param_bytes(case, shape)
    if n == 1:
        return {"reduce": 0, "all-gather": 0}
    if shape[1] == 1:
        return {"reduce": g, "all-gather": 0}
    return {"reduce": g + (s_shard if shape[0] > 1 else 0), "all-gather": s}


def measured(point):
    large = point["collective_bytes_large"]
    return {"reduce": large["all-reduce"] + large["reduce-scatter"], "all-gather": large["all-gather"],
            "other": large["all-to-all"] + large["collective-permute"]}


def check(case, point):
    want = expected(case, point["strategy"], point["devices"])
    got = measured(point)
    assert got["other"] == 0, point["strategy"]
    for key in ("reduce", "all-gather"):
        assert got[key] == pytest.approx(want[key], rel=TOLERANCE), (point["strategy"], point["devices"], key, got,
                                                                     want)


@pytest.fixture(scope="module")
def vit_result():
    return study.run_study("vit", [8], ["dp", "fsdp"], accelerator_names=["v5e", "h100"])


def test_vit_sharded_state_is_what_the_closed_form_assumes(vit_result):
    case = study.get_case("vit")
    g, s, _ = param_bytes(case, (1, 8, 1))
    assert s > 0.9 * g  # the MLP and q/k/v kernels (most bytes) are sharded, so FSDP is a real test
    point = vit_result["points"][0]
    assert point["param_bytes"] == pytest.approx(g, rel=0.01)


def test_vit_collectives_match_closed_form_at_8(vit_result):
    case = study.get_case("vit")
    for point in vit_result["points"]:
        check(case, point)
        assert not point["unknown_trip_count"]


def test_vit_study_figures(vit_result, tmp_path):
    dp, fsdp = vit_result["points"]
    assert (dp["strategy"], fsdp["strategy"]) == ("dp", "fsdp")
    assert dp["global_batch"] == fsdp["global_batch"] == 8 * 4
    assert dp["flops"] > 0 and dp["measured_step_s"] is None  # CPU: compiled, not timed
    # FSDP holds 1/8 of the sharded parameters and their Adam moments per device
    assert fsdp["memory"]["argument"] < 0.5 * dp["memory"]["argument"]
    for point in (dp, fsdp):
        pred = point["predicted"]["v5e"]
        assert pred["step_s"] == pytest.approx(max(pred["compute_s"], pred["memory_s"]) + pred["comm_s"])
        assert pred["throughput"] == pytest.approx(point["global_batch"] / pred["step_s"])
    paths = report.write(vit_result, str(tmp_path), "scaling_test")
    assert (tmp_path / "scaling_test.png").stat().st_size > 10_000
    assert "| dp | 8 | 8,1,1 | 32 |" in open(paths["md"]).read()


def test_timed_point_runs_the_compiled_step():
    """What real accelerators do (time_steps > 0), here on one CPU device: the AOT-compiled step
    runs on a real state and batch."""
    point, _ = study.compile_point(study.get_case("vit"), (1, 1, 1), jax.devices()[:1], time_steps=1,
                                   compiler_options=study.FAST_CPU_COMPILE)
    assert point["measured_step_s"] > 0


def test_mesh_shapes():
    assert study.mesh_shape("dp", 8) == (8, 1, 1)
    assert study.mesh_shape("fsdp", 4) == (1, 4, 1)
    assert study.mesh_shape("dp_fsdp", 8) == (2, 4, 1)
    assert study.mesh_shape("dp_fsdp", 2) == (1, 2, 1)
    assert study.mesh_shape("tp", 4) == (1, 1, 4)


@pytest.mark.slow
def test_vit_full_sweep_matches_closed_form():
    """1/2/4/8 x DP/FSDP/DPxFSDP. At 2 devices XLA's partitioner keeps the MLP kernels
    sharded and moves activations instead (cheaper there: 2x47x512 floats per device
    against a 128x512 kernel), so FSDP on 2 devices is not the weight-gathering closed form."""
    case = study.get_case("vit")
    result = study.run_study("vit", [1, 2, 4, 8], ["dp", "fsdp", "dp_fsdp"], case=case, accelerator_names=["v5e"])
    for point in result["points"]:
        if point["devices"] == 2 and point["strategy"] != "dp":
            continue
        check(case, point)


@pytest.mark.slow
def test_crnn_data_parallel_counts_the_recurrent_gradient_per_time_step():
    """CRNN (tiny preset, mixup off so no activations cross devices), 8-way data parallel.

    The GRU's recurrent weights (w_hh, b_hh) get their gradient all-reduced *inside* the
    backward scan, once per time step, and not again after it; every other gradient once:
    closed form (G - R) + T x R, with T the CRNN's output frames.
    """
    from experiments.crnn import config as crnn_config, system as crnn_system
    from experiments.crnn.scaling import crnn_case

    case = crnn_case("tiny", mixup=False)
    config = crnn_config.get_config("tiny")
    fe, mcfg = crnn_system.frontend_config(config), crnn_system.model_config(config)
    frames = mcfg.cnn.output_frames(fe.num_frames(int(config.data.clip_seconds * config.data.sample_rate)))
    params = nnx.state(nnx.eval_shape(case.model_fn), nnx.Param)
    g = r = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        size = int(np.prod(leaf.shape)) * leaf.dtype.itemsize
        if size < study.SMALL_BYTES:
            continue
        g += size
        if path_to_str(path).split("/")[-1] in ("w_hh", "b_hh"):
            r += size
    point, _ = study.compile_point(case, (8, 1, 1), jax.devices())
    got = point["collective_bytes_large"]
    assert got["all-gather"] == got["all-to-all"] == got["collective-permute"] == 0
    assert got["all-reduce"] == pytest.approx(g - r + frames * r, rel=TOLERANCE)
