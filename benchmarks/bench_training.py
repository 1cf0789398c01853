"""Training benchmark, side by side with the seed's own code (../shared/bench/seed_reference.py):
seconds per epoch of `mlp` and `cnn` (goal ≤ 1.1× the reference), the train stage's MLflow
overhead (tracking set-up + logging, outside `fit`; goal ≤ 2 s), and its peak memory
(goal ≤ 3 GiB). Reference and project runs alternate, so drift hits both alike.

Usage: python benchmarks/bench_training.py [--models mlp cnn] [--epochs 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import re
import sys

import yaml
from _common import SHARED, child_env, median, project_copy, timed

REFERENCE = SHARED / "bench" / "seed_reference.py"
MIRROR = SHARED / "datasets" / "mnist"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    project = project_copy()
    python = sys.executable
    params_path = project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    for name in args.models:
        params["models"][name]["epochs"] = args.epochs
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    timed([python, "-m", "dvc", "repro", "preprocess"], project)

    print(f"{args.epochs} epochs, {args.repeats} alternating repeats; project copy {project}")
    for name in args.models:
        seed = params["models"][name]["seed"]
        ours, reference, overhead, peak, breakdown = [], [], [], [], []
        for _ in range(args.repeats):
            ref = timed([python, str(REFERENCE), str(MIRROR), name, str(args.epochs), str(seed)], project)
            ref_result = json.loads(ref.stdout.strip().splitlines()[-1])
            reference.append(ref_result["s_per_epoch"])
            run = timed([python, "pipeline/train.py", name], project, child_env())
            config = json.loads((project / "models" / name / "model" / "config.json").read_text())
            ours.append(config["fit_seconds"] / config["epochs"])
            found = re.search(r"stage timing: (\{.*\})", run.stdout)
            timing = json.loads(found.group(1)) if found else {}
            overhead.append(timing.get("tracking set-up", float("nan")) + timing.get("MLflow logging", float("nan")))
            breakdown.append(", ".join(f"{key} {value:.1f} s" for key, value in timing.items() if key not in ("stage", "fit")))
            peak.append(run.peak_rss_mib)
        ratio = median(ours) / median(reference)
        print(f"{name}: s/epoch ours median {median(ours):.2f} vs reference {median(reference):.2f} "
              f"-> ratio {ratio:.2f}x (goal ≤ 1.1x); runs ours {[round(v, 2) for v in ours]} ref {[round(v, 2) for v in reference]}")
        print(f"{name}: MLflow overhead (tracking set-up + logging) median {median(overhead):.2f} s (goal ≤ 2 s); "
              f"peak RSS median {median(peak):.0f} MiB (goal ≤ 3072 MiB)")
        print(f"{name}: the stage's time besides fit, last run: {breakdown[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
