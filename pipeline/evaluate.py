"""DVC stage `evaluate@<name>`: score one trained model on the test digits.

Writes ``metrics/<name>.json`` (DVC metrics, numbers only, no timings) and
``predictions/<name>.csv`` (one row per test digit, drawn by DVC as a confusion plot), then logs
the evaluation to MLflow as a child run of the training run recorded in
``models/<name>/mlflow_run.json``: test metrics (also linked to the logged model and the test
dataset, for the Models tab), per-digit precision and recall, the confusion matrix and a gallery
of the most confident mistakes (see ``mnist_pipeline.evaluation_tracking``).
"""

from __future__ import annotations

import logging
import os
import sys

from mnist_pipeline.data.arrays import load_split
from mnist_pipeline.atomic import atomic_open, write_json
from mnist_pipeline.config import load_params
from mnist_pipeline.evaluation import (
    compute_metrics,
    confusion,
    dvc_metrics,
    per_class,
    predict_proba,
    predictions_frame,
)
from mnist_pipeline.models.store import load_trained_model, read_config, read_run
from mnist_pipeline.reporting.plots import error_gallery
from mnist_pipeline.models import adapters
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
    watch.import_modules(f"import {config['framework']}", adapters.get(config["framework"]).heavy_modules)
    with watch.section("scoring"):
        model = load_trained_model(model_dir, config)
        inputs, labels = load_split(paths, "test", config["input"])
        log.info("%s: predicting %d test digits (%s input, batch %d)", name, labels.shape[0], config["input"], settings.batch_size)
        proba = predict_proba(model, config["framework"], inputs, settings.batch_size)
        metrics = compute_metrics(labels, proba)
        predictions = predictions_frame(labels, proba)
    with watch.section("saving"):
        write_json(paths.metrics_file(name), dvc_metrics(metrics, config))
        with atomic_open(paths.predictions_file(name), "w", encoding="utf-8", newline="") as handle:
            predictions.to_csv(handle, index=False, float_format="%.6f")
    log.info(
        "%s: test accuracy %.4f, loss %.4f, %d errors -> %s, %s",
        name, metrics["accuracy"], metrics["loss"], metrics["errors"], paths.metrics_file(name), paths.predictions_file(name),
    )

    with watch.section("figures"):
        predicted = predictions["predicted"].to_numpy()
        images, _ = load_split(paths, "test", "pixels")
        gallery = error_gallery(
            images, labels, predicted, predictions["confidence"].to_numpy(), settings.gallery_size, title=f"{name}: MNIST test errors"
        )
    watch.import_modules("import mlflow", ("mlflow", "mlflow.store.tracking.sqlalchemy_store"))
    with watch.section("MLflow logging"):
        stage = os.environ.get("DVC_STAGE") or f"evaluate@{name}"
        logged = log_evaluation(
            name, record, stage, metrics, per_class(labels, predicted), confusion(labels, predicted), gallery,
            settings.model_dump(), inputs, labels, dataset_name=f"mnist-test-{config['input']}",
            dataset_source=str(paths.processed_dir("test")),
        )
    log.info("%s: evaluation logged to MLflow run %s", name, logged)


def main(argv: list[str] | None = None) -> int:
    return run_model_stage("evaluate", evaluate, __doc__.splitlines()[0], argv)

if __name__ == "__main__":
    sys.exit(main())
