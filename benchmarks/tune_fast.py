"""How `fast` was chosen: candidate recipes scored on the validation split only, never on the test set.

Each candidate is params.yaml's `models.fast` with a few keys changed, trained by the project's own
`training.fit` on the first 54,000 training digits (Keras' validation_split 0.1) and scored on
the last 6,000, over three seeds, each fit in a fresh process as the train stage runs. Writes
benchmarks/results/fast_tuning.json, which the README's table of candidates is generated from.

Usage: python benchmarks/tune_fast.py [--seeds 1 2 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from statistics import mean

from _common import REPO_ROOT

from mnist_pipeline.atomic import write_json
from mnist_pipeline.tracking.provenance import machine_facts

# The speed-run's recipe first (convs 24 and 32 wide), then one change at a time from the best of
# them; the kept one is the best whose fit stays within a tenth of the seed CNN's.
SPEED_RUN = {"widths": [24, 32], "epochs": 2, "label_smoothing": 0.1}
CANDIDATES: dict[str, dict] = {
    "speed-run: 1 epoch": SPEED_RUN | {"epochs": 1, "label_smoothing": 0.0},
    "2 epochs": SPEED_RUN | {"label_smoothing": 0.0},
    "2 epochs, label smoothing 0.1": SPEED_RUN,
    "3 epochs, label smoothing 0.1": SPEED_RUN | {"epochs": 3},
    "2 epochs, label smoothing 0.1, batch norm": SPEED_RUN | {"batch_norm": True},
    "2 epochs, label smoothing 0.1, batch 512": SPEED_RUN | {"batch_size": 512},
    "2 epochs, label smoothing 0.1, convs 32 and 64 wide": SPEED_RUN | {"widths": [32, 64]},
    "2 epochs, label smoothing 0.1, convs 16 and 32 wide (kept)": SPEED_RUN | {"widths": [16, 32]},
}
CHILD = """
import json, sys
import numpy as np
from mnist_pipeline.config import load_params
from mnist_pipeline.data.arrays import load_split
from mnist_pipeline.training import fit

change, seed = json.loads(sys.argv[1]), int(sys.argv[2])
params = load_params()
fast = params.models["fast"].model_dump(mode="json")
layers = fast["conv_layers"]
for layer, width in zip(layers, change.pop("widths", [layer["filters"] for layer in layers])):
    layer["filters"] = width
if change.pop("batch_norm", False):
    for layer in layers:
        layer["batch_norm"] = True
fast |= change | {"seed": seed, "validation_split": 0.1}
model_params = type(params.models["fast"]).model_validate(fast)
images, _ = load_split(params.paths, "train", "image")
onehot, _ = load_split(params.paths, "train", "onehot")
result = fit("fast", model_params, np.asarray(images), np.asarray(onehot), verbose=0)
print(json.dumps({"val_accuracy": result.history[-1]["val_accuracy"], "fit_seconds": result.fit_seconds}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "fast_tuning.json")
    args = parser.parse_args()
    results = {}
    for name, change in CANDIDATES.items():
        runs = []
        for seed in args.seeds:
            done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(change), str(seed)], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]) | {"seed": seed})
        results[name] = {"change": change, "runs": runs, "val_accuracy_mean": mean(run["val_accuracy"] for run in runs)}
        print(f"{name}: validation accuracy {100 * results[name]['val_accuracy_mean']:.2f}% "
              f"({', '.join(format(100 * run['val_accuracy'], '.2f') for run in runs)}), fit {mean(run['fit_seconds'] for run in runs):.1f} s", flush=True)
    write_json(args.output, {
        "benchmark": "fast tuning on the validation split",
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "validation": "the last 6,000 training digits (validation_split 0.1); the test set is never read",
        "seeds": args.seeds,
        "candidates": results,
        "machine": machine_facts(),
    })
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
