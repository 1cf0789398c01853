"""What a training run records in MLflow. Called from the train entry with the run already open.

The model itself is logged once, as the pyfunc that takes raw digits (``serving.pyfunc``): the one
that is evaluated, registered and served. Which packages serving it needs is its framework
adapter's business; what is logged, and when, is decided here.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np

from mnist_pipeline.reporting.plots import close_figures, training_curves
from mnist_pipeline.tracking.runs import uninterrupted

log = logging.getLogger(__name__)


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optimizer": {"name": "adam"}}`` -> ``{"optimizer.name": "adam"}`` (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def log_hyperparameters(params: Any, dataset_params: dict[str, Any]) -> None:
    import mlflow

    values = flatten(params.model_dump(mode="json"))
    values.update({f"data.{key}": value for key, value in flatten(dataset_params).items()})
    mlflow.log_params({key: "null" if value is None else value for key, value in values.items()})


def log_parameter_counts(counts: dict[str, int]) -> None:
    """As params (fixed facts of the run) and as metrics (so the UI can sort and plot by them)."""
    import mlflow

    mlflow.log_params({f"params_{kind}": count for kind, count in counts.items()})
    mlflow.log_metrics({f"params_{kind}": float(count) for kind, count in counts.items()})


def epoch_logger(epoch: int, row: dict[str, float]) -> None:
    import mlflow

    # Ctrl-C waits for the write: the run can then still be marked KILLED (tracking.runs.uninterrupted).
    with uninterrupted():
        mlflow.log_metrics(row, step=epoch)


def numpy_dataset(inputs: np.ndarray, targets: np.ndarray, source: str, name: str) -> Any:
    """An MLflow dataset of arrays, with its digest, read from ``source`` (a local folder)."""
    import mlflow

    with warnings.catch_warnings():
        # A bare local path matches two equivalent MLflow source types; it warns, then picks one.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        return mlflow.data.from_numpy(np.asarray(inputs), targets=np.asarray(targets), source=source, name=name)


def log_dataset(inputs: np.ndarray, targets: np.ndarray, name: str, source: str, context: str = "training") -> None:
    import mlflow

    mlflow.log_input(numpy_dataset(inputs, targets, source, name), context=context)


def log_fit_summary(name: str, result: Any, summary: str) -> None:
    """Fit timings, the model summary (its adapter's text) and the training-curve figure (the model: ``serving.pyfunc.log_digit_model``)."""
    import mlflow

    mlflow.log_metrics(
        {
            "fit_seconds": result.fit_seconds,
            "seconds_per_epoch": result.fit_seconds / max(result.epochs, 1),
            "epochs_run": float(result.epochs),
            "temperature": result.temperature,
            **result.calibration,
        }
    )
    mlflow.log_text(summary, "model_summary.txt")
    if result.has_curves:  # a fit without epochs has a single point, not a curve
        figure = training_curves(result.history, f"{name}: training vs validation")
        mlflow.log_figure(figure, "training_curves.png")
        close_figures(figure)


def log_overhead(sections: dict[str, float], mlflow_seconds: float) -> None:
    """Where the stage's time went besides fit, so the tracking overhead is itself tracked."""
    import mlflow

    metrics = {f"stage_seconds.{name.replace(' ', '_').replace('-', '_')}": seconds for name, seconds in sections.items()}
    mlflow.log_metrics({**metrics, "mlflow_overhead_seconds": mlflow_seconds})
