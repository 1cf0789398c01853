"""Score a trained model on the validation sets and the test sets: pure functions of (model, inputs, labels).

``pipeline/evaluate.py`` does the file I/O around them and ``tracking.evaluation`` the MLflow
logging. Everything works on class probabilities of shape (N, 10), one column per digit, which
the model's framework adapter produces (``predict_proba``), whatever the framework, calibrated by
the model's temperature (``models.calibration``); each set's ECE is reported before and after.

The validation scores (the clean validation digits and the validation corruptions) are what
choices read; the test scores only report and gate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from mnist_pipeline.constants import DIGITS
from mnist_pipeline.data.arrays import load_array, load_split
from mnist_pipeline.data.preprocess import as_representation
from mnist_pipeline.data.testsets import load_testsets
from mnist_pipeline.data.valsets import load_valsets
from mnist_pipeline.errors import ArtifactError
from mnist_pipeline.models.calibration import calibrate
from mnist_pipeline.paths import Section

METRIC_KEYS = ("accuracy", "loss", "errors", "precision_macro", "recall_macro", "f1_macro")
PREDICTION_COLUMNS = ("actual", "predicted", "confidence", "confidence_uncalibrated")


class EvaluateParams(Section):
    """The ``evaluate`` section of params.yaml."""

    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 1000
    gallery_size: Annotated[int, Field(ge=0, le=400)] = 36
    calibration_bins: Annotated[int, Field(ge=2, le=100)] = 15
    min_writer_digits: Annotated[int, Field(ge=1, le=1000)] = 10


def _normalised(proba: np.ndarray) -> np.ndarray:
    # float32 softmax rows can sum to 1 +- 1e-7, which scikit-learn's log_loss rejects as > 1.
    proba = np.clip(np.asarray(proba, dtype=np.float64), 0.0, None)
    return proba / proba.sum(axis=1, keepdims=True)


def predicted_labels(proba: np.ndarray) -> np.ndarray:
    return np.asarray(proba).argmax(axis=1)


def compute_metrics(labels: np.ndarray, proba: np.ndarray) -> dict[str, float | int]:
    """accuracy, loss (log loss), errors (count), precision/recall/F1 macro-averaged over digits."""
    from sklearn.metrics import (
        accuracy_score,
        log_loss,
        precision_recall_fscore_support,
    )

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


def dvc_metrics(scores: "SetScores", config: dict[str, Any], validation: "ValidationScores") -> dict[str, Any]:
    """What DVC tracks and the gate compares: every test set's results, the validation results
    apart (under ``validation``), the temperature, and the model's size and epochs run.

    No timing: this file is what ``dvc metrics diff`` compares, and a fit time moves on every
    retrain. Fit time lives in MLflow and in the report (from the model's ``config.json``).
    """
    counts = config["parameter_counts"]
    return {
        **scores.summary(),
        "corruption": {name: result["accuracy"] for name, result in scores.corruptions.items()},
        "validation": validation.summary(),
        "temperature": float(config.get("temperature", 1.0)),
        "params_total": int(counts["total"]),
        "params_trainable": int(counts["trainable"]),
        "epochs": int(config["epochs"]),
    }


def predictions_frame(labels: np.ndarray, proba: np.ndarray, uncalibrated: np.ndarray) -> Any:
    """One row per test digit (a DataFrame), in test-set order: actual, predicted, the (calibrated)
    confidence of the prediction, and that confidence before calibration."""
    import pandas as pd

    proba = _normalised(proba)
    predicted = predicted_labels(proba)
    rows = np.arange(proba.shape[0])
    return pd.DataFrame(
        {
            "actual": np.asarray(labels, dtype=np.int64),
            "predicted": predicted.astype(np.int64),
            "confidence": proba[rows, predicted],
            "confidence_uncalibrated": _normalised(uncalibrated)[rows, predicted],
        }
    )


def expected_calibration_error(labels: np.ndarray, proba: np.ndarray, bins: int) -> float:
    """ECE over ``bins`` equal-width confidence bins: sum over bins of (share of digits) * |accuracy - mean confidence|."""
    proba = _normalised(proba)
    confidence = proba.max(axis=1)
    correct = predicted_labels(proba) == np.asarray(labels)
    # Bin b holds confidences in (b/bins, (b+1)/bins]; a confidence of exactly 0 cannot occur (max of 10 >= 0.1).
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, weights=correct, minlength=bins) - np.bincount(which, weights=confidence, minlength=bins))
    return float(gap.sum() / max(count.sum(), 1))


def _accuracy(labels: np.ndarray, proba: np.ndarray) -> float:
    return float(np.mean(predicted_labels(proba) == np.asarray(labels)))


def set_scores(labels: np.ndarray, raw: np.ndarray, temperature: float, bins: int) -> tuple[dict[str, float], np.ndarray]:
    """One set: accuracy, ECE after and before calibration; and the calibrated probabilities."""
    proba = calibrate(raw, temperature)
    scores = {
        "accuracy": _accuracy(labels, proba),
        "ece": expected_calibration_error(labels, proba, bins),
        "ece_uncalibrated": expected_calibration_error(labels, raw, bins),
    }
    return scores, proba


@dataclass(frozen=True)
class ValidationScores:
    """One model scored on the validation sets (``data.valsets``): what every choice reads."""

    clean: dict[str, float | int]  # compute_metrics on the clean validation digits, plus both ECEs
    corruptions: dict[str, dict[str, float]]  # validation corruption -> accuracy, ece, ece_uncalibrated
    proba: dict[str, np.ndarray]  # calibrated probabilities per set ("clean" first): the ensemble chooses from them
    valsets_digest: str

    def summary(self) -> dict[str, Any]:
        accuracy = [scores["accuracy"] for scores in self.corruptions.values()]
        return {
            **self.clean,
            "corruption_mean": float(np.mean(accuracy)),
            "corruption_worst": float(np.min(accuracy)),
            "ece_corruption_mean": float(np.mean([scores["ece"] for scores in self.corruptions.values()])),
            "corruption": {name: scores["accuracy"] for name, scores in self.corruptions.items()},
        }


def score_validation(predict: Callable[[np.ndarray], np.ndarray], valsets: Any, temperature: float, bins: int) -> ValidationScores:
    """Score ``predict`` (0-255 pixels -> uncalibrated probabilities) at ``temperature`` on every validation set (a ``Valsets``)."""
    labels = np.asarray(valsets.labels)
    raw = predict(valsets.clean)
    clean_scores, clean_proba = set_scores(labels, raw, temperature, bins)
    clean = {**compute_metrics(labels, clean_proba), "ece": clean_scores["ece"], "ece_uncalibrated": clean_scores["ece_uncalibrated"]}
    corruptions, probabilities = {}, {"clean": clean_proba}
    for name, pixels in valsets.corruptions.items():
        corruptions[name], probabilities[name] = set_scores(labels, predict(pixels), temperature, bins)
    return ValidationScores(clean, corruptions, probabilities, valsets.digest)


@dataclass(frozen=True)
class SetScores:
    """One model scored on every test set (``data.testsets``)."""

    clean: dict[str, float | int]  # compute_metrics on the MNIST test digits (calibrated), plus ece and ece_uncalibrated
    clean_proba: np.ndarray  # calibrated
    clean_proba_uncalibrated: np.ndarray
    corruptions: dict[str, dict[str, float]]  # corruption -> accuracy, ece, ece_uncalibrated
    uci: dict[str, float]  # accuracy, ece, ece_uncalibrated
    series: Any  # DataFrame: one row per NIST series (writer population): digits, errors, accuracy
    writers: Any  # DataFrame: one row per writer with at least min_writer_digits digits, worst first
    testsets_digest: str

    def summary(self) -> dict[str, float | int | None]:
        """The headline numbers, flat (DVC metrics, the gate, the noise model's rows)."""
        by_series = {int(row.series): row for row in self.series.itertuples(index=False)}
        rate = {series: row.errors / row.digits for series, row in by_series.items()}
        accuracy = [scores["accuracy"] for scores in self.corruptions.values()]
        return {
            **self.clean,
            "corruption_mean": float(np.mean(accuracy)),
            "corruption_worst": float(np.min(accuracy)),
            "ece_corruption_mean": float(np.mean([scores["ece"] for scores in self.corruptions.values()])),
            "ece_corruption_mean_uncalibrated": float(np.mean([scores["ece_uncalibrated"] for scores in self.corruptions.values()])),
            "uci_accuracy": self.uci["accuracy"],
            "ece_uci": self.uci["ece"],
            "ece_uci_uncalibrated": self.uci["ece_uncalibrated"],
            **{f"series{series}_accuracy": float(row.accuracy) for series, row in by_series.items() if series in SERIES},
            # How many times likelier an error is on the harder writers (series 4) than the easier (0).
            "series_error_ratio": rate[4] / rate[0] if rate.get(0) and 4 in rate else None,
            "worst_writer_accuracy": float(self.writers["accuracy"].iloc[0]) if len(self.writers) else None,
        }


SERIES = (0, 4)  # NIST's two writer populations in the MNIST test set (one digit comes from series 1)


def score_testsets(
    predict: Callable[[np.ndarray], np.ndarray], sets: Any, bins: int, min_writer_digits: int, temperature: float = 1.0
) -> SetScores:
    """Score ``predict`` (0-255 pixels (N, 784) -> uncalibrated probabilities (N, 10)) at ``temperature``
    on every set of ``sets`` (a ``Testsets``)."""
    import pandas as pd

    labels = np.asarray(sets.labels)
    clean_raw = predict(sets.clean)
    clean_scores, clean_proba = set_scores(labels, clean_raw, temperature, bins)
    clean = {**compute_metrics(labels, clean_proba), "ece": clean_scores["ece"], "ece_uncalibrated": clean_scores["ece_uncalibrated"]}
    corruptions = {name: set_scores(labels, predict(pixels), temperature, bins)[0] for name, pixels in sets.corruptions.items()}
    uci, _ = set_scores(sets.uci_labels, predict(sets.uci), temperature, bins)

    frame = pd.DataFrame({
        "series": sets.writers[:, 0], "writer": sets.writers[:, 1], "error": predicted_labels(clean_proba) != labels,
    })
    series = frame.groupby("series").agg(digits=("error", "size"), errors=("error", "sum")).reset_index()
    series["accuracy"] = 1.0 - series["errors"] / series["digits"]
    writers = frame.groupby(["writer", "series"]).agg(digits=("error", "size"), errors=("error", "sum")).reset_index()
    writers = writers[writers["digits"] >= min_writer_digits].copy()
    writers["accuracy"] = 1.0 - writers["errors"] / writers["digits"]
    writers = writers.sort_values(["accuracy", "digits", "writer"], ascending=[True, False, True], ignore_index=True)
    return SetScores(clean, clean_proba, _normalised(clean_raw), corruptions, uci, series, writers, sets.digest)


def model_predictor(adapter: Any, model: Any, representation: str, dtype: Any, batch_size: int) -> Callable[[np.ndarray], np.ndarray]:
    """0-255 pixels -> the model's probabilities (its framework adapter's ``predict_proba``), through
    the preprocessing its training data went through."""
    return lambda pixels: adapter.predict_proba(model, as_representation(pixels, representation, dtype), batch_size)


def score_all_sets(
    adapter: Any, model: Any, representation: str, paths: Any, settings: EvaluateParams, temperature: float = 1.0
) -> tuple[Any, SetScores]:
    """The test sets the pipeline made (a ``Testsets``), and ``model`` scored on them as evaluate@<model> scores it."""
    pixels, labels = load_split(paths, "test", "pixels")
    dtype = load_array(paths.processed("test", representation)).dtype
    sets = load_testsets(paths.testsets_dir, pixels, labels)
    predict = model_predictor(adapter, model, representation, dtype, settings.batch_size)
    return sets, score_testsets(predict, sets, settings.calibration_bins, settings.min_writer_digits, temperature)


def score_validation_sets(
    adapter: Any, model: Any, representation: str, paths: Any, settings: EvaluateParams, temperature: float = 1.0
) -> tuple[Any, ValidationScores]:
    """The validation sets the pipeline made (a ``Valsets``), and ``model`` scored on them as evaluate@<model> scores it."""
    pixels, labels = load_split(paths, "validation", "pixels")
    dtype = load_array(paths.processed("validation", representation)).dtype
    valsets = load_valsets(paths.valsets_dir, pixels, labels)
    predict = model_predictor(adapter, model, representation, dtype, settings.batch_size)
    return valsets, score_validation(predict, valsets, temperature, settings.calibration_bins)
