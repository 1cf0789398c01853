"""How `robust` was chosen: candidate recipes scored on the validation sets only, then reported on the test sets.

Each candidate is params.yaml's `models.robust` with some keys replaced, trained by the project's
own `training.fit` on the training digits (the first 54,000) with its temperature fitted on the
validation digits, and scored by `evaluation.score_validation_sets` (the validation digits and
the validation corruptions) over two seeds, each fit in a fresh process as the train stage runs.
The seed's CNN is fitted beside them, in the same run, for the fit-time budget: once before the
first candidate and again after each, so each candidate's fits sit between two of the CNN's, and
its budget is their median (a machine's speed drifts, and other work may share it).

The choice reads the validation columns only: the kept candidate is the one with the highest
validation accuracy plus validation-corruption mean whose median fit stays within the seed CNN's
fits around it.
Each candidate is also scored on the test sets (`score_all_sets`) after the fact, so the docs can
say what each choice bought per test corruption; `choose` never reads those columns.

Writes benchmarks/results/robust_tuning.json, which the docs' tuning table and heat map are
generated from. A candidate whose change and seeds the file already holds, measured on this
machine, is not run again (the seed CNN neither): adding a candidate at the end runs only it.
Usage: python benchmarks/tune_robust.py [--seeds 1 2] [--again]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from statistics import mean, median

from _common import REPO_ROOT

from mnist_pipeline.atomic import write_json
from mnist_pipeline.tracking.provenance import machine_facts

# One change at a time, each adding to the one before; keys replace models.robust's whole values,
# and every key not named keeps models.robust's (so every candidate trains its 10 epochs).
FAST_NET = [{"filters": 16, "kernel_size": 5, "pool": True}, {"filters": 32, "kernel_size": 3, "pool": True}]
WIDER = [{"filters": 32, "kernel_size": 5, "pool": True}, {"filters": 64, "kernel_size": 3, "pool": True}]
WIDER_NORMALISED = [block | {"batch_norm": True} for block in WIDER]
INVERTED_NOISY = {"invert_probability": 0.25, "noise_sd": 0.2}
CANDIDATES: dict[str, dict] = {
    "fast's net, no robustness": {
        "conv_layers": FAST_NET, "standardize_input": False, "augmentation": None, "photometric": None, "label_smoothing": 0.0,
    },
    "+ standardized input": {"standardize_input": True},
    "+ affine jitter (rotate 15°, shift 10%, zoom 10%)": {"augmentation": {"rotation_degrees": 15, "shift_fraction": 0.1, "zoom_fraction": 0.1}},
    "+ pixel noise (sd 0.2)": {"photometric": {"invert_probability": 0.0, "noise_sd": 0.2}},
    "+ inverted ink (a quarter of the digits)": {"photometric": INVERTED_NOISY},
    "+ convs 32 and 64 wide": {"conv_layers": WIDER},
    "+ label smoothing 0.1": {"label_smoothing": 0.1},
    "+ batch norm": {"conv_layers": WIDER_NORMALISED},
    # Random erasing (Zhong et al. 2017) of half the digits, without batch norm (over the fit budget).
    "+ random erasing (random fill), no batch norm": {
        "conv_layers": WIDER, "photometric": INVERTED_NOISY | {"erase_probability": 0.5},
    },
    "+ random erasing in the ink's colour": {
        "photometric": INVERTED_NOISY | {"erase_probability": 0.5, "erase_fill": 1.0},
    },
}
SEED_CNN = "cnn"
CHILD = """
import json, sys, time
from mnist_pipeline.config import load_params
from mnist_pipeline.data.arrays import load_split
from mnist_pipeline.evaluation import score_all_sets, score_validation_sets
from mnist_pipeline.models import registry
from mnist_pipeline.training import Validation, fit, targets_for

name, change, seed = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
params = load_params()
base = params.models[name]
model_params = type(base).model_validate(base.model_dump(mode="json") | change | {"seed": seed})
representation, targets = registry.input_representation(model_params), targets_for(model_params)
inputs, _ = load_split(params.paths, "train", representation)
labels, _ = load_split(params.paths, "train", targets)
valid, valid_labels = load_split(params.paths, "validation", representation)
validation = Validation(valid, load_split(params.paths, "validation", targets)[0], valid_labels)
result = fit(name, model_params, inputs, labels, validation=validation, verbose=0)
adapter = registry.adapter_of(model_params)
_, checked = score_validation_sets(adapter, result.model, representation, params.paths, params.evaluate, result.temperature)
_, tested = score_all_sets(adapter, result.model, representation, params.paths, params.evaluate, result.temperature)
summary, reported = checked.summary(), tested.summary()
print(json.dumps({
    "fit_seconds": result.fit_seconds, "temperature": result.temperature,
    "validation": {key: summary[key] for key in ("accuracy", "corruption_mean", "corruption_worst", "ece", "ece_uncalibrated", "corruption")},
    "test": {key: reported[key] for key in ("accuracy", "corruption_mean", "corruption_worst", "uci_accuracy", "ece")}
    | {"corruption": {key: value["accuracy"] for key, value in tested.corruptions.items()}},
}))
"""


def run(name: str, change: dict, seed: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, name, json.dumps(change), str(seed)], cwd=REPO_ROOT, capture_output=True, text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"{name} {change} seed {seed} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]) | {"seed": seed}


def objective(runs: list[dict]) -> float:
    """What the choice maximises, from the validation columns only."""
    return mean(run["validation"]["accuracy"] + run["validation"]["corruption_mean"] for run in runs)


def choose(candidates: dict[str, dict]) -> str:
    """The best validation objective among the candidates whose median fit is within the seed CNN's fits around them."""
    affordable = {name: entry for name, entry in candidates.items() if entry["fit_seconds_median"] <= entry["budget_seconds"]}
    return max(affordable, key=lambda name: affordable[name]["objective"])


def save(args: argparse.Namespace, cnn: list[float], results: dict[str, dict], kept: str | None = None, shipped: bool | None = None) -> None:
    """The results so far; ``kept`` is None until every candidate is measured."""
    write_json(args.output, {
        "benchmark": "robust tuning on the validation sets",
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "validation": "the last 6,000 training digits, clean and under the validation corruptions; the choice never reads the test sets",
        "rule": "the highest validation accuracy + validation-corruption mean whose median fit is within the seed CNN's fits around it",
        "seeds": args.seeds,
        "seed_cnn": {"fit_seconds": cnn, "fit_seconds_median": median(cnn)},
        "candidates": results,
        "order": list(results),  # the chain's order, which the file's sorted keys lose
        "kept": kept,
        "params_yaml_is_kept": shipped,
        "machine": machine_facts(),
    })


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "robust_tuning.json")
    parser.add_argument("--again", action="store_true", help="measure every candidate again, even those the file holds")
    args = parser.parse_args()
    earlier = json.loads(args.output.read_text()) if args.output.exists() and not args.again else {}
    if earlier.get("machine") != machine_facts() or earlier.get("seeds") != args.seeds:
        earlier = {}
    # An entry without its own budget predates the CNN fits around each candidate: measured again.
    measured = {json.dumps(entry["change"], sort_keys=True): entry for entry in earlier.get("candidates", {}).values() if "budget_seconds" in entry}
    # The CNN's fits, one before each candidate and one after the last; a resumed run goes on from the file's.
    cnn = earlier.get("seed_cnn", {}).get("fit_seconds") or [run(SEED_CNN, {}, args.seeds[0])["fit_seconds"]]
    results, change = {}, {}
    for name, step in CANDIDATES.items():
        change = change | step
        known = measured.get(json.dumps(change, sort_keys=True))
        if known:
            results[name] = known
            continue
        runs = [run("robust", change, seed) for seed in args.seeds]
        cnn.append(run(SEED_CNN, {}, args.seeds[0])["fit_seconds"])
        results[name] = {
            "change": change, "runs": runs, "objective": objective(runs),
            "fit_seconds_median": median(entry["fit_seconds"] for entry in runs),
            "budget_seconds": median(cnn[-2:]), "seed_cnn_fit_seconds": cnn[-2:],
            "validation_accuracy_mean": mean(entry["validation"]["accuracy"] for entry in runs),
            "validation_corruption_mean": mean(entry["validation"]["corruption_mean"] for entry in runs),
        }
        entry = results[name]
        print(
            f"{name}: validation {100 * entry['validation_accuracy_mean']:.2f}%, validation corruptions "
            f"{100 * entry['validation_corruption_mean']:.2f}%, fit {entry['fit_seconds_median']:.1f} s "
            f"(the seed CNN's around it: {', '.join(f'{value:.1f}' for value in cnn[-2:])} s)", flush=True,
        )
        save(args, cnn, results)  # an interrupted run resumes from here
    kept = choose(results)
    check = ("import json, sys; from mnist_pipeline.config import load_params; base = load_params().models['robust']; "
             "print(type(base).model_validate(base.model_dump(mode='json') | json.loads(sys.argv[1])) == base)")
    shipped = subprocess.run(
        [sys.executable, "-c", check, json.dumps(results[kept]["change"])], cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    ).stdout.strip() == "True"
    print(f"kept: {kept}; params.yaml's models.robust {'is' if shipped else 'is NOT'} that candidate", flush=True)
    save(args, cnn, results, kept, shipped)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
