"""Does ``--mode=predict`` reproduce a run's own evaluation?

Runs predict on the eval subset's wav files of a trained workdir, reads the score tsvs back
with sed_scores_eval, computes PSDS1 with sed_scores_eval, and compares it with the PSDS1 the
run's final evaluation stored (``evaluation/done.json``, teacher of the final stage).

    python benchmarks/predict_vs_evaluation.py --workdir workdirs/pmam [--name predict_vs_evaluation_pmam]

Writes benchmarks/results/<name>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--split", default="eval")
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)

    from sed_scores_eval import intersection_based
    from sed_scores_eval import io as sse_io

    from experiments import registry, run
    from jaxaudio.train import run_record, stages

    exp, _, config = run_record.load(args.workdir)
    system = registry.load(exp)
    evaluator = system.evaluators(config)[args.split]
    source = evaluator.source
    folder = os.path.dirname(source.records[0].path)
    out = tempfile.mkdtemp(prefix="predict_vs_eval_")
    started = time.time()
    code = run.main([f"--exp={exp}", "--mode=predict", "--workdir", args.workdir, "--input", folder, "--out", out,
                     "--plots", "0"])
    seconds = time.time() - started
    if code != 0:
        print(f"predict failed with exit code {code}", file=sys.stderr)
        return code
    scores = {r.clip_id: sse_io.read_sed_scores(os.path.join(out, "scores", f"{r.clip_id}.tsv"))
              for r in source.records}
    truth = {r.clip_id: list(r.events or []) for r in source.records}
    durations = {r.clip_id: r.duration or config.data.clip_seconds for r in source.records}
    psds1, *_ = intersection_based.psds(scores=scores, ground_truth=truth, audio_durations=durations,
                                        dtc_threshold=0.7, gtc_threshold=0.7, cttc_threshold=None, alpha_ct=0.0,
                                        alpha_st=1.0, max_efpr=100.0)
    stored = stages.read_done(os.path.join(args.workdir, "evaluation"))[f"{args.split}/teacher/psds1"]
    result = {"benchmark": "predict_vs_evaluation", "experiment": exp, "workdir": os.path.abspath(args.workdir),
              "split": args.split, "clips": len(scores), "predict_seconds": seconds,
              "psds1_from_predict_tsvs_sed_scores_eval": float(psds1), "psds1_run_evaluation": float(stored),
              "abs_difference": abs(float(psds1) - float(stored))}
    results = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "results")
    os.makedirs(results, exist_ok=True)
    path = os.path.join(results, f"{args.name or 'predict_vs_evaluation_' + exp}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
