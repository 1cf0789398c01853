"""What the report stage logs: one MLflow run named ``report`` with the comparison, beside the model runs."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from mnist_pipeline.reporting.tables import ModelRow
from mnist_pipeline.tracking.provenance import provenance_tags
from mnist_pipeline.tracking.runs import tracked_run
from mnist_pipeline.tracking.store import configure_tracking

RUN_NAME = "report"


def log_report(files: Mapping[str, Path], rows: Sequence[ModelRow]) -> str:
    """The report files under ``report/``, the best test accuracy as ``best_accuracy``; returns the run id."""
    import mlflow

    experiment_id = configure_tracking()
    stage = os.environ.get("DVC_STAGE") or RUN_NAME
    tags = {**provenance_tags(stage), "dvc.stage": stage}
    if rows:
        tags["best_model"] = rows[0].model
    with tracked_run(run_name=RUN_NAME, experiment_id=experiment_id, tags=tags) as run:
        if rows:
            mlflow.log_metric("best_accuracy", rows[0].accuracy)
        for path in files.values():
            mlflow.log_artifact(str(path), artifact_path=RUN_NAME)
        return run.info.run_id
