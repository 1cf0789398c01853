"""Seed-to-seed spread of every Keras model's test accuracy, with the project's own training code.

The gate's tolerance and each model's default seed come from this table: a default seed should
land near the median, so the pipeline reproduces the seed notebook's figures typically, not by luck.

Usage: python benchmarks/seed_spread.py [--seeds 0 1 2 3 4] [--models mlp cnn ...] [--json OUT]
Needs the processed arrays (`dvc repro preprocess`). Prints one line per (model, seed), then a
table of median / min / max / standard deviation per model.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time

import numpy as np

from mnist_pipeline.arrays import load_split
from mnist_pipeline.config import is_keras, load_params
from mnist_pipeline.models import registry
from mnist_pipeline.stage import configure_logging
from mnist_pipeline.training import fit

log = logging.getLogger("seed_spread")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--models", nargs="+", default=None, help="default: every Keras model in params.yaml")
    parser.add_argument("--json", default=None, help="also write the raw results here")
    args = parser.parse_args(argv)
    configure_logging()
    params = load_params()
    names = args.models or [name for name, model in params.models.items() if is_keras(model)]
    results: dict[str, list[dict]] = {}
    for name in names:
        base = params.model(name)
        representation = registry.input_representation(base)
        x_train, _ = load_split(params.paths, "train", representation)
        y_train, _ = load_split(params.paths, "train", "onehot")
        x_test, y_test = load_split(params.paths, "test", representation)
        for seed in args.seeds:
            model_params = base.model_copy(update={"seed": seed})
            started = time.perf_counter()
            result = fit(name, model_params, x_train, y_train, verbose=0)
            proba = result.model.predict(np.asarray(x_test), batch_size=1000, verbose=0)
            accuracy = float(np.mean(proba.argmax(axis=1) == y_test))
            row = {"seed": seed, "test_accuracy": accuracy, "fit_seconds": result.fit_seconds,
                   "wall_seconds": time.perf_counter() - started}
            results.setdefault(name, []).append(row)
            print(json.dumps({"model": name, **row}), flush=True)
    print("\n| model | seeds | median | min | max | std |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, rows in results.items():
        accs = [row["test_accuracy"] for row in rows]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"| {name} | {len(accs)} | {statistics.median(accs):.4f} | {min(accs):.4f} | {max(accs):.4f} | {std:.4f} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
