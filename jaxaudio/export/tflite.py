"""JAX -> TFLite: jax2tf (StableHLO) -> tf.function -> TFLiteConverter, builtin ops only.

The converted model has one signature (``serving_default``): input ``INPUT_NAME``, shape
``(1, *input_shape)`` float32, and one output per declared ``Output``, named after it, so a
runtime reads outputs by name (``Interpreter.get_signature_runner()``), not by position or rank.

Formats (float outputs in every variant; integer outputs, such as token ids, stay integer):
  float32       as trained.
  float16       weights stored in float16, dequantized at load; compute stays float32.
  int8_dynamic  dynamic-range: int8 weights, activations quantized on the fly per op.
  int8          full integer with the front end kept in float: calibrated on the system's
                training examples, then every op whose output tensor carries the front end's
                ``jax.named_scope``, and every op upstream of one, is denylisted from
                quantization (an int8 waveform or log-mel loses the quiet clips and bands
                that the dB scale is there to keep); DIV ops stay float too (``FLOAT_OPS``), and
                so do the model's ``float_scopes`` and, with ``float_range_limit``, the ops
                around tensors whose calibrated range 8 bits cannot resolve.
                Loops (WHILE) are calibrated and quantized like the main graph.

TensorFlow is imported only inside these functions, so ``jaxaudio.export`` imports without
the ``export`` extra and tells the user what to install when it is missing.
"""
from __future__ import annotations

import re
from typing import Iterable, Optional

import numpy as np

from jaxaudio.errors import ExportError
from jaxaudio.export.model import INPUT_NAME, InferenceModel, check_names

FORMATS = ("float32", "float16", "int8_dynamic", "int8")


def parse_formats(formats: str | Iterable[str]) -> list[str]:
    """``"float32,int8"`` or a list -> validated list; an unknown name lists the known ones."""
    names = [f.strip() for f in (formats.split(",") if isinstance(formats, str) else formats) if f.strip()]
    unknown = [f for f in names if f not in FORMATS]
    if unknown or not names:
        raise ExportError(f"--formats: unknown format(s) {unknown or names!r}; known formats: {', '.join(FORMATS)}")
    return names


def require_toolchain():
    """(tensorflow, litert Interpreter), or an ExportError naming the extra to install."""
    try:
        import tensorflow as tf
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as err:
        raise ExportError(f"TFLite export needs the 'export' extra ({err.name} is missing): "
                          "pip install -e '.[export]'") from err
    return tf, Interpreter


def tf_function(model: InferenceModel):
    """A concrete tf.function ``inputs (1, *input_shape) -> {output name: tensor}`` with the
    variables baked in as constants; ``fn``'s outputs are checked against the declared ones first."""
    tf, _ = require_toolchain()
    from jax.experimental import jax2tf

    model.check_outputs()
    names = model.output_names

    def forward(inputs):
        out = model.fn(model.variables, inputs)
        return {name: out[name] for name in names}

    converted = jax2tf.convert(forward, with_gradient=False)
    function = tf.function(converted, autograph=False, input_signature=[
        tf.TensorSpec((1, *model.input_shape), tf.float32, name=INPUT_NAME)])
    try:
        return function, function.get_concrete_function()
    except Exception as err:  # jax2tf/StableHLO serialisation failed: name the primitive if we can
        raise ExportError(f"{model.name}: jax2tf could not serialise the model: {_first_line(err)}") from err


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def unsupported_ops(message: str) -> list[str]:
    """Op names the converter complains about, from its error text (MLIR diagnostics)."""
    found = []
    for pattern in (r"'([A-Za-z_][\w.]*)' op", r"\b(tf\.[A-Z]\w*)", r"\b(stablehlo\.[a-z_]+)", r"\b(chlo\.[a-z_]+)",
                    r"custom_call_target\s*=\s*\"?([\w.]+)"):
        for name in re.findall(pattern, message):
            versioned = re.fullmatch(r"vhlo\.(\w+?)_v\d+", name)  # the serialised form of a StableHLO op
            name = f"stablehlo.{versioned.group(1)}" if versioned else name
            if name not in found:
                found.append(name)
    return found


# Why common unconvertible ops fail, and what to do instead.
OP_HINTS = {
    "stablehlo.fft": "TFLite has no builtin FFT (and no complex tensors); compute the DFT as a real "
                     "matmul, as jaxaudio.export.frontend does",
    "stablehlo.custom_call": "a call into a host library (LAPACK linalg, a Pallas kernel, ...) has no "
                             "TFLite equivalent; use plain jnp/lax ops on the inference path",
    "stablehlo.rng_bit_generator": "random numbers at inference time (dropout left on?); run the model "
                                   "with train=False",
}


def _convert(model: InferenceModel, converter, fmt: str) -> bytes:
    try:
        return converter.convert()
    except Exception as err:
        message = str(err)
        ops = unsupported_ops(message)
        detail = next((line.strip() for line in message.splitlines() if "error:" in line), _first_line(err))
        what = f"unsupported op(s) {', '.join(ops)}" if ops else "conversion failed"
        why = "; ".join(f"{op}: {OP_HINTS[op]}" for op in ops if op in OP_HINTS)
        raise ExportError(f"{model.name} ({fmt}): {what}; TFLite builtin ops cannot express it"
                          f"{' (' + why + ')' if why else ''}. Converter said: {detail}") from err


def _converter(model: InferenceModel):
    tf, _ = require_toolchain()
    function, concrete = tf_function(model)
    # A tf.Module (not the bare function) as the trackable object: the converter then goes through
    # a SavedModel, which is what gives the .tflite file a signature with the outputs' names.
    holder = tf.Module()
    holder.serve = function
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # no Flex, no custom ops
    return converter


SIGNATURE_KEY = "serving_default"


def signature(model_bytes: bytes) -> dict[str, list[str]]:
    """``{"inputs": [...], "outputs": [...]}`` names of the model's signature (an empty dict if none)."""
    _, Interpreter = require_toolchain()
    signatures = Interpreter(model_content=model_bytes).get_signature_list()
    if len(signatures) != 1:
        return {}
    return next(iter(signatures.values()))


def check_signature(model: InferenceModel, model_bytes: bytes, fmt: str) -> None:
    """ExportError unless the converted model has one signature with input ``INPUT_NAME`` and exactly
    the declared outputs (a missing or extra name is named)."""
    sig = signature(model_bytes)
    if not sig:
        raise ExportError(f"{model.name} ({fmt}): the converted model has no single signature, so its outputs "
                          "cannot be told apart by name")
    if list(sig.get("inputs", [])) != [INPUT_NAME]:
        raise ExportError(f"{model.name} ({fmt}): signature inputs {sig.get('inputs')}; expected [{INPUT_NAME!r}]")
    check_names(model, sig.get("outputs", []), f"the {fmt} TFLite signature")


def scoped_tensor_names(model_bytes: bytes, scope: str) -> list[str]:
    """Names of tensors produced under ``jax.named_scope(scope)``; fused ops join names by ';'."""
    _, Interpreter = require_toolchain()
    marker = f"/{scope}/"
    names = []
    for detail in Interpreter(model_content=model_bytes).get_tensor_details():
        if any(marker in part for part in detail["name"].split(";")):
            names.append(detail["name"])
    return names


def front_end_tensor_names(model_bytes: bytes, scope: str) -> list[str]:
    """Tensors of the front end: those named under ``scope`` and every tensor they are computed from.

    Why the ancestors: ops that jnp implements as jitted helpers (``jnp.pad``, ``jnp.clip``) lose the
    enclosing name scope in the converted graph, so the reflect padding of the waveform carries no
    scope; quantizing it would round the waveform itself to int8 (steps of ~1/150 of full scale),
    which wipes out quiet clips. Everything upstream of a front-end tensor is front end too.
    """
    _, Interpreter = require_toolchain()
    interpreter = Interpreter(model_content=model_bytes)
    names = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
    scoped = set(scoped_tensor_names(model_bytes, scope))
    producer = {i: op for op in interpreter._get_ops_details() for i in op["outputs"]}
    todo = [i for i, name in names.items() if name in scoped and i in producer]
    seen_ops, keep = set(), set()
    while todo:
        op = producer[todo.pop()]
        if op["index"] in seen_ops:
            continue
        seen_ops.add(op["index"])
        keep.update(i for i in op["outputs"] if i in names)
        todo.extend(i for i in op["inputs"] if i in producer)
    return [names[i] for i in sorted(keep)]


def strip_names(model_bytes: bytes) -> bytes:
    """Drop tensor and subgraph names and the description, keeping the signature (whose input and
    output names are what a runtime reads): the unrolled recurrence names thousands of tensors,
    about a third of a small model's file, and a device needs none of them.

    Why not ``flatbuffer_utils.strip_strings``: it also deletes the signature.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    flat = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    flat.description = None
    for graph in flat.subgraphs:
        graph.name = None
        for tensor in graph.tensors:
            tensor.name = None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(flat))


# Ops kept in float in the int8 variant besides the front end: an int8 DIV fails at run time
# ("data[i] != zero_point") as soon as a divisor (a softmax sum, a min-max range) rounds to zero.
FLOAT_OPS = ("DIV",)


def op_output_names(model_bytes: bytes, op_names: Iterable[str]) -> list[str]:
    """Output tensor names of every op of the given kinds."""
    _, Interpreter = require_toolchain()
    interpreter = Interpreter(model_content=model_bytes)
    tensors = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
    return [tensors[i] for op in interpreter._get_ops_details() if op["op_name"] in op_names
            for i in op["outputs"] if i in tensors]


def wide_range_tensor_names(model_bytes: bytes, limit: float) -> list[str]:
    """Output tensor names of the ops of a calibrated model that read or write a tensor whose
    calibrated range reaches beyond ``+-limit``, and of the ops producing those ops' inputs
    (``InferenceModel.float_range_limit``). Every subgraph counts (loop bodies too)."""
    from tensorflow.lite.tools import flatbuffer_utils

    flat = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    names = []
    for graph in flat.subgraphs:
        tensors = graph.tensors or []

        def wide(i: int) -> bool:
            q = tensors[i].quantization if 0 <= i < len(tensors) else None
            if q is None or q.min is None or q.max is None or len(q.min) == 0:
                return False
            return max(abs(float(np.min(q.min))), abs(float(np.max(q.max)))) > limit

        operators = graph.operators or []
        producer = {int(i): op for op in operators for i in (op.outputs if op.outputs is not None else [])}
        keep = []
        for op in operators:
            ins = [int(i) for i in (op.inputs if op.inputs is not None else [])]
            outs = [int(i) for i in (op.outputs if op.outputs is not None else [])]
            if any(wide(i) for i in ins + outs):
                keep.append(op)
                keep.extend(producer[i] for i in ins if i in producer)
        for op in keep:
            for i in op.outputs:
                name = tensors[int(i)].name
                name = name.decode() if isinstance(name, bytes) else name
                if name and name not in names:
                    names.append(name)
    return names


def convert(model: InferenceModel, fmt: str, calibration: Optional[np.ndarray] = None, *,
            keep_names: bool = False) -> bytes:
    """The ``.tflite`` bytes of ``model`` in ``fmt``; ``calibration`` (n, *input_shape) for int8.

    The result's signature is checked: input ``INPUT_NAME`` and exactly the declared outputs.
    """
    data = _convert_format(model, fmt, calibration)
    data = data if keep_names else strip_names(data)
    check_signature(model, data, fmt)
    return data


def _convert_format(model: InferenceModel, fmt: str, calibration: Optional[np.ndarray]) -> bytes:
    tf, _ = require_toolchain()
    (fmt,) = parse_formats([fmt])
    converter = _converter(model)
    if fmt == "float32":
        return _convert(model, converter, fmt)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if fmt == "float16":
        converter.target_spec.supported_types = [tf.float16]
        return _convert(model, converter, fmt)
    if fmt == "int8_dynamic":
        return _convert(model, converter, fmt)
    if calibration is None or len(calibration) == 0:
        raise ExportError(f"{model.name} (int8): full-integer export needs calibration examples and the system "
                          "provides none (InferenceModel.calibration)")
    examples = np.asarray(calibration, np.float32)
    if examples.shape[1:] != model.input_shape:
        raise ExportError(f"{model.name} (int8): calibration examples have shape {examples.shape}; expected "
                          f"(n, {', '.join(map(str, model.input_shape))})")
    converter.representative_dataset = lambda: ([example[None]] for example in examples)
    converter.experimental_new_quantizer = True
    converter._experimental_calibrate_only = True  # quantize ourselves, with the front end denylisted
    calibrated = _convert(model, converter, fmt)
    keep_float = front_end_tensor_names(calibrated, model.frontend_scope) if model.frontend_scope else []
    if model.frontend_scope and not keep_float:
        raise ExportError(f"{model.name} (int8): no tensor of the front end scope {model.frontend_scope!r} in the "
                          "converted graph; wrap the front end in jax.named_scope so it can stay float (or set "
                          "InferenceModel.frontend_scope='' for a model without a front end)")
    keep_float += op_output_names(calibrated, FLOAT_OPS)
    for scope in model.float_scopes:
        keep_float += scoped_tensor_names(calibrated, scope)
    if model.float_range_limit is not None:
        keep_float += wide_range_tensor_names(calibrated, float(model.float_range_limit))
    from tensorflow.lite.python import convert as tflite_convert
    try:
        return tflite_convert.mlir_quantize(calibrated, denylisted_nodes=keep_float,
                                            disable_per_channel_for_dense_layers=not model.per_channel_dense)
    except Exception as err:
        raise ExportError(f"{model.name} (int8): quantizing the calibrated model failed: {_first_line(err)}") from err
