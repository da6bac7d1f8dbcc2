"""How do the experiments' train steps scale over devices and parallel layouts?

Compiles the real sharded train step for each (device count, strategy), reads FLOPs,
memory and collective bytes from the compiled HLO, and predicts step time and weak-scaling
efficiency on TPU v4/v5e/v5p/v6e and H100/H200 (the baseline of every efficiency is the
same strategy on the fewest devices, from the same run). Compile time is reported apart.

    python benchmarks/scaling.py --exp crnn --simulate 8          # CPU: 8 simulated devices
    python benchmarks/scaling.py --exp vit --strategies dp,fsdp,dp_fsdp,tp --simulate 8
    python benchmarks/scaling.py --exp pmam --simulate 8 --fast-compile   # PMAM pre-training step
    python benchmarks/scaling.py --exp crnn                       # on a TPU/GPU host: also timed

Writes benchmarks/results/scaling_<exp>_<preset>.{json,md,png} and *_collectives.png.
Options: see ``python -m jaxaudio.scaling --help``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxaudio.scaling.__main__ import main  # noqa: E402

if __name__ == "__main__":
    main()
