"""Child-process probe: load a .tflite model, time repeated runs, report peak resident memory.

Run as a script (``python measure.py MODEL THREADS RUNS WARMUP``; MODEL ``-`` loads nothing, the
baseline) so the process holds only numpy and the LiteRT runtime, as a device would, and not
JAX or TensorFlow. Prints one JSON line.

Why two hops: Linux carries a process's ``ru_maxrss`` across ``exec`` from the image it forked
from, so a child of the (multi-GiB) exporting process would report the parent's memory. This
script therefore re-launches itself from its own small image and reads the grandchild's peak
with ``getrusage(RUSAGE_CHILDREN)``.
"""
import json
import resource
import sys
import time

import numpy as np


def main(argv):
    path, threads, runs, warmup = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    from ai_edge_litert.interpreter import Interpreter

    result = {"threads": threads}
    if path != "-":
        started = time.perf_counter()
        interpreter = Interpreter(model_path=path, num_threads=threads)
        interpreter.allocate_tensors()
        result["load_seconds"] = time.perf_counter() - started
        (inp,) = interpreter.get_input_details()
        example = np.random.default_rng(0).standard_normal(inp["shape"]).astype(np.float32) * 0.1
        times = []
        for i in range(warmup + runs):
            interpreter.set_tensor(inp["index"], example)
            started = time.perf_counter()
            interpreter.invoke()
            elapsed = time.perf_counter() - started
            if i >= warmup:
                times.append(elapsed)
            elif i == 0:
                result["first_run_seconds"] = elapsed
        result["latency_ms"] = [t * 1e3 for t in times]
    print(json.dumps(result))


def launch(argv):
    """Run ``main`` in a fresh child of this small process; add that child's peak RSS (KiB)."""
    import os
    import subprocess

    env = dict(os.environ, JAXAUDIO_MEASURE_INNER="1")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), *argv], env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        sys.exit(proc.returncode)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["peak_rss_kb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    print(json.dumps(result))


if __name__ == "__main__":
    import os

    (main if os.environ.get("JAXAUDIO_MEASURE_INNER") else launch)(sys.argv[1:])
