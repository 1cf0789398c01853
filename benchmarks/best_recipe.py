"""The best recipe (params.yaml ``recipes.best``) trained and scored by the project's own stages, one seed at a time.

Each seed runs ``pipeline/train.py best`` and ``pipeline/evaluate.py best`` in a copy of the project
whose params add the recipe as ``models.best`` (what ``make best`` does in a DVC experiment),
and appends its result to benchmarks/results/best.json: test accuracy, corruption mean and each
corruption, UCI accuracy, its validation results, how many digits it fitted on, fit time and the
machine. Runs recorded before the validation split fitted on all 60,000 training digits (they
have no ``fit_digits``). Hours on a CPU (``bench_training.py --recipes best`` gives
the time per epoch first); a seed already in the file is not run again.

Usage: python benchmarks/best_recipe.py [--seeds 0 1 2] [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone

import numpy as np
import yaml
from _common import REPO_ROOT, child_env, project_copy, timed

from mnist_pipeline.atomic import write_json
from mnist_pipeline.tracking.provenance import machine_facts

RESULTS = REPO_ROOT / "benchmarks" / "results" / "best.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"benchmark": "best recipe", "runs": []}
    project = project_copy()
    params = yaml.safe_load((project / "params.yaml").read_text())
    recipe = params["recipes"]["best"] | ({"epochs": args.epochs} if args.epochs else {})
    timed([sys.executable, "-m", "dvc", "repro", "testsets", "valsets"], project)
    for seed in args.seeds:
        fit_digits = len(np.load(project / "data/processed/train/labels.npy"))
        if any(run["seed"] == seed and run["epochs"] == recipe["epochs"] and run.get("fit_digits", 60_000) == fit_digits for run in results["runs"]):
            continue
        params["models"]["best"] = recipe | {"seed": seed}
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        for stage in ("train", "evaluate"):
            timed([sys.executable, f"pipeline/{stage}.py", "best"], project, child_env())
        config = json.loads((project / "models/best/model/config.json").read_text())
        metrics = json.loads((project / "metrics/best.json").read_text())
        run = {
            "seed": seed, "epochs": config["epochs"], "fit_seconds": config["fit_seconds"],
            **{key: metrics[key] for key in ("accuracy", "corruption_mean", "uci_accuracy", "ece", "corruption")},
            "validation": {key: metrics["validation"][key] for key in ("accuracy", "corruption_mean", "ece")}, "fit_digits": fit_digits,
            "machine": machine_facts(), "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        results["runs"].append(run)
        write_json(RESULTS, results)
        print(f"best seed {seed}: {100 * run['accuracy']:.2f}% after {run['epochs']} epochs, fit {run['fit_seconds'] / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
