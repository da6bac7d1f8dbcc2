"""FunASR Paraformer weight import against FunASR itself (random weights, nothing downloaded).

FunASR's ``Paraformer`` is built in torch from a small config of the AISHELL-1 recipe's architecture
(``examples/aishell/paraformer/conf/paraformer_conformer_12e_6d_2048_256.yaml``: conformer encoder
with conv2d subsampling, macaron, swish, conv module, FunASR's default ``rel_pos_type: legacy``;
``ParaformerSANDecoder``; ``CifPredictor``; CTC), its weights randomised (LayerNorm affines, biases and
BatchNorm running statistics too, which its init leaves at identity values that would hide a wrong
mapping), and its state dict copied into ``Paraformer(funasr_config(cfg))`` by ``convert/funasr.py``.
Both run in eval mode, float32, on the same random fbank-shaped batch of two utterances of different
lengths, padded with zeros as FunASR's collate does.

Compared, ``max |ours - FunASR| <= 1e-4`` absolute (on outputs of unit scale, asserted):

* encoder output on FunASR's valid frames, its output lengths, the CTC logits;
* decoder logits, both decoders fed FunASR's encoder output and CIF acoustic embeddings and token
  counts (the decoder alone);
* end to end: CIF weights on the frames where FunASR's predictor sees no padding (ours zeroes the
  encoder's padded frames before its conv, FunASR does not: ``jaxaudio/nn/cif.py``), and
  ``greedy_decode``'s logits for the longest utterance against FunASR's inference path.

The reference is required through ``require_reference``: skipped without funasr on a developer's
machine, a failure in CI (``.ci/run`` installs it).
"""
import dataclasses
import importlib

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxaudio.convert.funasr import funasr_config, funasr_name, load_funasr_checkpoint, paraformer_state_from_funasr
from jaxaudio.errors import CheckpointError
from jaxaudio.models.paraformer import Paraformer, ParaformerConfig, greedy_decode
from jaxaudio.nn.conformer import ConformerConfig

ATOL = 1e-4
D, HEADS, FFN, KERNEL, VOCAB, BINS = 64, 4, 128, 15, 50, 80
LENGTHS = (100, 73)  # fbank frames -> 24 and 17 encoder frames (FunASR's lengths: 24, 18)

ENCODER_CONF = dict(output_size=D, attention_heads=HEADS, linear_units=FFN, num_blocks=2, dropout_rate=0.1,
                    positional_dropout_rate=0.1, attention_dropout_rate=0.0, input_layer="conv2d",
                    normalize_before=True, pos_enc_layer_type="rel_pos", selfattention_layer_type="rel_selfattn",
                    activation_type="swish", macaron_style=True, use_cnn_module=True, cnn_module_kernel=KERNEL)
DECODER_CONF = dict(attention_heads=HEADS, linear_units=FFN, num_blocks=2, dropout_rate=0.1,
                    positional_dropout_rate=0.1, self_attention_dropout_rate=0.0, src_attention_dropout_rate=0.0)
PREDICTOR_CONF = dict(idim=D, threshold=1.0, l_order=1, r_order=1, tail_threshold=0.45)

CFG = funasr_config(ParaformerConfig(
    encoder=ConformerConfig(input_dim=BINS, d_model=D, heads=HEADS, ffn_dim=FFN, blocks=2, kernel=KERNEL),
    vocab_size=VOCAB, decoder_layers=2, decoder_heads=HEADS, decoder_ffn=FFN, max_tokens=16))


def randomise(torch, model, seed=0):
    """Random LayerNorm / BatchNorm affines, biases and BatchNorm running statistics (in place)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.copy_(0.2 * torch.rand(p.shape, generator=g) - 0.1)
            elif p.ndim == 1:  # LayerNorm / BatchNorm weight
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(0.2 * torch.randn(buf.shape, generator=g))
            elif name.endswith("running_var"):
                buf.copy_(0.5 + torch.rand(buf.shape, generator=g))
    return model.eval()


def close(got, want, what, atol=ATOL):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    err, scale = float(np.abs(got - want).max()), float(np.abs(want).max())
    print(f"{what}: max abs err {err:.2e}, scale {scale:.3g}")
    assert 0.1 <= scale <= 50, f"{what}: reference scale {scale:.3g}; an absolute {atol:g} would mean little"
    assert err <= atol, f"{what}: max abs error {err:.3g} (tolerance {atol:g})"
    return err


@pytest.fixture(scope="module")
def ref(require_reference):
    """FunASR's randomised model, its state dict, the batch and its eval-mode outputs; our converted model."""
    torch = require_reference("torch")
    require_reference("funasr")
    paraformer = importlib.import_module("funasr.models.paraformer.model")
    torch.manual_seed(0)
    model = paraformer.Paraformer(
        encoder="ConformerEncoder", encoder_conf=ENCODER_CONF, decoder="ParaformerSANDecoder",
        decoder_conf=DECODER_CONF, predictor="CifPredictor", predictor_conf=PREDICTOR_CONF, input_size=BINS,
        vocab_size=VOCAB, ctc_weight=0.3, lsm_weight=0.1, predictor_weight=1.0, sampling_ratio=0.4)
    randomise(torch, model)
    rng = np.random.default_rng(0)
    feats = np.zeros((len(LENGTHS), max(LENGTHS), BINS), np.float32)
    for b, n in enumerate(LENGTHS):
        feats[b, :n] = rng.normal(size=(n, BINS))
    lengths = np.asarray(LENGTHS)
    with torch.no_grad():
        speech, speech_lengths = torch.from_numpy(feats), torch.from_numpy(lengths)
        enc, enc_lens = model.encode(speech, speech_lengths)
        acoustic, token_num, alphas, _ = model.calc_predictor(enc, enc_lens)
        token_lens = token_num.long()
        logits = model.decoder(enc, enc_lens, acoustic, token_lens)[0]
        out = dict(enc=enc.numpy(), enc_lens=enc_lens.numpy(), ctc=model.ctc.ctc_lo(enc).numpy(),
                   acoustic=acoustic.numpy(), token_lens=token_lens.numpy(), alphas=alphas.numpy(),
                   logits=logits.numpy())
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    ours = paraformer_state_from_funasr(state, nnx.eval_shape(lambda: Paraformer(CFG, rngs=nnx.Rngs(0))))
    mask = np.arange(feats.shape[1])[None, :] < lengths[:, None]
    return dict(torch=torch, model=model, state=state, feats=feats, mask=mask, out=out, ours=ours)


@nnx.jit
def _encode(model, feats, mask):
    enc, enc_mask, alpha = model.encode(feats, mask, train=False)
    return enc, enc_mask, alpha, model.ctc(enc)


def test_encoder_output_and_ctc_logits(ref):
    out = ref["out"]
    enc, enc_mask, _, ctc = _encode(ref["ours"], jnp.asarray(ref["feats"]), jnp.asarray(ref["mask"]))
    np.testing.assert_array_equal(np.asarray(enc_mask).sum(1), out["enc_lens"])  # FunASR's lengths (24, 18)
    valid = np.asarray(enc_mask)
    close(np.asarray(enc)[valid], out["enc"][valid], "encoder output (valid frames)")
    close(np.asarray(ctc)[valid], out["ctc"][valid], "CTC logits (valid frames)")


def test_decoder_logits_on_funasr_acoustic_embeddings(ref):
    out = ref["out"]
    width = out["acoustic"].shape[1]
    token_mask = np.arange(width)[None, :] < out["token_lens"][:, None]
    enc_mask = np.arange(out["enc"].shape[1])[None, :] < out["enc_lens"][:, None]
    logits = nnx.jit(lambda m, *a: m.decoder(*a, train=False))(
        ref["ours"], jnp.asarray(out["acoustic"]), jnp.asarray(token_mask), jnp.asarray(out["enc"]),
        jnp.asarray(enc_mask))
    assert token_mask.sum() > 4, out["token_lens"]
    close(np.asarray(logits)[token_mask], out["logits"][token_mask], "decoder logits (valid tokens)")


def test_end_to_end_cif_and_greedy_decode_logits(ref):
    out = ref["out"]
    _, enc_mask, alpha, _ = _encode(ref["ours"], jnp.asarray(ref["feats"]), jnp.asarray(ref["mask"]))
    alpha, lens = np.asarray(alpha), out["enc_lens"]
    # Frames whose predictor conv (kernel 3) sees no padded encoder frame: all of the longest
    # utterance's, the shorter one's but its last.
    for b, n in enumerate(lens):
        keep = n if n == alpha.shape[1] else n - 1
        close(alpha[b, :keep], out["alphas"][b, :keep], f"CIF weights, utterance {b}", atol=1e-5)
    # The longest utterance end to end: tail, fires, token count, decoder.
    dec = nnx.jit(greedy_decode)(ref["ours"], jnp.asarray(ref["feats"][:1]), jnp.asarray(ref["mask"][:1]))
    n = int(out["token_lens"][0])
    assert int(dec["token_num"][0]) == n > 1
    close(np.asarray(dec["logits"])[0, :n], out["logits"][0, :n], "greedy_decode logits (longest utterance)")


def test_converter_names_every_missing_and_unexpected_tensor(ref):
    state = dict(ref["state"])
    state.pop("decoder.decoders.1.norm2.weight")
    state["decoder.decoders.2.norm1.weight"] = np.ones(D, np.float32)
    state["encoder.embed.out.1.pe"] = np.zeros((1, 5000, D), np.float32)  # an old buffer: dropped
    model = nnx.eval_shape(lambda: Paraformer(CFG, rngs=nnx.Rngs(0)))
    with pytest.raises(CheckpointError) as err:
        paraformer_state_from_funasr(state, model)
    msg = str(err.value)
    assert "decoder.decoders.1.norm2.weight" in msg and "decoder.decoders.2.norm1.weight" in msg
    assert ".pe" not in msg
    small = nnx.eval_shape(lambda: Paraformer(dataclasses.replace(CFG, vocab_size=VOCAB - 1), rngs=nnx.Rngs(0)))
    with pytest.raises(CheckpointError, match="wrong shape.*decoder.output_layer.weight"):
        paraformer_state_from_funasr(ref["state"], small)


def test_funasr_names_cover_the_state_dict(ref):
    """Every FunASR tensor (but BatchNorm's counter) has one of our parameters, and the reverse."""
    ours = nnx.eval_shape(lambda: Paraformer(CFG, rngs=nnx.Rngs(0)))
    leaves = {"kernel": "weight", "scale": "weight", "embedding": "weight", "mean": "running_mean",
              "var": "running_var"}
    names = {f"{funasr_name('.'.join(map(str, p[:-1])))}.{leaves.get(str(p[-1]), str(p[-1]))}"
             for p, v in nnx.to_flat_state(nnx.state(ours)) if isinstance(v, (nnx.Param, nnx.BatchStat))}
    assert names == {k for k in ref["state"] if not k.endswith("num_batches_tracked")}


def test_latest_rel_pos_would_not_match(ref):
    """The check has teeth: the same weights under ESPnet's "latest" positions miss FunASR by far."""
    cfg = dataclasses.replace(CFG, encoder=dataclasses.replace(CFG.encoder, rel_pos="latest"))
    latest = paraformer_state_from_funasr(ref["state"], nnx.eval_shape(lambda: Paraformer(cfg, rngs=nnx.Rngs(0))))
    enc, enc_mask, _, _ = _encode(latest, jnp.asarray(ref["feats"]), jnp.asarray(ref["mask"]))
    valid = np.asarray(enc_mask)
    assert np.abs(np.asarray(enc)[valid] - ref["out"]["enc"][valid]).max() > 1e-2


def test_load_funasr_checkpoint_files(ref, tmp_path):
    """FunASR's training checkpoint (``{"state_dict": ...}`` in ``model.pt.ep1``, DDP's ``module.``
    prefix) and ModelScope's plain ``model.pb``, torch tensors, read with ``weights_only``."""
    torch = ref["torch"]
    tensors = ref["model"].state_dict()
    torch.save({"state_dict": {"module." + k: v for k, v in tensors.items()}, "optimizer": {}},
               tmp_path / "model.pt.ep1")
    torch.save(dict(tensors), tmp_path / "model.pb")
    want = ref["state"]["decoder.output_layer.weight"].T
    for name in ("model.pt.ep1", "model.pb"):
        model = load_funasr_checkpoint(tmp_path / name, CFG)
        np.testing.assert_array_equal(np.asarray(model.decoder.output_layer.kernel[...]), want)
        assert model.cfg.encoder.rel_pos == "legacy" and model.cfg.encoder.funasr_padding
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_funasr_checkpoint(tmp_path / "missing.pt", CFG)
