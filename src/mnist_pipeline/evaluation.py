"""Score a trained model on the test digits: pure functions of (model, inputs, labels).

``pipeline/evaluate.py`` does the file I/O around them and ``evaluation_tracking`` the MLflow
logging. Everything works on class probabilities of shape (N, 10), one column per digit, whatever
the framework:

- Keras models end in a softmax, so ``predict`` already returns probabilities;
- GaussianNB has ``predict_proba``;
- SGDClassifier with hinge loss (alone or behind a StandardScaler) has no probabilistic output, so
  its ``decision_function`` margins go through a softmax. That makes a *confidence score*, not a
  calibrated probability, and the "loss" reported for such a model is the log loss of those
  softmax scores: comparable between runs of the same model, not with the networks' loss.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from mnist_pipeline.config import IMAGE_SIDE, NUM_CLASSES
from mnist_pipeline.errors import ArtifactError
from mnist_pipeline.plots import _pyplot

DIGITS = list(range(NUM_CLASSES))
METRIC_KEYS = ("accuracy", "loss", "errors", "precision_macro", "recall_macro", "f1_macro")
PREDICTION_COLUMNS = ("actual", "predicted", "confidence")


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum so large margins don't overflow."""
    scores = np.asarray(scores, dtype=np.float64)
    shifted = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _sklearn_scores(model: Any, inputs: np.ndarray) -> np.ndarray:
    """Probabilities (or softmax of margins) in the columns of ``model.classes_``."""
    if hasattr(model, "predict_proba"):
        return np.asarray(model.predict_proba(inputs), dtype=np.float64)
    margins = np.asarray(model.decision_function(inputs), dtype=np.float64)
    if margins.ndim == 1:
        # A model that saw only two classes returns one margin, positive for classes_[1].
        margins = np.column_stack([-margins, margins])
    return softmax(margins)


def _to_digit_columns(scores: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Spread per-class columns over all ten digits; digits the model never saw get probability 0."""
    full = np.zeros((scores.shape[0], NUM_CLASSES), dtype=np.float64)
    full[:, np.asarray(classes, dtype=np.int64)] = scores
    return full


def predict_proba(model: Any, framework: str, inputs: np.ndarray, batch_size: int) -> np.ndarray:
    """Class probabilities, shape (N, 10), float64, predicted ``batch_size`` digits at a time."""
    if framework == "keras":
        proba = model.predict(np.asarray(inputs), batch_size=batch_size, verbose=0)
        return np.asarray(proba, dtype=np.float64)
    if framework != "sklearn":
        raise ValueError(f"framework must be 'keras' or 'sklearn', got {framework!r}")
    # Batching bounds the memory of float64 copies scikit-learn makes of memory-mapped inputs.
    chunks = [
        _sklearn_scores(model, np.asarray(inputs[start : start + batch_size]))
        for start in range(0, inputs.shape[0], batch_size)
    ]
    scores = np.concatenate(chunks) if chunks else np.zeros((0, len(model.classes_)))
    return _to_digit_columns(scores, model.classes_)


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
        "loss": float(log_loss(labels, proba, labels=DIGITS)),
        "errors": int(np.count_nonzero(predicted != labels)),
        "precision_macro": float(precision),
        "recall_macro": float(recall),
        "f1_macro": float(f1),
    }


def per_class(labels: np.ndarray, predicted: np.ndarray) -> pd.DataFrame:
    """One row per digit: precision, recall, f1 and support (how many test digits it has)."""
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        np.asarray(labels), np.asarray(predicted), labels=DIGITS, zero_division=0
    )
    return pd.DataFrame(
        {"digit": DIGITS, "precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}
    )


def confusion(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """10x10 counts: row = actual digit, column = predicted digit."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(np.asarray(labels), np.asarray(predicted), labels=DIGITS)


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


def predictions_frame(labels: np.ndarray, proba: np.ndarray) -> pd.DataFrame:
    """One row per test digit, in test-set order: actual, predicted, confidence of the prediction."""
    proba = _normalised(proba)
    predicted = predicted_labels(proba)
    return pd.DataFrame(
        {
            "actual": np.asarray(labels, dtype=np.int64),
            "predicted": predicted.astype(np.int64),
            "confidence": proba[np.arange(proba.shape[0]), predicted],
        }
    )


# ---------------------------------------------------------------------------------------------
# figures


def confusion_figure(cm: np.ndarray, title: str) -> Any:
    """Counts as a heat map; the diagonal dominates, so cell text switches colour on dark cells."""
    plt = _pyplot()
    cm = np.asarray(cm)
    figure, axis = plt.subplots(figsize=(7, 6))
    image = axis.imshow(cm, cmap="Blues")
    figure.colorbar(image, ax=axis)
    threshold = cm.max() / 2 if cm.size and cm.max() > 0 else 0
    for actual in range(cm.shape[0]):
        for predicted in range(cm.shape[1]):
            count = int(cm[actual, predicted])
            axis.text(
                predicted, actual, str(count), ha="center", va="center", fontsize=8,
                color="white" if count > threshold else "black",
            )
    axis.set_xticks(range(cm.shape[1]))
    axis.set_yticks(range(cm.shape[0]))
    axis.set_xlabel("predicted digit")
    axis.set_ylabel("actual digit")
    axis.set_title(title)
    figure.tight_layout()
    return figure


def most_confident_errors(labels: np.ndarray, predicted: np.ndarray, confidence: np.ndarray, limit: int) -> np.ndarray:
    """Indices of misclassified digits, most confident mistakes first (ties by test-set order)."""
    wrong = np.flatnonzero(np.asarray(labels) != np.asarray(predicted))
    order = np.argsort(-np.asarray(confidence)[wrong], kind="stable")
    return wrong[order][: max(limit, 0)]


def error_gallery(
    images: np.ndarray,
    labels: np.ndarray,
    predicted: np.ndarray,
    confidence: np.ndarray,
    limit: int,
    title: str = "MNIST test errors",
) -> Any:
    """A grid of misclassified digits, each titled ``true→pred (confidence)``, worst first."""
    plt = _pyplot()
    images = np.asarray(images).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    chosen = most_confident_errors(labels, predicted, confidence, limit)
    if chosen.size == 0:
        figure, axis = plt.subplots(figsize=(4, 2))
        axis.axis("off")
        axis.text(0.5, 0.5, "no misclassified digits" if limit > 0 else "gallery disabled", ha="center", va="center")
        figure.suptitle(title)
        return figure
    columns = min(int(math.ceil(math.sqrt(chosen.size))), 10)
    rows = int(math.ceil(chosen.size / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.8 * rows + 0.6), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, index in zip(axes.ravel(), chosen):
        axis.imshow(images[index], cmap="gray_r")
        axis.set_title(f"{int(labels[index])}→{int(predicted[index])} ({confidence[index]:.0%})", fontsize=9)
    figure.suptitle(f"{title}: {chosen.size} most confident of {int(np.count_nonzero(np.asarray(labels) != np.asarray(predicted)))}")
    figure.tight_layout()
    return figure
