"""Train on your own sounds, end to end: sound banks -> soundscapes -> training -> PSDS vs untrained.

The banks are the example banks of ``jaxaudio.data.synth.demo_banks`` (five classes with their
own names, files at 16-48 kHz, mono and stereo); the soundscapes come from
``python -m jaxaudio.data.synth --foreground ... --background ...``; the run is
``experiments/run.py --exp=EXP --data_dir OUT`` exactly as a user types it. The untrained
model is the same network, freshly initialised, through the same evaluator.

    python benchmarks/own_sounds.py [--exp pmam] [--preset tiny] [--root /tmp/own_sounds]

Writes benchmarks/results/own_sounds_<exp>_<preset>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time


def untrained_metrics(workdir: str) -> dict:
    """Every evaluator's metrics of the run's network, freshly initialised (``model_of(None)``)."""
    from experiments import registry
    from jaxaudio.train import run_record
    from jaxaudio.train.trainer import Trainer

    exp, _, config = run_record.load(workdir)
    system = registry.load(exp)
    trainer = Trainer(system, config, workdir)
    graphdef, state, shardings = trainer.model_of(None)
    predict = trainer.predict_step(graphdef, shardings)
    return {f"{split}/{k}": v for split, evaluator in system.evaluators(config).items()
            for k, v in evaluator.run(lambda batch: predict(state.params, state.model_state, batch)).items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--exp", default="pmam")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--root", default="/tmp/own_sounds", help="banks, soundscapes and workdir go here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from experiments import run
    from jaxaudio.data.synth.__main__ import main as synth
    from jaxaudio.data.synth.demo_banks import write_demo_banks

    fg, bg = write_demo_banks(os.path.join(args.root, "banks"), seed=args.seed)
    data = os.path.join(args.root, "soundscapes")
    started = time.time()
    if synth(["--task", "desed", "--foreground", str(fg), "--background", str(bg), "--out", data,
              "--seed", str(args.seed), "--quiet"]) != 0:
        return 1
    synth_seconds = time.time() - started
    workdir = os.path.join(args.root, f"{args.exp}_{args.preset}")
    started = time.time()
    code = run.main([f"--exp={args.exp}", f"--preset={args.preset}", "--data_dir", data, "--workdir", workdir])
    if code != 0:
        return code
    train_seconds = time.time() - started
    with open(os.path.join(workdir, "metrics.json")) as f:
        trained = json.load(f)["final_eval"]
    untrained = untrained_metrics(workdir)
    rows = {key: {"trained_teacher": trained[key.replace("/", "/teacher/", 1)],
                  "trained_student": trained[key.replace("/", "/student/", 1)], "untrained": untrained[key]}
            for key in sorted(untrained) if key.endswith(("psds1", "psds2", "frame_auc"))}
    with open(os.path.join(data, "metadata", "classes.txt")) as f:
        classes = f.read().split()
    result = {"benchmark": "own_sounds", "experiment": args.exp, "preset": args.preset, "seed": args.seed,
              "classes": classes, "synth_seconds": round(synth_seconds, 1), "train_seconds": round(train_seconds, 1),
              "load_average": os.getloadavg(), "metrics": rows}
    results = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    os.makedirs(results, exist_ok=True)
    path = os.path.join(results, f"own_sounds_{args.exp}_{args.preset}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
