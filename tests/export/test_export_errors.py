"""Bad inputs to the exporter fail with an ExportError that names the output, op, kind or choices."""
import numpy as np
import pytest

import jax.numpy as jnp

from jaxaudio.errors import ExportError
from jaxaudio.export import (CLASS_PROBS, CLIP_PROBS, FORMATS, FRAME_PROBS, KINDS, HeldOut, InferenceModel, Output,
                             export_model, parse_formats)


def test_unknown_format_lists_the_known_ones():
    with pytest.raises(ExportError) as err:
        parse_formats("float32,int4")
    assert "'int4'" in str(err.value)
    for name in FORMATS:
        assert name in str(err.value)


def test_unknown_kind_lists_the_known_ones():
    with pytest.raises(ExportError) as err:
        Output("scores", "logits")
    message = str(err.value)
    assert "'scores'" in message and "'logits'" in message
    for kind in KINDS:
        assert kind in message


def test_frame_probs_without_timestamps_is_refused():
    with pytest.raises(ExportError, match=r"output 'strong' \(frame_probs\): frame_timestamps is required"):
        Output("strong", FRAME_PROBS, ("a", "b"))
    with pytest.raises(ExportError, match="'strong'.*increasing"):
        Output("strong", FRAME_PROBS, frame_timestamps=np.array([0.0, 0.5, 0.5]))
    with pytest.raises(ExportError, match=f"'weak'.*{FRAME_PROBS} outputs only"):
        Output("weak", CLIP_PROBS, frame_timestamps=np.linspace(0, 1, 5))


def test_output_names_must_be_identifiers_and_unique():
    with pytest.raises(ExportError, match="'strong probs'"):
        Output("strong probs", CLIP_PROBS)
    with pytest.raises(ExportError, match=r"\['p'\] declared more than once"):
        tiny_model(outputs=(Output("p", CLASS_PROBS), Output("p", CLIP_PROBS)))


def fn(variables, inputs):
    logits = inputs[:, :3] * variables["w"]
    return {"probs": jnp.exp(logits) / jnp.sum(jnp.exp(logits), axis=-1, keepdims=True),
            "gate": 1.0 / (1.0 + jnp.exp(-logits))}


def tiny_model(**changes):
    fields = dict(name="tiny", fn=fn, variables={"w": np.ones(3, np.float32)}, input_shape=(8,),
                  outputs=(Output("probs", CLASS_PROBS, ("a", "b", "c")), Output("gate", CLIP_PROBS)),
                  primary_metric="accuracy", frontend_scope="")
    fields.update(changes)
    return InferenceModel(**fields)


def test_declared_output_missing_from_fn_is_named(tmp_path):
    model = tiny_model(outputs=(Output("probs", CLASS_PROBS), Output("gate", CLIP_PROBS), Output("frames", CLIP_PROBS)))
    with pytest.raises(ExportError) as err:
        export_model(model, "float32", str(tmp_path))
    message = str(err.value)
    assert "tiny: fn's outputs: missing declared output(s) 'frames'" in message
    assert not list(tmp_path.iterdir())  # nothing converted


def test_undeclared_output_of_fn_is_named():
    model = tiny_model(outputs=(Output("probs", CLASS_PROBS),))
    with pytest.raises(ExportError, match="undeclared output.*'gate'"):
        model.check_outputs()
    with pytest.raises(ExportError, match="undeclared output.*'gate'"):
        model.predict(np.zeros((1, 8), np.float32))


def test_outputs_are_checked_against_their_kind():
    with pytest.raises(ExportError, match="'probs' .* 3 classes but 2 labels"):
        tiny_model(outputs=(Output("probs", CLASS_PROBS, ("a", "b")), Output("gate", CLIP_PROBS))).check_outputs()
    stamps = np.linspace(0.0, 1.0, 4)
    with pytest.raises(ExportError, match="'probs' .* expected rank 3"):
        tiny_model(outputs=(Output("probs", FRAME_PROBS, frame_timestamps=stamps),
                            Output("gate", CLIP_PROBS))).check_outputs()
    with pytest.raises(ExportError, match="dtype int32; expected a float array"):
        tiny_model(fn=lambda v, x: {"probs": x[:, :3].astype(jnp.int32), "gate": x[:, :3]}).check_outputs()


def test_converted_model_with_other_outputs_is_named(tmp_path):
    """A .tflite file whose signature lacks a declared output (or has one more) fails verification."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    from jaxaudio.export.tflite import check_signature, convert
    from jaxaudio.export.verify import verify

    data = convert(tiny_model(), "float32")
    check_signature(tiny_model(), data, "float32")
    held = HeldOut(np.ones((2, 8), np.float32), ("x", "y"), lambda outputs: {"accuracy": 1.0})

    def more(variables, inputs):
        return {**fn(variables, inputs), "extra": inputs[:, :3]}

    wants_more = tiny_model(fn=more, outputs=tiny_model().outputs + (Output("extra", CLIP_PROBS),),
                            held_out=lambda n: held)
    with pytest.raises(ExportError, match="float32 TFLite signature: missing declared output.*'extra'"):
        verify(wants_more, {"float32": data})
    wants_less = tiny_model(fn=lambda v, x: {"probs": fn(v, x)["probs"]}, outputs=(Output("probs", CLASS_PROBS),),
                            held_out=lambda n: held)
    with pytest.raises(ExportError, match="undeclared output.*'gate'"):
        verify(wants_less, {"float32": data})


def test_score_without_the_primary_metric_is_named():
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    from jaxaudio.export.verify import verify

    held = HeldOut(np.ones((2, 8), np.float32), ("x", "y"), lambda outputs: {"auc": 0.5})
    with pytest.raises(ExportError, match=r"gave \['auc'\]; expected a dict with the primary metric 'accuracy'"):
        verify(tiny_model(held_out=lambda n: held), {})


def test_unexportable_op_is_named():
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    from jaxaudio.export.tflite import convert

    def spectrum(variables, inputs):  # complex FFT: no TFLite builtin takes it
        return {"power": jnp.abs(jnp.fft.fft(inputs))}

    model = InferenceModel(name="fft_model", fn=spectrum, variables={}, input_shape=(16,),
                           outputs=(Output("power", "anomaly_score"),), primary_metric="auc")
    with pytest.raises(ExportError) as err:
        convert(model, "float32")
    message = str(err.value)
    assert "fft_model (float32)" in message and "stablehlo.fft" in message
    assert "no builtin FFT" in message  # why, and what to do instead
