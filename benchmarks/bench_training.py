"""Training benchmark, side by side with the seed's own code (../shared/bench/seed_reference.py).

Default: seconds per epoch of `mlp` and `cnn` (goal ≤ 1.1× the reference), the train stage's
MLflow overhead (tracking set-up + logging, outside `fit`; goal ≤ 2 s), and its peak memory
(goal ≤ 3 GiB). Reference and project runs alternate, so drift hits both alike. Written to
benchmarks/results/training_epochs.json.

``--fit-ratio fast ...``: the whole fit of each named model, as params.yaml sets it, against the
seed CNN's whole fit (10 epochs) run by the seed's own code, alternating; the ratio of medians is
the goal of `fast` (≤ 1/10; stretch ≤ 1/4). ``--recipes best --recipe-epochs 2``: a recipe
(params.yaml ``recipes``) trained for that many epochs beside them, for its seconds per epoch.
Written to benchmarks/results/training.json.

Usage: python benchmarks/bench_training.py [--models mlp cnn] [--epochs 3] [--repeats 3]
       python benchmarks/bench_training.py --fit-ratio fast cnn [--recipes best --recipe-epochs 2] [--repeats 3]
       (either: [--output FILE]; default training_epochs.json, with --fit-ratio training.json)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

import yaml
from _common import RESULTS, SHARED, child_env, figure, median, project_copy, ratio, timed, write_results

from mnist_pipeline.tracking.provenance import machine_facts

REFERENCE = SHARED / "bench" / "seed_reference.py"
MIRROR = SHARED / "datasets" / "mnist"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fit-ratio", nargs="+", metavar="MODEL", help="whole fits of these models against the seed CNN's")
    parser.add_argument("--recipes", nargs="+", default=[], metavar="RECIPE", help="with --fit-ratio: also these recipes, shortened")
    parser.add_argument("--recipe-epochs", type=int, default=2)
    parser.add_argument("--output", type=Path, help="default: benchmarks/results/training_epochs.json, with --fit-ratio training.json")
    args = parser.parse_args()
    project = project_copy()
    python = sys.executable
    if args.fit_ratio:
        return fit_ratio(project, args.fit_ratio, args.recipes, args.recipe_epochs, args.repeats, args.output or RESULTS / "training.json")
    params_path = project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    for name in args.models:
        params["models"][name]["epochs"] = args.epochs
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    timed([python, "-m", "dvc", "repro", "preprocess"], project)

    print(f"{args.epochs} epochs, {args.repeats} alternating repeats; project copy {project}")
    results = {}
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
        ratio_value = median(ours) / median(reference)
        print(f"{name}: s/epoch ours median {median(ours):.2f} vs reference {median(reference):.2f} "
              f"-> ratio {ratio_value:.2f}x (goal ≤ 1.1x); runs ours {[round(v, 2) for v in ours]} ref {[round(v, 2) for v in reference]}")
        print(f"{name}: MLflow overhead (tracking set-up + logging) median {median(overhead):.2f} s (goal ≤ 2 s); "
              f"peak RSS median {median(peak):.0f} MiB (goal ≤ 3072 MiB)")
        print(f"{name}: the stage's time besides fit, last run: {breakdown[-1]}")
        results[name] = {
            "s_per_epoch": figure(ours),
            "reference_s_per_epoch": figure(reference),
            "ratio_to_reference": ratio(ratio_value, goal_max=1.1),
            "mlflow_overhead_s": figure(overhead, goal_max=2.0),
            "peak_rss_mib": figure(peak, 0, goal_max=3072.0),
            "stage_timing_last_run": timing,
        }
    write_results(args.output or RESULTS / "training_epochs.json", "training per epoch", {
        "epochs": args.epochs,
        "repeats": args.repeats,
        "reference": str(REFERENCE.relative_to(SHARED.parent)),
        "models": results,
    })
    return 0


SEED_CNN_EPOCHS = 10  # the seed notebook's


def fit_ratio(project: Path, models: list[str], recipes: list[str], recipe_epochs: int, repeats: int, output: Path) -> int:
    """Each model's whole fit (its train stage, params.yaml as it is) against the seed CNN's, alternating."""
    python = sys.executable
    params_path = project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    for name in recipes:  # a recipe joins models here, as `make best` adds it in an experiment, shortened
        params["models"][name] = params["recipes"][name] | {"epochs": recipe_epochs}
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    timed([python, "-m", "dvc", "repro", "preprocess"], project)
    names = [*models, *recipes]
    reference: list[float] = []
    fits: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        ref = timed([python, str(REFERENCE), str(MIRROR), "cnn", str(SEED_CNN_EPOCHS), "0"], project)
        reference.append(json.loads(ref.stdout.strip().splitlines()[-1])["fit_s"])
        for name in names:
            timed([python, "pipeline/train.py", name], project, child_env())
            fits[name].append(json.loads((project / "models" / name / "model" / "config.json").read_text())["fit_seconds"])
        print(f"repeat {repeat + 1}/{repeats}: seed CNN {reference[-1]:.1f} s; " + ", ".join(f"{n} {fits[n][-1]:.1f} s" for n in names), flush=True)
    # Each model's entry holds the seed CNN's fits it was measured beside; models measured on
    # another day (same machine) keep theirs, so one model can be measured again on its own.
    machine = machine_facts()
    earlier = json.loads(output.read_text()) if output.exists() else {}
    results = earlier.get("models", {}) if earlier.get("machine") == machine else {}
    measured = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for name in names:
        epochs = params["models"][name].get("epochs", 1)
        ratio = median(fits[name]) / median(reference)
        results[name] = {
            "fit_seconds": {"median": round(median(fits[name]), 2), "runs": [round(v, 2) for v in fits[name]]},
            "seed_cnn_fit_seconds": {"median": round(median(reference), 2), "runs": [round(v, 2) for v in reference]},
            "epochs": epochs,
            "seconds_per_epoch": round(median(fits[name]) / epochs, 2),
            "ratio_to_seed_cnn": round(ratio, 4),
            "recipe": name in recipes,
            "repeats": repeats,
            "measured_utc": measured,
        }
        print(f"{name}: fit median {median(fits[name]):.1f} s ({epochs} epochs) vs the seed CNN's {median(reference):.1f} s "
              f"-> {ratio:.3f}x, 1/{1 / ratio:.1f}" + (" (goal ≤ 1/10, stretch ≤ 1/4)" if name == "fast" else ""))
    write_results(output, "training fit ratio", {"seed_cnn_epochs": SEED_CNN_EPOCHS, "models": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
