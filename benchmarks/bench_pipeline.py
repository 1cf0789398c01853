"""Whole-pipeline benchmark: a from-scratch `dvc repro` of every default model, as a ratio over
the models' pure `fit` time in the same run (goal ≤ 1.3×), then a no-op `dvc repro` (goal ≤ 2 s).

Runs in a throwaway copy of the project with its own MLflow store. MNIST_MIRROR defaults to
../shared/datasets/mnist. Usage: python benchmarks/bench_pipeline.py [--noop-repeats 5]
"""

from __future__ import annotations

import argparse
import json
import sys

import yaml
from _common import median, project_copy, timed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noop-repeats", type=int, default=5)
    args = parser.parse_args()
    project = project_copy()
    python = sys.executable
    full = timed([python, "-m", "dvc", "repro"], project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    paths = params["paths"]
    fits = {}
    for name in params["models"]:
        config = json.loads((project / paths["models_dir"] / name / "model" / "config.json").read_text())
        fits[name] = config["fit_seconds"]
    noop = [timed([python, "-m", "dvc", "repro"], project).seconds for _ in range(args.noop_repeats)]
    total_fit = sum(fits.values())
    print(f"project copy: {project}")
    for name, seconds in fits.items():
        print(f"  fit {name:<16} {seconds:8.1f} s")
    print(f"from-scratch `dvc repro`: {full.seconds:.1f} s wall; sum of fit times {total_fit:.1f} s; "
          f"ratio {full.seconds / total_fit:.2f}x (goal ≤ 1.3x)")
    print(f"no-op `dvc repro`: median {median(noop):.2f} s over {len(noop)} runs {[round(s, 2) for s in noop]} (goal ≤ 2 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
