"""How do the experiments' train steps scale over devices and parallel layouts?

Compiles the real sharded train step for each (device count, strategy), reads FLOPs,
memory and collective bytes from the compiled HLO, and predicts step time and weak-scaling
efficiency on TPU v4/v5e/v5p/v6e and H100/H200 (the baseline of every efficiency is the
same strategy on the fewest devices, from the same run). Compile time is reported apart.

    python benchmarks/scaling.py --exp crnn --simulate 8          # CPU: 8 simulated devices
    python benchmarks/scaling.py --exp pmam --simulate 8 --fast-compile   # PMAM pre-training step
    python benchmarks/scaling.py --exp pmam --case pmam_finetune --simulate 8
    python benchmarks/scaling.py --exp crnn                       # on a TPU/GPU host: also timed
    python -m jaxaudio.scaling --exp vit --strategies dp,fsdp,dp_fsdp,tp --simulate 8   # library case

Writes benchmarks/results/scaling_<case>_<preset>.{json,md,png} and *_collectives.png.
The same as ``experiments/run.py --mode=scale`` (options: ``experiments/run.py --help``).
"""
import sys


from experiments.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--mode=scale", *sys.argv[1:]]))
