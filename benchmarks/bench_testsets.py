"""Test-set benchmark: every MNIST-C-style corruption over the 10,000 MNIST test digits, and the whole stage.

Times ``corrupt`` per corruption (median of the repeats) and their total, then the `testsets`
stage as a process (`python pipeline/testsets.py`: start-up, the writer labels, every corruption,
the UCI digits, saving, the figure), median of the repeats. Goal: the stage within 2 minutes on
the 2-core reference machine (aim < 60 s). Logs a table and writes the figures, with the machine
and library versions, to benchmarks/results/testsets.json.
Needs the raw and processed test digits (`dvc repro preprocess`); QMNIST_MIRROR defaults to
../shared/datasets/qmnist. The stage rewrites data/testsets with the same bytes.

Usage: python benchmarks/bench_testsets.py [--repeats 3] [--seed 0] [--output benchmarks/results/testsets.json]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
from _common import REPO_ROOT, RESULTS, median, timed, write_results

from mnist_pipeline.config import load_params
from mnist_pipeline.data.corruptions import CORRUPTIONS, corrupt
from mnist_pipeline.data.idx import read_idx_gz

log = logging.getLogger("bench_testsets")
GOAL_S = 120.0
AIM_S = 60.0


def load_test_digits() -> np.ndarray:
    params = load_params(REPO_ROOT / "params.yaml")
    path = params.paths.raw(params.data.files.test_images.filename)
    path = path if path.is_absolute() else REPO_ROOT / path
    if not path.exists():
        raise SystemExit(f"{path}: no raw MNIST test digits; run `dvc repro download` first")
    return read_idx_gz(path, "images")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=RESULTS / "testsets.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    images = load_test_digits()

    runs: dict[str, list[float]] = {}
    for name in CORRUPTIONS:
        runs[name] = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            corrupt(images, name, args.seed)
            runs[name].append(time.perf_counter() - started)
    medians = {name: median(seconds) for name, seconds in runs.items()}
    total = sum(medians.values())

    log.info("%d digits, seed %d, median of %d repeats", len(images), args.seed, args.repeats)
    log.info("%-14s %9s %12s", "corruption", "median s", "µs / digit")
    for name in CORRUPTIONS:
        log.info("%-14s %9.2f %12.1f", name, medians[name], medians[name] / len(images) * 1e6)
    log.info("%-14s %9.2f", "total", total)
    stage = [timed([sys.executable, "pipeline/testsets.py"], REPO_ROOT).seconds for _ in range(args.repeats)]
    verdict = "meets" if median(stage) <= AIM_S else ("within the goal, over the aim" if median(stage) <= GOAL_S else "MISSES")
    log.info("the whole testsets stage: median %.1f s of %s (goal ≤ %.0f s, aim < %.0f s: %s)", median(stage), [round(s, 1) for s in stage], GOAL_S, AIM_S, verdict)

    write_results(args.output, "testsets", {
        "digits": int(len(images)),
        "seed": args.seed,
        "repeats": args.repeats,
        "seconds": {name: {"median": round(medians[name], 4), "runs": [round(s, 4) for s in runs[name]]} for name in CORRUPTIONS},
        "total_median_s": round(total, 3),
        "stage_seconds": {"median": round(median(stage), 2), "runs": [round(s, 2) for s in stage]},
        "goal_s": GOAL_S,
        "aim_s": AIM_S,
    }, libraries=("scipy", "scikit-image"))  # the two the corruptions lean on
    return 0


if __name__ == "__main__":
    sys.exit(main())
