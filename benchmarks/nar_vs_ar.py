"""Paraformer's claim, measured: single-step non-autoregressive decoding against the autoregressive
baseline on the same encoder sizes, data and schedule (``--exp=paraformer`` vs ``--exp=ar_asr``).

For two trained workdirs, on the test split both were evaluated on (the built-in corpus's held-out
voices, or the user's AISHELL-1 test set):
  CER                 every test utterance, batch 16: Paraformer greedy (one decoder pass), the AR
                      baseline with beam 1 (greedy) and beam 5 (length-normalised beam search),
                      both joint CTC / attention with the AR run's ``decode.ctc_weight``;
  time per utterance  batch 1 and batch 16, each the median over ``--repeats`` passes over the same
                      ``--utterances``, the methods interleaved within every repeat (so load from
                      other processes hits all alike), compile time reported apart. "recognise" is
                      waveform -> token ids (fbank, encoder, decoder); "encoder" is fbank + encoder
                      alone, so decoding = recognise - encoder.

The AR decoder re-runs its self-attention over the whole prefix at every step (no key/value cache:
``jaxaudio/models/ar_asr.py``); a cached decoder does less work per step, so the speed-up measured
here is an upper bound for a cached AR baseline of the same size. Both run on the CPU threads the
process is pinned to (``--threads``), load average recorded before and after.

    python benchmarks/nar_vs_ar.py --paraformer WORKDIR --ar WORKDIR [--threads 2] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks.encoder_vs_torch import pin_threads  # noqa: E402

RESULTS = pathlib.Path(__file__).parent / "results"


def load_run(workdir: str):
    """(system, config, model) of a finished training workdir."""
    from flax import nnx

    from experiments import registry
    from jaxaudio.train import run_record
    from jaxaudio.train.trainer import restore_final

    name, _, config = run_record.load(workdir)
    system = registry.load(name)
    graphdef, state, _ = restore_final(system, config, workdir)
    return system, config, nnx.merge(graphdef, state.params, state.model_state)


def recognisers(para, ar) -> dict:
    """name -> (jitted fn(audio, audio_len) -> {tokens, token_len}, jitted encoder-only fn, the run's config)."""
    import jax

    from experiments.ar_asr import system as ar_system
    from experiments.asr.training import eval_features
    from experiments.paraformer import system as paraformer_system

    def encoder_only(config, model):
        return jax.jit(lambda audio, n: model.encode(*eval_features(config, {"audio": audio, "audio_len": n}),
                                                     train=False)[0])

    (_, p_config, p_model), (_, a_config, a_model) = para, ar
    out = {"paraformer": (jax.jit(lambda a, n: paraformer_system.decode(
        p_model, *eval_features(p_config, {"audio": a, "audio_len": n}))), encoder_only(p_config, p_model), p_config)}
    options = ar_system.decode_options(a_config)   # the run's CTC weight and pre-beam; beams 1 and 5 here
    for beam in (1, 5):
        kw = {**options, "beam": beam}
        out[f"ar_beam{beam}"] = (jax.jit(lambda a, n, kw=kw: ar_system.decode(
            a_model, *eval_features(a_config, {"audio": a, "audio_len": n}), **kw)),
            encoder_only(a_config, a_model), a_config)
    return out


def test_batches(config, batch: int, limit: int | None = None) -> tuple[list[dict], list[str]]:
    """Host batches of the test split (fixed shape) and the reference texts of their valid rows."""
    import numpy as np

    from experiments.asr.data import ASRData
    from jaxaudio.data.source import eval_batches

    data = ASRData(config)
    source = data.source("test")
    texts = [u.text for u in data.utterances("test")]
    batches, refs = [], []
    for host in eval_batches(source, batch):
        valid = np.asarray(host["valid"], bool)
        if limit is not None and len(refs) + int(valid.sum()) > limit:
            break
        batches.append({"audio": host["audio"], "audio_len": host["audio_len"], "valid": valid})
        refs += [texts[i] for i in np.asarray(host["index"])[valid]]
    return batches, refs


def transcripts(fn, batches, config) -> list[str]:
    import numpy as np

    from experiments.asr.data import ASRData
    from jaxaudio.evaluators.asr import hypotheses

    decode = ASRData(config).tokenizer.decode
    hyps = []
    for b in batches:
        out = {k: np.asarray(v) for k, v in fn(b["audio"], b["audio_len"]).items()}
        hyps += [h for h, ok in zip(hypotheses(out, decode), b["valid"]) if ok]
    return hyps


def block(x):
    import jax

    return jax.tree_util.tree_map(lambda a: a.block_until_ready(), x)


def pass_seconds(fn, batches) -> float:
    start = time.perf_counter()
    for b in batches:
        block(fn(b["audio"], b["audio_len"]))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paraformer", required=True, help="a finished --exp=paraformer workdir")
    parser.add_argument("--ar", required=True, help="a finished --exp=ar_asr workdir")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--utterances", type=int, default=48, help="timed utterances per batch size")
    parser.add_argument("--out", default=str(RESULTS / "nar_vs_ar"))
    args = parser.parse_args()
    cpus = pin_threads(args.threads)
    load_before = os.getloadavg()

    from jaxaudio.evaluators.asr import score_texts   # jax is imported only now, after the pinning

    para, ar = load_run(args.paraformer), load_run(args.ar)
    methods = recognisers(para, ar)
    from experiments.ar_asr import system as ar_system

    result = {"paraformer_workdir": args.paraformer, "ar_workdir": args.ar, "threads": args.threads, "cpus": cpus,
              "ar_decode": ar_system.decode_options(ar[1]),
              "machine": platform.processor() or platform.machine(), "repeats": args.repeats, "cer": {},
              "test_utterances": {}, "compile_s": {}, "timing": {}}

    for name, (fn, _, config) in methods.items():   # CER on the whole test split
        batches, refs = test_batches(config, 16)
        hyps = transcripts(fn, batches, config)
        result["cer"][name] = score_texts(refs, hyps)["cer"]
        result["test_utterances"][name] = len(refs)
        print(f"{name}: test CER {result['cer'][name]:.4f} over {len(refs)} utterances", flush=True)

    for batch in (1, 16):
        sets = {name: test_batches(config, batch, args.utterances)[0] for name, (_, _, config) in methods.items()}
        utts = {name: int(sum(b["valid"].sum() for b in bs)) for name, bs in sets.items()}
        for name, (fn, enc, _) in methods.items():   # compile (and first call) apart
            b = sets[name][0]
            start = time.perf_counter()
            block(fn(b["audio"], b["audio_len"]))
            block(enc(b["audio"], b["audio_len"]))
            result["compile_s"][f"{name}/batch{batch}"] = time.perf_counter() - start
        times = {(name, part): [] for name in methods for part in ("recognise", "encoder")}
        names = list(methods)
        for r in range(args.repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:   # rotate the order every repeat
                fn, enc, _ = methods[name]
                times[(name, "recognise")].append(pass_seconds(fn, sets[name]) / utts[name])
                times[(name, "encoder")].append(pass_seconds(enc, sets[name]) / utts[name])
        for name in methods:
            rec = statistics.median(times[(name, "recognise")])
            enc = statistics.median(times[(name, "encoder")])
            result["timing"][f"{name}/batch{batch}"] = {
                "utterances": utts[name], "recognise_ms": 1e3 * rec, "encoder_ms": 1e3 * enc,
                "decode_ms": 1e3 * (rec - enc), "recognise_runs_ms": [1e3 * t for t in times[(name, "recognise")]]}
            print(f"batch {batch} {name}: {1e3 * rec:.2f} ms/utt (encoder {1e3 * enc:.2f})", flush=True)
        for beam in (1, 5):
            p, a = result["timing"][f"paraformer/batch{batch}"], result["timing"][f"ar_beam{beam}/batch{batch}"]
            result["timing"][f"speedup_beam{beam}/batch{batch}"] = {
                "recognise": a["recognise_ms"] / p["recognise_ms"],
                "decode": a["decode_ms"] / p["decode_ms"] if p["decode_ms"] > 0 else None}
    result["load_average_before"], result["load_average_after"] = load_before, os.getloadavg()
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def markdown(r: dict) -> str:
    lines = [f"# Paraformer vs autoregressive baseline: decoding speed and CER ({r['machine']}, "
             f"{r['threads']} threads, load average {r['load_average_before'][0]:.2f} before / "
             f"{r['load_average_after'][0]:.2f} after)", "",
             "| decoder | test CER | batch | recognise ms/utt | encoder ms/utt | decode ms/utt |",
             "|---|---|---|---|---|---|"]
    for batch in (1, 16):
        for name in ("paraformer", "ar_beam1", "ar_beam5"):
            t = r["timing"][f"{name}/batch{batch}"]
            lines.append(f"| {name} | {r['cer'][name]:.4f} | {batch} | {t['recognise_ms']:.2f} | "
                         f"{t['encoder_ms']:.2f} | {t['decode_ms']:.2f} |")
    lines += ["", "| speed-up of Paraformer | batch | recognise | decode only |", "|---|---|---|---|"]
    for batch in (1, 16):
        for beam in (1, 5):
            s = r["timing"][f"speedup_beam{beam}/batch{batch}"]
            dec = f"{s['decode']:.1f}x" if s["decode"] is not None else "n/a"
            lines.append(f"| vs AR beam {beam} | {batch} | {s['recognise']:.1f}x | {dec} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
