"""The PMAM pre-training step on 8 simulated CPU devices: collective bytes against a closed form.

The closed form is built from the parameter tree, the sharding rules and the experiment
config, never from the HLO. Per device and step, over arrays of at least 1 KiB
(``study.SMALL_BYTES``; BatchNorm statistics, scalars and bias-sized gradients are left out on
both sides), as for the ViT in ``test_study.py``:

* DP: one all-reduce of the gradients, ``G``;
* FSDP (f devices): all-gather of the sharded parameters ``S`` (full size), gradients ``G``
  (XLA on CPU all-reduces and slices instead of reduce-scattering, so AR + RS is compared);
* DP x FSDP: also the all-reduce of each gradient shard over ``data``, ``S / f``.

Six things about PMAM's masked-audio-model step change ``G`` and add traffic:

1. Unread heads. ``mam_forward`` never reads the SED heads (``classifier``,
   ``at_class_head``); their gradients are constant zeros and nothing is reduced for them.
2. Relative positions. Each context block projects the ``2T - 1`` relative position
   encodings by ``linear_pos`` (no batch dimension). Its output's gradient is summed over the
   batch rows, and that ``(2T - 1, decoder_dim)`` sum is what XLA all-reduces; the kernel's
   gradient follows on every device. So ``(2T - 1) x decoder_dim`` floats replace the kernel.
3. Pool queries. The attention pools project a learned query (no batch dimension) by
   ``q_proj``: the ``(dim,)`` gradient of the projected query is reduced (under 1 KiB), not
   the kernel.
4. Sharded convolution kernels. A dense kernel is gathered once and the backward reuses it;
   a convolution kernel behind another layer is gathered a second time in the backward,
   because the input gradient convolves with the kernel flipped in space and with its
   features swapped, and XLA flips the local shard before gathering. The patch embedding
   reads the mel input (no gradient), so it is gathered once.
5. Random donor frames. ``replacement_plan`` draws frames from the whole global batch, so the
   step all-gathers the fused frames ``(B, T, decoder_dim)`` and all-reduces their gradient:
   ``B x T x decoder_dim`` floats each way (B the global batch), whenever n > 1.
6. Mixup partners. Pre-training mixes the whole batch with its pseudo labels (p 0.5, as the
   reference; the coin is traced, so both branches are in the program): each row's partner may
   live on another device, so the step all-gathers the log-mel input ``(B, T, n_mels)`` and the
   pseudo labels ``(B, T, K)``, inputs without gradients, whenever n > 1.

With the tiny preset's width of 64, only two parameters reach ``DEFAULT_MIN_SIZE`` (2**14
elements) and are sharded by FSDP: the patch embedding and the last CNN kernel.
"""
import re

import jax
import numpy as np
import pytest
from flax import nnx

from experiments import registry
from jaxaudio.scaling import study
from jaxaudio.train.mesh import make_mesh
from jaxaudio.train.optim import FROZEN, group_labels
from jaxaudio.train.sharding import param_shardings, path_to_str

TOLERANCE = 0.05
UNREAD_IN_PRETRAINING = r"^(classifier|at_class_head)/"
POSITION_PROJECTION = r"^context/blocks/\d+/attention/linear_pos/kernel$"
QUERY_PROJECTION = r"^(freq_pool|at_pool)/q_proj/kernel$"
INNER_CONV = r"^cnn/blocks/[1-9]\d*/conv/kernel$"  # convolutions whose input has a gradient
F32 = 4


def _case(name: str, preset: str = "tiny"):
    """A PMAM scaling case as ``run.py --mode=scale`` reaches it: through the System."""
    return registry.load("pmam").scaling_cases(preset)[name]()


@pytest.fixture(scope="module")
def case():
    return _case("pmam")


@pytest.fixture(scope="module")
def config():
    return registry.load_config("pmam", "tiny")


def _params(case):
    return nnx.state(nnx.eval_shape(case.model_fn), nnx.Param)


def closed_form(case, config, shape):
    """{'reduce': AR + RS bytes, 'all-gather': AG bytes} per device for mesh ``shape``."""
    n = int(np.prod(shape))
    if n == 1:
        return {"reduce": 0, "all-gather": 0}
    data, fsdp, _ = shape
    frames, dec = config.model.frames, config.model.decoder_dim
    mesh = make_mesh(*shape, devices=jax.devices()[:n])
    params = _params(case)
    shardings = jax.tree.leaves(param_shardings(params, mesh))
    g = s = s_shard = 0
    for (path, leaf), sharding in zip(jax.tree_util.tree_flatten_with_path(params)[0], shardings):
        name = path_to_str(path)
        size = int(np.prod(leaf.shape)) * leaf.dtype.itemsize
        if re.search(UNREAD_IN_PRETRAINING, name):
            continue
        reduced = size
        if re.search(POSITION_PROJECTION, name):
            reduced = (2 * frames - 1) * dec * F32
        elif re.search(QUERY_PROJECTION, name):
            reduced = leaf.shape[-1] * F32
        if reduced >= study.SMALL_BYTES:
            g += reduced
        if "fsdp" in sharding.spec and size >= study.SMALL_BYTES:
            s += size * (2 if re.search(INNER_CONV, name) else 1)
            if size // fsdp >= study.SMALL_BYTES:
                s_shard += size // fsdp
    batch = case.per_device_batch * data * fsdp
    donors = batch * frames * dec * F32
    mixup = batch * frames * (config.model.n_mels + config.model.n_prototypes) * F32 \
        if config.stages.pretrain.get("mixup_prob", 0.0) > 0 else 0
    reduce = g + donors + (s_shard if data > 1 and fsdp > 1 else 0)
    return {"reduce": reduce, "all-gather": s + donors + mixup}


def check(case, config, point):
    shape = (point["mesh"]["data"], point["mesh"]["fsdp"], point["mesh"]["tensor"])
    want = closed_form(case, config, shape)
    large = point["collective_bytes_large"]
    got = {"reduce": large["all-reduce"] + large["reduce-scatter"], "all-gather": large["all-gather"]}
    assert large["all-to-all"] == large["collective-permute"] == 0, point["strategy"]
    assert not point["unknown_trip_count"]
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=TOLERANCE), (point["strategy"], shape, key, got, want)


def test_pretraining_optimizer_freezes_only_the_unread_heads(case, config):
    """Pre-training trains every parameter it reads; the two SED heads it never reads are frozen
    (so weight decay leaves them alone), and they are the ones the closed form leaves out."""
    from experiments.pmam import system as pmam_system
    from experiments.pmam.system import UNUSED_IN_PRETRAINING

    p = config.stages.pretrain
    groups = [{"pattern": UNUSED_IN_PRETRAINING, "lr": 0.0}] + [{"pattern": pat, "lr": lr}
                                                              for _n, pat, lr, _wd in p.groups]
    # the groups the system's round1/pretrain stage builds are these: the extra frozen group first
    stage = {s.name: s for s in pmam_system.stages(config, "")}[pmam_system.pretrain_name(1)]
    assert [(g["pattern"], g["lr"]) for g in stage.groups] == [(g["pattern"], g["lr"]) for g in groups]
    assert stage.default_group["lr"] == p.lr
    labels = group_labels(_params(case), groups, {"lr": p.lr})
    frozen = {path_to_str(path) for path, label in jax.tree_util.tree_flatten_with_path(labels)[0] if label == FROZEN}
    assert frozen and all(re.search(UNREAD_IN_PRETRAINING, name) for name in frozen)
    unread = {path_to_str(path) for path, _ in jax.tree_util.tree_flatten_with_path(_params(case))[0]
              if re.search(UNREAD_IN_PRETRAINING, path_to_str(path))}
    assert frozen == unread


def test_sharded_parameters_are_the_two_largest_kernels(case, config):
    mesh = make_mesh(1, 8, 1, devices=jax.devices())
    params = _params(case)
    sharded = {path_to_str(path) for (path, _), sharding in
               zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(param_shardings(params, mesh)))
               if "fsdp" in sharding.spec}
    assert sharded == {"encoder/patch_embed/proj/kernel", "cnn/blocks/2/conv/kernel"}


def test_batch_spec_feeds_the_experiment_loss(case, config):
    """The batch the study lowers with is what ``pretrain_loss_fn`` reads (shapes only, no compile)."""
    batch = {k: jax.ShapeDtypeStruct(shape, dtype) for k, (shape, dtype) in case.batch_spec(4).items()}
    assert batch["gamma"].shape == (4, config.model.frames, config.model.n_prototypes)
    loss, aux = jax.eval_shape(lambda b: case.loss_fn_for(4)(case.model_fn(), b, jax.random.key(0), None, 0), batch)
    assert loss.shape == () and "masked_top1" in aux


def test_dp_fsdp_at_8_matches_closed_form(case, config):
    """One mesh that exercises every term: data 2 x fsdp 4."""
    point, _ = study.compile_point(case, (2, 4, 1), jax.devices(), compiler_options=study.FAST_CPU_COMPILE)
    point["strategy"] = "dp_fsdp"
    check(case, config, point)
    assert point["collective_bytes_large"]["all-gather"] > 0


@pytest.mark.slow
def test_full_sweep_matches_closed_form(case, config):
    """1/2/4/8 devices x DP/FSDP/DPxFSDP (9 distinct meshes)."""
    result = study.run_study("pmam", [1, 2, 4, 8], ["dp", "fsdp", "dp_fsdp"], case=case, accelerator_names=["v5e"],
                             compiler_options=study.FAST_CPU_COMPILE)
    assert len(result["points"]) == 12
    for point in result["points"]:
        check(case, config, point)


@pytest.mark.slow
def test_fast_compile_keeps_the_program(case):
    """FAST_CPU_COMPILE changes code generation only: same collectives, FLOPs and memory."""
    fast, _ = study.compile_point(case, (8, 1, 1), jax.devices(), compiler_options=study.FAST_CPU_COMPILE)
    full, _ = study.compile_point(case, (8, 1, 1), jax.devices())
    for key in ("collective_bytes", "flops", "bytes_accessed", "memory"):
        assert fast[key] == full[key], key


@pytest.mark.slow
def test_finetune_case_compiles_with_a_teacher():
    case = _case("pmam_finetune")
    point, _ = study.compile_point(case, (8, 1, 1), jax.devices(), compiler_options=study.FAST_CPU_COMPILE)
    assert point["global_batch"] == 32 and point["flops"] > 0
    assert point["collective_bytes_large"]["all-reduce"] > 0
