"""Are our jitted PaSST-S and AST encoders at least as fast as their PyTorch references on the CPU?

PaSST: hear21passt's PaSST-S (its random init, copied by ``jaxaudio.convert.passt``) on a batch of
10-s clips as 128 x 998 log-mel. AST: Hugging Face ``transformers``' ``ASTModel`` at its default
(AST-base, 128 x 1024 fbank; random init, copied by ``jaxaudio.convert.ast``). Each returns the final
normed tokens of all 12 blocks. Two measures, each the median over ``--repeats``, with the two
frameworks interleaved in every repeat so that load from other processes hits both alike:
  forward           ours: jit(model) ; torch: eager, ``inference_mode``
  forward+backward  loss = mean(tokens**2), gradients for every parameter
                    ours: jit(value_and_grad) ; torch: eager ``loss.backward()``
Our compile time (lower + compile) and torch's first call are reported apart.

Threads. Both frameworks get the same ``--threads`` cores: the process is pinned to that many
CPUs with ``sched_setaffinity`` before either library is imported (XLA's CPU thread pool is
sized from the CPUs the process may run on), torch gets ``set_num_threads(n)`` and one
inter-op thread, and OMP/MKL thread variables are set to n for any library that reads them.

Needs the optional torch stack (torch + hear21passt + transformers, as ``.ci/run`` installs)::

    python benchmarks/encoder_vs_torch.py [--encoders passt ast] [--threads 2] [--batch 2] [--repeats 3] [--depth 12]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pathlib
import platform
import statistics
import sys
import time
import types

RESULTS = pathlib.Path(__file__).parent / "results" / "encoder_vs_torch.json"


def pin_threads(n: int) -> list[int]:
    """Restrict this process to ``n`` CPUs; must run before jax/torch start their thread pools."""
    cpus = sorted(os.sched_getaffinity(0))[:n]
    os.sched_setaffinity(0, cpus)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    return cpus


def import_passt():
    """``hear21passt.models.passt``; timm (needed only for downloads) is stubbed if it cannot import."""
    try:
        from timm.models._hub import download_cached_file  # noqa: F401
    except ImportError:
        for name in [k for k in sys.modules if k == "timm" or k.startswith("timm.")]:
            sys.modules.pop(name)
        hub = types.ModuleType("timm.models._hub")

        def no_download(*args, **kwargs):
            raise RuntimeError("this benchmark never downloads weights")

        hub.download_cached_file = no_download
        sys.modules.update({"timm": types.ModuleType("timm"), "timm.models": types.ModuleType("timm.models"),
                            "timm.models._hub": hub})
    import hear21passt.models.passt as module

    module.first_RUN = False  # it prints tensor shapes on the first call otherwise
    return module


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def passt_case(args, torch, jnp, np, nnx):
    """(ours(params, x) -> final tokens, params, our input, torch forward -> final tokens, torch loss)."""
    import dataclasses

    from jaxaudio.convert.passt import passt_to_nnx
    from jaxaudio.nn.vit import PASST_S, ViT

    passt = import_passt()
    frames = args.frames or 998
    cfg = dataclasses.replace(PASST_S, depth=args.depth, max_frames=frames, out_layer=None)
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        reference = passt.get_model(arch="passt_s_swa_p16_128_ap476", pretrained=False, input_tdim=frames)
    reference.blocks = reference.blocks[: args.depth]
    reference.eval()
    captured = {}
    reference.norm.register_forward_hook(lambda module, inputs, output: captured.__setitem__("final", output))
    model = ViT(cfg, rngs=nnx.Rngs(0))
    nnx.update(model, passt_to_nnx(reference.state_dict(), cfg))
    graphdef, params = nnx.split(model)
    mel = np.random.default_rng(0).standard_normal((args.batch, 128, frames)).astype(np.float32)
    mel_torch = torch.from_numpy(mel[:, None])

    def ours(p, x):
        return nnx.merge(graphdef, p)(x, train=False, return_layer=None)["final"]

    def torch_final():
        reference.forward_features(mel_torch)
        return captured["final"]

    info = {"frames": frames, "dim": cfg.dim, "tokens": 2 + cfg.freq_patches * cfg.time_patches,
            "reference": "hear21passt passt_s_swa_p16_128_ap476"}
    return ours, params, jnp.asarray(np.swapaxes(mel, 1, 2)), reference, torch_final, info


def ast_case(args, torch, jnp, np, nnx):
    """The same for AST-base: transformers' ASTModel against our ASTEncoder."""
    import dataclasses

    import transformers

    from jaxaudio.convert.ast import ast_to_nnx
    from jaxaudio.nn.ast import AST_BASE, ASTEncoder

    frames = args.frames or 1024
    torch.manual_seed(0)
    reference = transformers.ASTModel(transformers.ASTConfig(num_hidden_layers=args.depth, max_length=frames)).eval()
    cfg = dataclasses.replace(AST_BASE, depth=args.depth, max_frames=frames, out_layer=None)
    model = ast_to_nnx({k: v.numpy() for k, v in reference.state_dict().items()}, ASTEncoder(cfg, rngs=nnx.Rngs(0)))
    graphdef, params = nnx.split(model)
    fbank = np.random.default_rng(0).standard_normal((args.batch, frames, 128)).astype(np.float32)
    fbank_torch = torch.from_numpy(fbank)

    def ours(p, x):
        return nnx.merge(graphdef, p)(x, train=False)["final"]

    def torch_final():
        return reference(fbank_torch).last_hidden_state

    info = {"frames": frames, "dim": cfg.dim, "tokens": cfg.num_positions,
            "reference": f"transformers {transformers.__version__} ASTModel "
                         f"(attention {reference.config._attn_implementation})"}
    return ours, params, jnp.asarray(fbank), reference, torch_final, info


CASES = {"passt": passt_case, "ast": ast_case}


def bench(name, case, args, jax, torch, np):
    ours_forward, params, x, reference, torch_final, info = case

    def ours_loss(p, x):
        return (ours_forward(p, x) ** 2).mean()

    def torch_forward():
        with torch.inference_mode():
            return torch_final()

    def torch_forward_backward():
        reference.zero_grad(set_to_none=True)
        loss = torch_final().pow(2).mean()
        loss.backward()
        return loss

    results = {}
    for measure, ours_fn, torch_fn in (("forward", ours_forward, torch_forward),
                                       ("forward_backward", jax.value_and_grad(ours_loss), torch_forward_backward)):
        start = time.perf_counter()
        compiled = jax.jit(ours_fn).lower(params, x).compile()
        compile_s = time.perf_counter() - start
        ours_first = timed(lambda: jax.block_until_ready(compiled(params, x)))
        torch_first = timed(torch_fn)
        ours_s, torch_s = [], []
        for _ in range(args.repeats):
            torch_s.append(timed(torch_fn))
            ours_s.append(timed(lambda: jax.block_until_ready(compiled(params, x))))
        ours_med, torch_med = statistics.median(ours_s), statistics.median(torch_s)
        results[measure] = {
            "ours_median_s": ours_med, "torch_median_s": torch_med, "ratio_ours_over_torch": ours_med / torch_med,
            "ours_s": ours_s, "torch_s": torch_s, "ours_compile_s": compile_s, "ours_first_call_s": ours_first,
            "torch_first_call_s": torch_first,
        }
        print(f"{name:6s} {measure:17s} ours {ours_med:7.3f} s   torch {torch_med:7.3f} s   ours/torch "
              f"{ours_med / torch_med:5.2f}   (ours compile {compile_s:.1f} s, torch first call {torch_first:.2f} s)",
              flush=True)
    got = np.asarray(jax.jit(ours_forward)(params, x))
    want = torch_forward().numpy()
    return {**info, "max_abs_diff_final_tokens": float(np.abs(got - want).max()), "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoders", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--frames", type=int, default=0, help="0: each encoder's 10-s input (998 / 1024)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--depth", type=int, default=12, help="fewer blocks for a quick smoke run")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS)
    args = parser.parse_args()
    cpus = pin_threads(args.threads)
    load_before = os.getloadavg()

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from flax import nnx

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    encoders = {}
    for name in args.encoders:
        encoders[name] = bench(name, CASES[name](args, torch, jnp, np, nnx), args, jax, torch, np)
        print(f"{name}: max |ours - torch| on the final tokens {encoders[name]['max_abs_diff_final_tokens']:.2e}")
    report = {
        "question": "jitted PaSST-S / AST encoders (ours) vs their PyTorch references in eager mode, same CPU and "
                    "threads, interleaved",
        "config": {"batch": args.batch, "n_mels": 128, "depth": args.depth, "repeats": args.repeats,
                   "threads": args.threads, "pinned_cpus": cpus},
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "versions": {"jax": jax.__version__, "torch": torch.__version__, "python": platform.python_version(),
                     "jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision)},
        "encoders": encoders,
    }
    print(f"load average before {load_before[0]:.1f}, after {report['machine']['loadavg_after'][0]:.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
