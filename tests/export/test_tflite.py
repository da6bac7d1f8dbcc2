"""TFLite export of a CRNN workdir, run in the LiteRT interpreter.

The workdir is built directly (random-init state saved with the Checkpointer, 2 s clips of the
small synthetic set) so the four conversions stay fast. References: the float32 model must
match the *training-time* JAX path (features.log_mel + scan GRU), which shares no export code.
"""
import json
import os

import jax
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

from flax import nnx  # noqa: E402

from experiments.configs.crnn import get_config  # noqa: E402
from experiments.systems.crnn import frontend_config, make_tx, model_config  # noqa: E402
from jaxaudio.audio import features  # noqa: E402
from jaxaudio.export import FORMATS, export_model, load_inference_model  # noqa: E402
from jaxaudio.export.report import measure, model_facts  # noqa: E402
from jaxaudio.export.verify import run_tflite, verify  # noqa: E402
from jaxaudio.models.crnn import CRNN  # noqa: E402
from jaxaudio.train.checkpoint import Checkpointer  # noqa: E402
from jaxaudio.train.state import create_train_state  # noqa: E402

CUSTOM_OPCODE = 32  # BuiltinOperator.CUSTOM in the TFLite schema (Flex ops are custom ops)


def make_workdir(root, synth_dir):
    config = get_config("tiny")
    config.data.synth_dir = str(synth_dir)
    config.data.synth_preset = "small"
    config.data.clip_seconds = 2.0
    config.model.rnn_hidden = 32
    workdir = os.path.join(root, "w")
    os.makedirs(workdir)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump({"exp": "crnn", "preset": "tiny", "config": json.loads(config.to_json())}, f)
    model = CRNN(model_config(config), rngs=nnx.Rngs(3))
    _, state = create_train_state(model, make_tx(config), jax.random.key(0), with_teacher=True)
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
    checkpointer.save(1, state)
    checkpointer.close()
    return workdir, config, state


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    workdir, config, state = make_workdir(str(root), root / "synth")
    model = load_inference_model(workdir)
    written = export_model(model, FORMATS, str(root / "out"), calibration_clips=4)
    variants = {fmt: item["bytes"] for fmt, item in written.items()}
    checks = verify(model, variants, max_clips=4)
    return {"model": model, "config": config, "state": state, "written": written, "variants": variants,
            "checks": checks}


def training_path_outputs(config, state, waveforms):
    """The CRNN as the runner evaluates it: stored-DFT log-mel, lax.scan GRU, teacher weights."""
    fe = frontend_config(config)
    model = CRNN(model_config(config), rngs=nnx.Rngs(0))
    graphdef, _, _ = nnx.split(model, nnx.Param, ...)
    teacher = nnx.merge(graphdef, state.teacher["params"], state.teacher["model_state"])
    out = teacher(features.log_mel(waveforms, fe), train=False)
    return {k: np.asarray(v) for k, v in out.items()}


def test_float32_matches_training_path_within_1e4(exported):
    held = exported["model"].held_out(4)
    reference = training_path_outputs(exported["config"], exported["state"], held.waveforms)
    got = run_tflite(exported["variants"]["float32"], held.waveforms)
    assert got["strong"].shape == reference["strong"].shape == (4, exported["model"].frame_timestamps.size - 1, 10)
    for key in ("strong", "weak"):
        np.testing.assert_allclose(got[key], reference[key], atol=1e-4, rtol=0)
    assert exported["checks"]["variants"]["float32"]["max_abs"] < 1e-4
    assert exported["checks"]["variants"]["float32"]["frame_agreement"] == 1.0


def constant_bytes(data: bytes) -> int:
    """Bytes of weights and other constants stored in a .tflite file (its buffers)."""
    from tensorflow.lite.tools import flatbuffer_utils

    flat = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    return sum(len(b.data) for b in flat.buffers if b.data is not None)


def test_int8_keeps_metric(exported):
    assert exported["checks"]["variants"]["int8"]["psds1_delta"] >= -0.02


def test_int8_weights_are_at_most_035_of_float32(exported):
    assert constant_bytes(exported["variants"]["int8"]) <= 0.35 * constant_bytes(exported["variants"]["float32"])


def test_int8_file_is_at_most_035_of_float32(exported):
    assert len(exported["variants"]["int8"]) <= 0.35 * len(exported["variants"]["float32"])


def test_variants_are_builtin_only(exported):
    from tensorflow.lite.tools import flatbuffer_utils

    for fmt, data in exported["variants"].items():
        flat = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
        codes = {max(c.builtinCode, c.deprecatedBuiltinCode) for c in flat.operatorCodes}
        assert CUSTOM_OPCODE not in codes, fmt
        facts = model_facts(data)
        assert facts["builtin_only"] and not facts["non_builtin_ops"], fmt
        # The GRU is one builtin WHILE per layer (its step a subgraph), not ~20 ops per frame.
        assert facts["ops"].get("WHILE") == exported["config"].model.rnn_layers, fmt
        assert facts["op_count"] < 200, fmt


def float_constants(data: bytes) -> dict[tuple, int]:
    """{(subgraph, shape): bytes} of the float32 constants of a .tflite file."""
    from tensorflow.lite.tools import flatbuffer_utils

    flat = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    out = {}
    for g, graph in enumerate(flat.subgraphs):
        for tensor in graph.tensors:
            buffer = flat.buffers[tensor.buffer]
            if tensor.type == 0 and buffer.data is not None:  # TensorType.FLOAT32
                out[(g, tuple(int(n) for n in tensor.shape))] = len(buffer.data)
    return out


def test_int8_keeps_only_front_end_constants_in_float(exported):
    """Only the front end's window and mel-bank blocks stay float32: no GRU weight or state buffer."""
    from jaxaudio.audio import features
    from jaxaudio.export.frontend import mel_blocks

    fe = frontend_config(exported["config"])
    bank = features.mel_filterbank(fe)
    stored = 4 * sum((b1 - b0) * (m1 - m0) for b0, b1, m0, m1 in mel_blocks(bank))
    floats = float_constants(exported["variants"]["int8"])
    assert all(graph == 0 for graph, _ in floats), floats  # the GRU step subgraphs are all int8
    window = 4 * features._frame_chunks(fe) * fe.hop_length
    assert sum(floats.values()) <= window + stored + 4096
    assert stored < 0.25 * bank.nbytes  # the bank is ~3% nonzero


def test_int8_never_quantizes_the_waveform(exported):
    """Rounding the waveform to int8 wipes out quiet clips: every tensor as long as the clip (the
    input and its reflect-padded copy) must stay float32, even though jnp.pad loses its scope."""
    from ai_edge_litert.interpreter import Interpreter

    samples = exported["model"].clip_samples
    details = Interpreter(model_content=exported["variants"]["int8"]).get_tensor_details()
    long = [d for d in details if d["shape"].size and int(d["shape"][-1]) >= samples]
    assert len(long) >= 2
    assert all(d["dtype"] == np.float32 for d in long), [(d["shape"], d["dtype"]) for d in long]


def test_int8_quantizes_the_model_but_not_the_front_end(exported):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=exported["variants"]["int8"])
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    convs = [op for op in ops if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D")]
    assert len(convs) >= 2 * len(exported["config"].model.channels)
    assert all(tensors[op["inputs"][0]]["dtype"] == np.int8 for op in convs)
    # The front end's matmuls (frames x DFT -> 2 * n_bins, then power x the mel bank's blocks ->
    # n_mels in all) stay float32; the model's matmuls run on int8.
    fe = frontend_config(exported["config"])
    matmuls = [op for op in ops if op["op_name"] in ("BATCH_MATMUL", "FULLY_CONNECTED")]
    float_widths = [int(tensors[op["outputs"][0]]["shape"][-1]) for op in matmuls
                    if tensors[op["inputs"][0]]["dtype"] == np.float32]
    assert 2 * fe.n_bins in float_widths
    float_widths.remove(2 * fe.n_bins)
    assert sum(float_widths) == fe.n_mels
    int8_matmuls = sum(tensors[op["inputs"][0]]["dtype"] == np.int8 for op in matmuls)
    assert int8_matmuls == len(matmuls) - 1 - len(float_widths)  # everything but the front end
    assert int8_matmuls >= exported["config"].model.rnn_layers + 2  # GRU input projections, dense heads


def test_float16_and_dynamic_files_shrink(exported):
    sizes = {fmt: len(data) for fmt, data in exported["variants"].items()}
    assert sizes["float16"] < sizes["float32"] and sizes["int8_dynamic"] < sizes["float16"]


def test_measure_runs_model_in_a_separate_process(exported):
    baseline = measure("-", 1, 0)
    timed = measure(exported["written"]["float32"]["path"], 1, 2, warmup=1)
    assert timed["runs"] == 2 and 0 < timed["p50_ms"] <= timed["p95_ms"]
    # The child holds the runtime and the model, not this process's JAX/TensorFlow.
    assert baseline["peak_rss_mib"] < timed["peak_rss_mib"] < 1024
