"""Evaluation benchmark: what scoring every test set costs per model, beside scoring the MNIST test digits alone.

For each trained model (``models/<m>/``, left by `make run`), times in one process, side by side,
(a) predicting the 10,000 MNIST test digits and computing their metrics, as evaluate@<m> did
before the other test sets existed, and (b) ``score_testsets`` on every set: the test digits, each
corruption, the UCI digits and the writer slices. Medians of the repeats, and their ratio. Logs a
table and writes benchmarks/results/evaluation.json with the machine and library versions.
Needs `make run`'s outputs (the trained models, data/processed, data/testsets).

Usage: python benchmarks/bench_evaluation.py [--repeats 3] [--models mlp cnn ...] [--output benchmarks/results/evaluation.json]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from _common import REPO_ROOT, RESULTS, median, time_calls, write_results

from mnist_pipeline.config import load_params
from mnist_pipeline.data.arrays import load_array, load_split
from mnist_pipeline.data.testsets import load_testsets
from mnist_pipeline.evaluation import compute_metrics, model_predictor, score_testsets
from mnist_pipeline.models.store import MODEL_SUBDIR, load_model_folder

log = logging.getLogger("bench_evaluation")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=None, help="default: every model in params.yaml")
    parser.add_argument("--output", type=Path, default=RESULTS / "evaluation.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    params = load_params(REPO_ROOT / "params.yaml")
    paths, settings = params.paths, params.evaluate
    pixels, labels = load_split(paths, "test", "pixels")
    sets = load_testsets(paths.testsets_dir, pixels, labels)
    digits = len(labels) * (1 + len(sets.corruptions)) + len(sets.uci)

    results = {}
    for name in args.models or list(params.scored):
        config, adapter, model = load_model_folder(paths.model_dir(name) / MODEL_SUBDIR)
        dtype = load_array(paths.processed("test", config["input"])).dtype
        predict = model_predictor(adapter, model, config["input"], dtype, settings.batch_size)
        clean = time_calls(lambda: compute_metrics(labels, predict(sets.clean)), args.repeats)
        every = time_calls(lambda: score_testsets(predict, sets, settings.calibration_bins, settings.min_writer_digits), args.repeats)
        results[name] = {
            "clean_only_s": {"median": round(median(clean), 3), "runs": [round(s, 3) for s in clean]},
            "every_set_s": {"median": round(median(every), 3), "runs": [round(s, 3) for s in every]},
            "ratio": round(median(every) / median(clean), 2),
            "digits_per_s": round(digits / median(every)),
        }
        log.info(
            "%-16s MNIST test only %6.2f s   every set %7.2f s   ratio %5.1fx   %8.0f digits/s",
            name, median(clean), median(every), results[name]["ratio"], results[name]["digits_per_s"],
        )
    write_results(args.output, "evaluation", {
        "repeats": args.repeats,
        "sets": {"test digits": int(len(labels)), "corruptions": len(sets.corruptions), "uci digits": int(len(sets.uci))},
        "digits_scored": digits,
        "models": results,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
