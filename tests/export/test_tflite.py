"""TFLite export of a two-output SED model (a small CRNN built here), run in the LiteRT interpreter.

The model is ``jaxaudio.models.crnn.CRNN`` at the sizes of the CRNN experiment's tiny preset
(64 mels, hop 512, six CNN blocks, 2 x BiGRU 32, 2 s clips) with random-init weights, exported
as an experiment's hook would: export front end, the GRU's export loop, per-example scaling in the
front end's scope. Outputs are declared by name: ``strong`` (FRAME_PROBS, with frame timestamps)
and ``weak`` (CLIP_PROBS). References: the float32 model must match JAX's own ``fn`` within 1e-5
by name, and the *training-time* path (``features.log_mel`` + ``lax.scan`` GRU + in-model
scaling, which shares no export code) within 1e-4.
"""
import dataclasses

import jax
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

from flax import nnx  # noqa: E402

from jaxaudio.audio import features  # noqa: E402
from jaxaudio.audio.features import FRONTEND_SCOPE  # noqa: E402
from jaxaudio.export import CLIP_PROBS, FORMATS, FRAME_PROBS, HeldOut, InferenceModel, Output, export_model  # noqa: E402
from jaxaudio.export import frontend as export_frontend  # noqa: E402
from jaxaudio.export.report import measure, model_facts  # noqa: E402
from jaxaudio.export.verify import run_tflite, verify  # noqa: E402
from jaxaudio.models.crnn import CRNN, CRNNConfig, instance_scale  # noqa: E402
from jaxaudio.nn.cnn import CNNConfig  # noqa: E402

CUSTOM_OPCODE = 32  # BuiltinOperator.CUSTOM in the TFLite schema (Flex ops are custom ops)
CLIP_SECONDS = 2.0
FE = dataclasses.replace(features.DCASE_16K, n_mels=64, n_fft=512, hop_length=512, win_length=512)
SAMPLES = int(CLIP_SECONDS * FE.sample_rate)
CLASSES = tuple(f"event{i}" for i in range(10))
TRAINED = CRNNConfig(
    n_classes=len(CLASSES), rnn_hidden=32, rnn_layers=2, dropout=0.1,
    cnn=CNNConfig(channels=(16, 32, 64, 64, 64, 64), pooling=((2, 2), (2, 2), (1, 2), (1, 2), (1, 2), (1, 2)),
                  dropout=0.1, activation="relu"))
FRAMES = TRAINED.cnn.output_frames(FE.num_frames(SAMPLES))


def clips(n, seed):
    """Noise at levels from loud to very quiet, with a tone in every other clip."""
    rng = np.random.default_rng(seed)
    t = np.arange(SAMPLES) / FE.sample_rate
    level = np.array([0.3, 0.05, 3e-3, 3e-4])[np.arange(n) % 4][:, None]
    wave = level * rng.standard_normal((n, SAMPLES))
    wave[::2] += 2 * level[::2] * np.sin(2 * np.pi * rng.uniform(200, 4000, (len(wave[::2]), 1)) * t)
    return wave.astype(np.float32)


LABELS = np.random.default_rng(7).random((4, FRAMES, len(CLASSES))) < 0.3


def held_out(max_examples):
    count = 4 if max_examples <= 0 else min(max_examples, 4)

    def score(outputs):  # a frame-level accuracy against fixed labels (the model is untrained)
        strong = outputs["strong"] > 0.5
        return {"frame_accuracy": float(np.mean(strong == LABELS[:count])),
                "clip_mean": float(np.mean(outputs["weak"]))}

    return HeldOut(clips(count, seed=11), tuple(f"clip{i}" for i in range(count)), score)


def sed_model(trained_model: CRNN) -> InferenceModel:
    """What an experiment's inference hook builds from a trained CRNN."""
    mcfg = dataclasses.replace(TRAINED, input_norm="none", export_rnn=True)
    graphdef, _, _ = nnx.split(nnx.eval_shape(lambda: CRNN(mcfg, rngs=nnx.Rngs(0))), nnx.Param, ...)
    _, params, rest = nnx.split(trained_model, nnx.Param, ...)

    def fn(variables, inputs):
        model = nnx.merge(graphdef, variables["params"], variables["model_state"])
        feats = export_frontend.log_mel(inputs, FE)
        with jax.named_scope(FRONTEND_SCOPE):
            feats = instance_scale(feats, TRAINED.input_norm, TRAINED.norm_eps)
        return model(feats, train=False)

    return InferenceModel(
        name="crnn", fn=fn, variables={"params": params, "model_state": rest}, input_shape=(SAMPLES,),
        outputs=(Output("strong", FRAME_PROBS, CLASSES, np.linspace(0.0, CLIP_SECONDS, FRAMES + 1)),
                 Output("weak", CLIP_PROBS, CLASSES)),
        primary_metric="frame_accuracy", sample_rate=FE.sample_rate,
        calibration=lambda n: clips(n, seed=5), held_out=held_out, source="random init (test)")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    trained = CRNN(TRAINED, rngs=nnx.Rngs(3))
    model = sed_model(trained)
    written = export_model(model, FORMATS, str(root / "out"), calibration_clips=4)
    variants = {fmt: item["bytes"] for fmt, item in written.items()}
    checks = verify(model, variants, max_examples=4)
    return {"model": model, "trained": trained, "written": written, "variants": variants, "checks": checks}


def training_path_outputs(trained: CRNN, waveforms):
    """The CRNN as training evaluates it: stored-DFT log-mel, lax.scan GRU, in-model scaling."""
    out = trained(features.log_mel(waveforms, FE), train=False)
    return {k: np.asarray(v) for k, v in out.items()}


def test_float32_matches_jax_by_name_within_1e5(exported):
    model = exported["model"]
    held = model.held_out(4)
    reference = model.predict(held.inputs)
    got = run_tflite(exported["variants"]["float32"], held.inputs)
    assert sorted(got) == ["strong", "weak"]
    assert got["strong"].shape == (4, FRAMES, len(CLASSES)) and got["weak"].shape == (4, len(CLASSES))
    for name in ("strong", "weak"):
        np.testing.assert_allclose(got[name], reference[name], atol=1e-5, rtol=0)
    row = exported["checks"]["variants"]["float32"]
    assert row["outputs"]["strong"]["max_abs"] < 1e-5 and row["outputs"]["weak"]["max_abs"] < 1e-5
    assert row["outputs"]["strong"]["decision_agreement"] == 1.0
    assert row["metric_deltas"]["frame_accuracy"] == 0.0


def test_float32_matches_training_path_within_1e4(exported):
    held = exported["model"].held_out(4)
    reference = training_path_outputs(exported["trained"], held.inputs)
    got = run_tflite(exported["variants"]["float32"], held.inputs)
    assert got["strong"].shape == reference["strong"].shape == (4, exported["model"].output("strong").frames, 10)
    for key in ("strong", "weak"):
        np.testing.assert_allclose(got[key], reference[key], atol=1e-4, rtol=0)
    assert exported["checks"]["variants"]["float32"]["max_abs"] < 1e-4
    assert exported["checks"]["variants"]["float32"]["agreement"] == 1.0


def constant_bytes(data: bytes) -> int:
    """Bytes of weights and other constants stored in a .tflite file (its buffers)."""
    from tensorflow.lite.tools import flatbuffer_utils

    flat = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    return sum(len(b.data) for b in flat.buffers if b.data is not None)


def test_int8_keeps_metric(exported):
    assert exported["checks"]["variants"]["int8"]["metric_deltas"]["frame_accuracy"] >= -0.02


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
        assert facts["ops"].get("WHILE") == TRAINED.rnn_layers, fmt
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
    from jaxaudio.export.frontend import mel_blocks

    bank = features.mel_filterbank(FE)
    stored = 4 * sum((b1 - b0) * (m1 - m0) for b0, b1, m0, m1 in mel_blocks(bank))
    floats = float_constants(exported["variants"]["int8"])
    assert all(graph == 0 for graph, _ in floats), floats  # the GRU step subgraphs are all int8
    window = 4 * features._frame_chunks(FE) * FE.hop_length
    assert sum(floats.values()) <= window + stored + 4096
    assert stored < 0.25 * bank.nbytes  # the bank is ~3% nonzero


def test_int8_never_quantizes_the_waveform(exported):
    """Rounding the waveform to int8 wipes out quiet clips: every tensor as long as the clip (the
    input and its reflect-padded copy) must stay float32, even though jnp.pad loses its scope."""
    from ai_edge_litert.interpreter import Interpreter

    (samples,) = exported["model"].input_shape
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
    assert len(convs) >= 2 * len(TRAINED.cnn.channels)
    assert all(tensors[op["inputs"][0]]["dtype"] == np.int8 for op in convs)
    # The front end's matmuls (frames x DFT -> 2 * n_bins, then power x the mel bank's blocks ->
    # n_mels in all) stay float32; the model's matmuls run on int8.
    matmuls = [op for op in ops if op["op_name"] in ("BATCH_MATMUL", "FULLY_CONNECTED")]
    float_widths = [int(tensors[op["outputs"][0]]["shape"][-1]) for op in matmuls
                    if tensors[op["inputs"][0]]["dtype"] == np.float32]
    assert 2 * FE.n_bins in float_widths
    float_widths.remove(2 * FE.n_bins)
    assert sum(float_widths) == FE.n_mels
    int8_matmuls = sum(tensors[op["inputs"][0]]["dtype"] == np.int8 for op in matmuls)
    assert int8_matmuls == len(matmuls) - 1 - len(float_widths)  # everything but the front end
    assert int8_matmuls >= TRAINED.rnn_layers + 2  # GRU input projections, dense heads


def test_float16_and_dynamic_files_shrink(exported):
    sizes = {fmt: len(data) for fmt, data in exported["variants"].items()}
    assert sizes["float16"] < sizes["float32"] and sizes["int8_dynamic"] < sizes["float16"]


def test_every_variant_is_compared_by_name(exported):
    for fmt, row in exported["checks"]["variants"].items():
        assert set(row["outputs"]) == {"strong", "weak"}, fmt
        assert np.isfinite(row["max_abs"]) and 0.0 <= row["agreement"] <= 1.0, fmt


def test_measure_runs_model_in_a_separate_process(exported):
    baseline = measure("-", 1, 0)
    timed = measure(exported["written"]["float32"]["path"], 1, 2, warmup=1)
    assert timed["runs"] == 2 and 0 < timed["p50_ms"] <= timed["p95_ms"]
    # The child holds the runtime and the model, not this process's JAX/TensorFlow.
    assert baseline["peak_rss_mib"] < timed["peak_rss_mib"] < 1024
