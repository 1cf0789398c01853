"""The evaluate stage's MLflow logging: continue the run the train stage opened.

The test metrics, per-digit precision and recall, the confusion matrix and the gallery of the most
confident mistakes go under ``evaluation/`` in the run recorded in ``models/<name>/mlflow_run.json``.
If the store lost that run (wiped, or the run deleted), a new run named ``<name>`` is opened in the
experiment, tagged ``continues_missing_run=<old id>``, with a warning.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from mnist_pipeline.evaluation import confusion_figure
from mnist_pipeline.plots import close_figures
from mnist_pipeline.tracking import configure_tracking, provenance_tags, tracked_run

log = logging.getLogger(__name__)

ARTIFACT_DIR = "evaluation"


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
        close_figures(confusion_png, gallery)
        return run.info.run_id
