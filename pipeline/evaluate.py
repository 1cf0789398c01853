"""DVC stage `evaluate@<name>`: score one trained model on every test set.

The MNIST test digits, each of their corruptions, the UCI digits, and the test digits sliced by
writer population and writer (``mnist_pipeline.data.testsets``). Writes ``metrics/<name>.json``
(DVC metrics, numbers only, no timings) and ``predictions/<name>.csv`` (one row per MNIST test
digit, drawn by DVC as a confusion plot), then logs the evaluation to MLflow as a child run of the
training run recorded in ``models/<name>/mlflow_run.json``: every set as a dataset, its metrics
linked to the logged model and that dataset (for the Models tab), per-digit precision and recall,
the confusion matrix, the writer slices and a gallery of the most confident mistakes
(``mnist_pipeline.tracking.evaluation``).
"""

from __future__ import annotations

import logging
import os
import sys

from mnist_pipeline.atomic import atomic_open, write_json
from mnist_pipeline.config import load_params
from mnist_pipeline.evaluation import confusion, dvc_metrics, per_class, predictions_frame, score_all_sets
from mnist_pipeline.models import adapters, registry
from mnist_pipeline.models.store import MODEL_SUBDIR, read_config, read_run
from mnist_pipeline.reporting.plots import error_gallery
from mnist_pipeline.stage import run_model_stage, timer
from mnist_pipeline.tracking.evaluation import log_evaluation

log = logging.getLogger("mnist_pipeline.evaluate")


def evaluate(name: str) -> None:
    watch = timer()
    with watch.section("params"):
        params = load_params()
        paths, settings = params.paths, params.evaluate
        model_dir = paths.model_dir(name)
        config = read_config(model_dir, name)
        # Before the (slow) model load, so a missing run record fails fast.
        record = read_run(model_dir, name)
        adapter = adapters.get(config["framework"])  # once, for loading and every prediction
    watch.import_modules(f"import {adapter.name}", adapter.heavy_modules)
    with watch.section("scoring"):
        model = adapter.load(model_dir / MODEL_SUBDIR, registry.get(config["type"]))
        log.info("%s: predicting the test digits, each corruption of them and the UCI digits (%s input)", name, config["input"])
        sets, scores = score_all_sets(adapter, model, config["input"], paths, settings)
        pixels, labels = sets.clean, sets.labels
        predictions = predictions_frame(labels, scores.clean_proba)
    with watch.section("saving"):
        write_json(paths.metrics_file(name), dvc_metrics(scores, config))
        with atomic_open(paths.predictions_file(name), "w", encoding="utf-8", newline="") as handle:
            predictions.to_csv(handle, index=False, float_format="%.6f")
    summary = scores.summary()
    log.info(
        "%s: test accuracy %.4f (series 4 %.4f, series 0 %.4f), corruptions mean %.4f (worst %.4f), UCI digits %.4f, "
        "ECE %.4f -> %s, %s",
        name, summary["accuracy"], summary["series4_accuracy"], summary["series0_accuracy"], summary["corruption_mean"],
        summary["corruption_worst"], summary["uci_accuracy"], summary["ece"], paths.metrics_file(name), paths.predictions_file(name),
    )

    with watch.section("figures"):
        predicted = predictions["predicted"].to_numpy()
        gallery = error_gallery(
            pixels, labels, predicted, predictions["confidence"].to_numpy(), settings.gallery_size, title=f"{name}: MNIST test errors"
        )
    watch.import_modules("import mlflow", ("mlflow", "mlflow.store.tracking.sqlalchemy_store"))
    with watch.section("MLflow logging"):
        stage = os.environ.get("DVC_STAGE") or f"evaluate@{name}"
        logged = log_evaluation(
            name, record, stage, scores, per_class(labels, predicted), confusion(labels, predicted), gallery,
            settings.model_dump(), sets, clean_source=str(paths.processed_dir("test")), sets_source=paths.testsets_dir,
        )
    log.info("%s: evaluation logged to MLflow run %s", name, logged)


def main(argv: list[str] | None = None) -> int:
    return run_model_stage("evaluate", evaluate, __doc__.splitlines()[0], argv)

if __name__ == "__main__":
    sys.exit(main())
