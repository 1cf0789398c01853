"""DVC stage `evaluate@<name>`: score one trained model on the test digits.

Writes ``metrics/<name>.json`` (DVC metrics, numbers only) and ``predictions/<name>.csv`` (one
row per test digit, drawn by DVC as a confusion plot), then continues the MLflow run the train
stage opened (``models/<name>/mlflow_run.json``) with the test metrics, per-digit precision and
recall, the confusion matrix and a gallery of the most confident mistakes under ``evaluation/``.

If that run no longer exists (the store was wiped or the run deleted), a new run named
``<name>`` is opened in the experiment, tagged ``continues_missing_run=<old id>``, and a
warning says so: the metrics are still tracked, but not beside the training curves.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.arrays import load_split
from mnist_pipeline.atomic import atomic_open, write_json
from mnist_pipeline.config import load_params
from mnist_pipeline.evaluation import (
    compute_metrics,
    confusion,
    confusion_figure,
    error_gallery,
    per_class,
    predict_proba,
    predictions_frame,
    read_json_file,
    read_model_config,
)
from mnist_pipeline.errors import ArtifactError
from mnist_pipeline.model_store import MODEL_SUBDIR, RUN_FILE
from mnist_pipeline.models.persistence import load_model
from mnist_pipeline.stage import run_stage
from mnist_pipeline.tracking import configure_tracking, provenance_tags, tracked_run

log = logging.getLogger("mnist_pipeline.evaluate")

ARTIFACT_DIR = "evaluation"


def dvc_metrics(metrics: dict[str, Any], config: dict[str, Any]) -> dict[str, float | int]:
    """What DVC tracks and the gate compares: test metrics plus the model's size and training cost."""
    counts = config["parameter_counts"]
    return {
        **metrics,
        "params_total": int(counts["total"]),
        "params_trainable": int(counts["trainable"]),
        "fit_seconds": float(config["fit_seconds"]),
        "epochs": int(config["epochs"]),
    }


def read_run_record(path: Path, name: str) -> str:
    record = read_json_file(path, f"MLflow run record of '{name}'", f"rerun `dvc repro -f train@{name}`")
    run_id = record.get("run_id") if isinstance(record, dict) else None
    if not isinstance(run_id, str) or not run_id:
        raise ArtifactError(f"{path}: expected {{\"run_id\": \"...\", \"experiment_id\": \"...\"}}, got {record!r}")
    return run_id


def _run_exists(run_id: str) -> bool:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        run = MlflowClient().get_run(run_id)
    except MlflowException:
        return False
    # A deleted run is still returned, but resuming it would hide the results in the trash.
    return run.info.lifecycle_stage != "deleted"


def open_run(name: str, run_id: str, stage: str) -> Any:
    """Continue the training run, or open a new one (with a warning) if the store lost it."""
    experiment_id = configure_tracking()
    if _run_exists(run_id):
        return tracked_run(run_id=run_id)
    log.warning(
        "%s: MLflow run %s recorded by the train stage is not in the tracking store (wiped or deleted); "
        "logging the evaluation to a new run tagged continues_missing_run=%s",
        name, run_id, run_id,
    )
    tags = {**provenance_tags(stage), "model.name": name, "continues_missing_run": run_id}
    return tracked_run(run_name=name, experiment_id=experiment_id, tags=tags)


def log_evaluation(
    name: str,
    run_id: str,
    stage: str,
    metrics: dict[str, Any],
    per_digit: Any,
    cm: np.ndarray,
    gallery: Any,
    evaluate_settings: dict[str, Any],
) -> str:
    import mlflow
    import pandas as pd

    with open_run(name, run_id, stage) as run:
        # Tags, not params: a rerun with another batch size continues the same run, and MLflow
        # refuses to change a logged param.
        # The run keeps dvc.stage=train@<m> from training; the evaluation stage gets its own tag.
        mlflow.set_tags({"dvc.evaluate_stage": stage, **{f"evaluate.{key}": str(value) for key, value in evaluate_settings.items()}})
        mlflow.log_metrics({f"test_{key}": float(value) for key, value in metrics.items()})
        for row in per_digit.itertuples(index=False):
            mlflow.log_metrics(
                {f"test_precision_digit_{row.digit}": float(row.precision), f"test_recall_digit_{row.digit}": float(row.recall)}
            )
        mlflow.log_text(per_digit.to_csv(index=False, float_format="%.6f"), f"{ARTIFACT_DIR}/per_class.csv")
        frame = pd.DataFrame(cm, index=pd.Index(range(cm.shape[0]), name="actual"), columns=range(cm.shape[1]))
        mlflow.log_text(frame.to_csv(), f"{ARTIFACT_DIR}/confusion_matrix.csv")
        confusion_png = confusion_figure(cm, f"{name}: test confusion matrix")
        mlflow.log_figure(confusion_png, f"{ARTIFACT_DIR}/confusion_matrix.png")
        mlflow.log_figure(gallery, f"{ARTIFACT_DIR}/misclassified.png")
        _close(confusion_png, gallery)
        return run.info.run_id


def _close(*figures: Any) -> None:
    from mnist_pipeline.plots import _pyplot

    plt = _pyplot()
    for figure in figures:
        plt.close(figure)


def evaluate(name: str) -> None:
    params = load_params()
    paths, settings = params.paths, params.evaluate
    model_dir = paths.model_dir(name)
    config = read_model_config(model_dir, name)
    run_id = read_run_record(model_dir / RUN_FILE, name)

    model = load_model(config["framework"], model_dir / MODEL_SUBDIR)
    inputs, labels = load_split(paths, "test", config["input"])
    log.info("%s: predicting %d test digits (%s input, batch %d)", name, labels.shape[0], config["input"], settings.batch_size)
    proba = predict_proba(model, config["framework"], inputs, settings.batch_size)
    metrics = compute_metrics(labels, proba)
    predictions = predictions_frame(labels, proba)

    write_json(paths.metrics_file(name), dvc_metrics(metrics, config))
    with atomic_open(paths.predictions_file(name), "w", encoding="utf-8", newline="") as handle:
        predictions.to_csv(handle, index=False, float_format="%.6f")
    log.info(
        "%s: test accuracy %.4f, loss %.4f, %d errors -> %s, %s",
        name, metrics["accuracy"], metrics["loss"], metrics["errors"], paths.metrics_file(name), paths.predictions_file(name),
    )

    predicted = predictions["predicted"].to_numpy()
    images, _ = load_split(paths, "test", "pixels")
    gallery = error_gallery(
        images, labels, predicted, predictions["confidence"].to_numpy(), settings.gallery_size, title=f"{name}: MNIST test errors"
    )
    stage = os.environ.get("DVC_STAGE") or f"evaluate@{name}"
    logged = log_evaluation(
        name, run_id, stage, metrics, per_class(labels, predicted), confusion(labels, predicted), gallery,
        settings.model_dump(),
    )
    log.info("%s: evaluation logged to MLflow run %s", name, logged)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="model name, a key of `models` in params.yaml")
    args = parser.parse_args(argv)
    return run_stage(f"evaluate@{args.name}", lambda: evaluate(args.name))


if __name__ == "__main__":
    sys.exit(main())
