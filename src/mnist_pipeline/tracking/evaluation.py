"""The evaluate stage's MLflow logging: one child run per evaluation, linked to the logged model.

Each evaluation of a model is a run of its own, named ``<name>-evaluation``, nested under the
training run recorded in ``models/<name>/mlflow_run.json``. Re-evaluating the same trained model
(after an ``evaluate.*`` change, say) opens another child run, so two evaluations never share a
run's metrics. The child holds:

- the training run's params (so evaluation runs compare by hyperparameter in ``mlflow ui``) and
  the ``evaluate.*`` settings;
- every test set (the MNIST test digits, each corruption of them, the UCI digits) as a dataset
  input with its digest, and that set's metrics under its own prefix (``test_``, ``mnistc_<name>_``,
  ``uci_``; the writer slices as ``writers_``), logged against the logged model and the dataset,
  so MLflow's Models tab shows each model's results set by set (the metric entry names this run);
- every validation set (the clean validation digits, each validation corruption) as a dataset
  input in the context ``validation``, its metrics prefixed ``val_`` (``val_clean_``,
  ``val_<corruption>_``, ``val_corruption_mean``): what the choices read, apart from the test sets;
- per-digit precision and recall, the confusion matrix, accuracy per writer population and per
  writer, the reliability diagram before and after calibration, and the gallery of the most
  confident mistakes, under ``evaluation/``.

If the store has lost the training run (wiped, or the run deleted), the evaluation run is opened
at the top level, tagged ``continues_missing_run=<old id>``, with a warning. Only "does not
exist" gets that treatment: any other tracking error (authentication, a server error, a locked
database) fails the stage with the store's URI named, instead of scattering results.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.models.store import RunRecord
from mnist_pipeline.reporting.plots import close_figures, confusion_figure, reliability_figure
from mnist_pipeline.tracking.provenance import provenance_tags
from mnist_pipeline.tracking.runs import tracked_run
from mnist_pipeline.tracking.store import configure_tracking
from mnist_pipeline.tracking.training import numpy_dataset

log = logging.getLogger(__name__)

ARTIFACT_DIR = "evaluation"
RUN_SUFFIX = "-evaluation"


def _read_unless_missing(what: str, read: Callable[[], Any]) -> Any | None:
    """``read()``, or None when the store says the thing does not exist; any other failure is an error.

    Only RESOURCE_DOES_NOT_EXIST means "lost". An authentication failure, a server error or a
    locked database must not look like a missing run, or results would be scattered over new runs.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return read()
    except MlflowException as exc:
        if getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
            return None
        failure: Exception = exc
    except OSError as exc:  # the HTTP client's connection errors
        failure = exc
    raise PipelineError(f"MLflow tracking store {mlflow.get_tracking_uri()} failed while reading {what}: {failure}") from None


def find_training_run(run_id: str) -> Any | None:
    """The training run, or None if the store does not have it (or it was deleted)."""
    from mlflow import MlflowClient

    run = _read_unless_missing(f"training run {run_id}", lambda: MlflowClient().get_run(run_id))
    # A deleted run is still returned, but nesting under it would hide the results in the trash.
    return None if run is None or run.info.lifecycle_stage == "deleted" else run


def find_logged_model(model_id: str | None) -> str | None:
    """``model_id`` if the store still has that logged model, else None."""
    from mlflow import MlflowClient

    if model_id is None:
        return None
    model = _read_unless_missing(f"logged model {model_id}", lambda: MlflowClient().get_logged_model(model_id))
    return None if model is None or getattr(model, "status", None) == "FAILED" else model.model_id


def open_evaluation_run(name: str, record: RunRecord, stage: str, training: Any | None) -> Any:
    experiment_id = configure_tracking()
    tags = {**provenance_tags(stage), "model.name": name, "evaluation.training_run": record.run_id}
    if training is not None:
        return tracked_run(run_name=f"{name}{RUN_SUFFIX}", experiment_id=experiment_id, parent_run_id=record.run_id, tags=tags)
    log.warning(
        "%s: MLflow run %s recorded by the train stage is not in the tracking store (wiped or deleted); "
        "logging the evaluation to a new top-level run tagged continues_missing_run=%s",
        name, record.run_id, record.run_id,
    )
    tags["continues_missing_run"] = record.run_id
    return tracked_run(run_name=f"{name}{RUN_SUFFIX}", experiment_id=experiment_id, tags=tags)


def set_metrics(scores: Any) -> list[tuple[str, str, dict[str, float]]]:
    """(dataset name, what it is, metrics) per test set; each set's metrics carry its own prefix."""
    summary = scores.summary()
    clean = {f"test_{key}": float(value) for key, value in scores.clean.items()}
    clean.update({
        f"writers_{key}": float(summary[key])
        for key in ("series0_accuracy", "series4_accuracy", "series_error_ratio", "worst_writer_accuracy")
        if summary.get(key) is not None
    })
    sets = [(CLEAN_DATASET, "clean", clean)]
    for corruption, result in scores.corruptions.items():
        sets.append((f"{CORRUPTED_DATASET}-{corruption}", corruption, {f"mnistc_{corruption}_{key}": value for key, value in result.items()}))
    sets.append((UCI_DATASET, "uci", {f"uci_{key}": value for key, value in scores.uci.items()}))
    return sets


CLEAN_DATASET, CORRUPTED_DATASET, UCI_DATASET = "mnist-test", "mnist-c", "uci-digits"
VALIDATION_DATASET = "mnist-validation"


def validation_metrics(validation: Any) -> list[tuple[str, str, dict[str, float]]]:
    """(dataset name, set, metrics) per validation set, prefixed ``val_<set>_``."""
    sets = [(VALIDATION_DATASET, "clean", {f"val_clean_{key}": float(value) for key, value in validation.clean.items()})]
    for corruption, result in validation.corruptions.items():
        sets.append((f"{VALIDATION_DATASET}-{corruption}", corruption, {f"val_{corruption}_{key}": value for key, value in result.items()}))
    return sets


def log_evaluation(
    name: str,
    record: RunRecord,
    stage: str,
    scores: Any,
    per_digit: Any,
    cm: np.ndarray,
    gallery: Any,
    evaluate_settings: dict[str, Any],
    sets: Any,
    clean_source: str,
    sets_source: str,
    validation: Any,
    valsets: Any,
    validation_sources: tuple[str, str],
) -> str:
    """Log one evaluation (``scores``, a ``SetScores`` of ``sets``, a ``Testsets``; ``validation``, a
    ``ValidationScores`` of ``valsets``) as a child run of the training run.

    Every set is an MLflow dataset input of the run, with its digest, and its metrics are logged
    against that dataset and the logged model, so the Models tab compares models set by set.
    """
    import mlflow
    import pandas as pd
    from mlflow.entities import LoggedModelInput

    configure_tracking()
    training = find_training_run(record.run_id)
    model_id = find_logged_model(record.model_id) if training is not None else None
    if training is not None and record.model_id and model_id is None:
        log.warning("%s: logged model %s is not in the tracking store; test metrics stay on the run only", name, record.model_id)
    pixels = {"clean": sets.clean, "uci": sets.uci, **sets.corruptions}
    labels = {"uci": sets.uci_labels}

    with open_evaluation_run(name, record, stage, training) as run:
        params = dict(training.data.params) if training is not None else {}
        params.update({f"evaluate.{key}": value for key, value in evaluate_settings.items()})
        params["testsets.digest"] = sets.digest
        mlflow.log_params(params)
        model_input = LoggedModelInput(model_id) if model_id else None
        for dataset_name, key, metrics in set_metrics(scores):
            source = clean_source if key == "clean" else sets_source
            dataset = numpy_dataset(pixels[key], labels.get(key, sets.labels), source, dataset_name)
            mlflow.log_input(dataset, context="testing", model=model_input)
            mlflow.log_metrics(metrics, model_id=model_id, dataset=dataset)
        summary = scores.summary()
        mlflow.log_metrics({
            "mnistc_mean_accuracy": summary["corruption_mean"],
            "mnistc_worst_accuracy": summary["corruption_worst"],
            "mnistc_mean_ece": summary["ece_corruption_mean"],
        }, model_id=model_id)
        validation_pixels = valsets.named()
        for dataset_name, key, metrics in validation_metrics(validation):
            source = validation_sources[0] if key == "clean" else validation_sources[1]
            dataset = numpy_dataset(validation_pixels[key], valsets.labels, source, dataset_name)
            mlflow.log_input(dataset, context="validation", model=model_input)
            mlflow.log_metrics(metrics, model_id=model_id, dataset=dataset)
        validation_summary = validation.summary()
        mlflow.log_metrics({
            "val_corruption_mean": validation_summary["corruption_mean"],
            "val_corruption_worst": validation_summary["corruption_worst"],
        }, model_id=model_id)
        per_digit_metrics: dict[str, float] = {}
        for row in per_digit.itertuples(index=False):
            per_digit_metrics[f"test_precision_digit_{row.digit}"] = float(row.precision)
            per_digit_metrics[f"test_recall_digit_{row.digit}"] = float(row.recall)
        mlflow.log_metrics(per_digit_metrics)
        mlflow.log_text(per_digit.to_csv(index=False, float_format="%.6f"), f"{ARTIFACT_DIR}/per_class.csv")
        mlflow.log_text(scores.series.to_csv(index=False, float_format="%.6f"), f"{ARTIFACT_DIR}/writer_series.csv")
        mlflow.log_text(scores.writers.to_csv(index=False, float_format="%.6f"), f"{ARTIFACT_DIR}/writers.csv")
        frame = pd.DataFrame(cm, index=pd.Index(range(cm.shape[0]), name="actual"), columns=range(cm.shape[1]))
        mlflow.log_text(frame.to_csv(), f"{ARTIFACT_DIR}/confusion_matrix.csv")
        confusion_png = confusion_figure(cm, f"{name}: test confusion matrix")
        mlflow.log_figure(confusion_png, f"{ARTIFACT_DIR}/confusion_matrix.png")
        mlflow.log_figure(gallery, f"{ARTIFACT_DIR}/misclassified.png")
        correct = scores.clean_proba.argmax(axis=1) == np.asarray(sets.labels)
        curves = {"uncalibrated": (scores.clean_proba_uncalibrated.max(axis=1), correct), "calibrated": (scores.clean_proba.max(axis=1), correct)}
        reliability = reliability_figure({name: curves}, f"{name}: reliability on the MNIST test digits")
        mlflow.log_figure(reliability, f"{ARTIFACT_DIR}/reliability.png")
        close_figures(confusion_png, gallery, reliability)
        return run.info.run_id
