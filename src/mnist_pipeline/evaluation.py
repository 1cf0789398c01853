"""Score a trained model on the test digits: pure functions of (model, inputs, labels).

``pipeline/evaluate.py`` does the file I/O around them and ``tracking.evaluation`` the MLflow
logging. Everything works on class probabilities of shape (N, 10), one column per digit, which
the model's framework adapter produces (``predict_proba``), whatever the framework.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from pydantic import Field

from mnist_pipeline.constants import DIGITS
from mnist_pipeline.errors import ArtifactError
from mnist_pipeline.paths import Section

METRIC_KEYS = ("accuracy", "loss", "errors", "precision_macro", "recall_macro", "f1_macro")
PREDICTION_COLUMNS = ("actual", "predicted", "confidence")


class EvaluateParams(Section):
    """The ``evaluate`` section of params.yaml."""

    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 1000
    gallery_size: Annotated[int, Field(ge=0, le=400)] = 36


def predict_proba(model: Any, framework: str, inputs: np.ndarray, batch_size: int) -> np.ndarray:
    """Class probabilities, shape (N, 10), float64, predicted ``batch_size`` digits at a time."""
    from mnist_pipeline.models import adapters

    return adapters.get(framework).predict_proba(model, inputs, batch_size)


def _normalised(proba: np.ndarray) -> np.ndarray:
    # float32 softmax rows can sum to 1 +- 1e-7, which scikit-learn's log_loss rejects as > 1.
    proba = np.clip(np.asarray(proba, dtype=np.float64), 0.0, None)
    return proba / proba.sum(axis=1, keepdims=True)


def predicted_labels(proba: np.ndarray) -> np.ndarray:
    return np.asarray(proba).argmax(axis=1)


def compute_metrics(labels: np.ndarray, proba: np.ndarray) -> dict[str, float | int]:
    """accuracy, loss (log loss), errors (count), precision/recall/F1 macro-averaged over digits."""
    from sklearn.metrics import accuracy_score, log_loss, precision_recall_fscore_support

    labels = np.asarray(labels, dtype=np.int64)
    if not np.all(np.isfinite(proba)):
        bad = int(np.count_nonzero(~np.isfinite(proba).all(axis=1)))
        raise ArtifactError(
            f"the model predicted non-finite probabilities for {bad} of {len(proba)} test digits "
            "(did training diverge? check its loss curve and learning rate)"
        )
    proba = _normalised(proba)
    predicted = predicted_labels(proba)
    precision, recall, f1, _ = precision_recall_fscore_support(labels, predicted, average="macro", zero_division=0)
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "loss": float(log_loss(labels, proba, labels=list(DIGITS))),
        "errors": int(np.count_nonzero(predicted != labels)),
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "f1_macro": float(f1),
    }


def per_class(labels: np.ndarray, predicted: np.ndarray) -> Any:
    """One row per digit (a DataFrame): precision, recall, f1 and support (how many test digits it has)."""
    import pandas as pd
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        np.asarray(labels), np.asarray(predicted), labels=list(DIGITS), zero_division=0
    )
    return pd.DataFrame(
        {"digit": list(DIGITS), "precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}
    )


def confusion(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """10x10 counts: row = actual digit, column = predicted digit."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(np.asarray(labels), np.asarray(predicted), labels=list(DIGITS))


def dvc_metrics(metrics: dict[str, Any], config: dict[str, Any]) -> dict[str, float | int]:
    """What DVC tracks and the gate compares: test metrics plus the model's size and epochs run.

    No timing: this file is what ``dvc metrics diff`` compares, and a fit time moves on every
    retrain. Fit time lives in MLflow and in the report (from the model's ``config.json``).
    """
    counts = config["parameter_counts"]
    return {
        **metrics,
        "params_total": int(counts["total"]),
        "params_trainable": int(counts["trainable"]),
        "epochs": int(config["epochs"]),
    }


def predictions_frame(labels: np.ndarray, proba: np.ndarray) -> Any:
    """One row per test digit (a DataFrame), in test-set order: actual, predicted, confidence of the prediction."""
    import pandas as pd

    proba = _normalised(proba)
    predicted = predicted_labels(proba)
    return pd.DataFrame(
        {
            "actual": np.asarray(labels, dtype=np.int64),
            "predicted": predicted.astype(np.int64),
            "confidence": proba[np.arange(proba.shape[0]), predicted],
        }
    )
