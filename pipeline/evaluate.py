"""DVC stage `evaluate@<name>`: score one trained model on the validation sets and every test set.

The validation sets (the validation digits and the validation corruptions, ``data.valsets``):
what every choice reads. The test sets: the MNIST test digits, each of their corruptions, the UCI
digits, and the test digits sliced by writer population and writer (``data.testsets``). Every
prediction is calibrated by the model's temperature. Writes ``metrics/<name>.json`` (DVC metrics,
numbers only, no timings; the validation results apart, under ``validation``),
``predictions/<name>.csv`` (one row per MNIST test digit, drawn by DVC as a confusion plot) and
``predictions/<name>.validation.npz`` (the calibrated probabilities on every validation set, which
the ensemble chooses its members from), then logs the evaluation to MLflow as a child run of the
training run recorded in ``models/<name>/mlflow_run.json``: every set as a dataset, its metrics
linked to the logged model and that dataset (for the Models tab), per-digit precision and recall,
the confusion matrix, the writer slices and a gallery of the most confident mistakes
(``mnist_pipeline.tracking.evaluation``).
"""

from __future__ import annotations

import logging
import os
import sys

import numpy as np

from mnist_pipeline.atomic import atomic_open, atomic_path, write_json
from mnist_pipeline.config import load_params
from mnist_pipeline.evaluation import confusion, dvc_metrics, per_class, predictions_frame, score_all_sets, score_validation_sets
from mnist_pipeline.models import adapters, registry
from mnist_pipeline.models.store import MODEL_SUBDIR, read_config, read_run, temperature_of
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
        temperature = temperature_of(config)
        log.info("%s: predicting the validation digits and each validation corruption (%s input)", name, config["input"])
        valsets, validation = score_validation_sets(adapter, model, config["input"], paths, settings, temperature)
        log.info("%s: predicting the test digits, each corruption of them and the UCI digits", name)
        sets, scores = score_all_sets(adapter, model, config["input"], paths, settings, temperature)
        pixels, labels = sets.clean, sets.labels
        predictions = predictions_frame(labels, scores.clean_proba, scores.clean_proba_uncalibrated)
    with watch.section("saving"):
        write_json(paths.metrics_file(name), dvc_metrics(scores, config, validation))
        with atomic_open(paths.predictions_file(name), "w", encoding="utf-8", newline="") as handle:
            predictions.to_csv(handle, index=False, float_format="%.6f")
        with atomic_path(paths.validation_predictions_file(name), suffix=".npz") as tmp:
            np.savez_compressed(tmp, labels=valsets.labels, **{key: proba.astype(np.float32) for key, proba in validation.proba.items()})
    summary, checked = scores.summary(), validation.summary()
    log.info(
        "%s: validation accuracy %.4f, validation corruptions mean %.4f (temperature %.3f: validation ECE %.4f -> %.4f)",
        name, checked["accuracy"], checked["corruption_mean"], temperature, checked["ece_uncalibrated"], checked["ece"],
    )
    log.info(
        "%s: test accuracy %.4f (series 4 %.4f, series 0 %.4f), corruptions mean %.4f (worst %.4f), UCI digits %.4f, "
        "ECE %.4f (uncalibrated %.4f) -> %s, %s",
        name, summary["accuracy"], summary.get("series4_accuracy", float("nan")), summary.get("series0_accuracy", float("nan")),
        summary["corruption_mean"], summary["corruption_worst"], summary["uci_accuracy"], summary["ece"], summary["ece_uncalibrated"],
        paths.metrics_file(name), paths.predictions_file(name),
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
            validation=validation, valsets=valsets, validation_sources=(str(paths.processed_dir("validation")), paths.valsets_dir),
        )
    log.info("%s: evaluation logged to MLflow run %s", name, logged)


def main(argv: list[str] | None = None) -> int:
    return run_model_stage("evaluate", evaluate, __doc__.splitlines()[0], argv)

if __name__ == "__main__":
    sys.exit(main())
