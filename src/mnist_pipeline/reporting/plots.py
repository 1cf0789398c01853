"""Figures people would rather look at than read: training curves, confusion matrices, error galleries.

Matplotlib runs headless (Agg).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mnist_pipeline.constants import IMAGE_SIDE

if TYPE_CHECKING:
    from collections.abc import Mapping

    import pandas
    from matplotlib.figure import Figure


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curves(history: Sequence[dict[str, float]], title: str) -> Any:
    """The seed's plot: training (dots) vs validation (line), accuracy and loss side by side."""
    plt = pyplot()
    epochs = [row["epoch"] + 1 for row in history]
    figure, (acc_axis, loss_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in ((acc_axis, "accuracy"), (loss_axis, "loss")):
        if all(metric in row for row in history):
            axis.plot(epochs, [row[metric] for row in history], "bo", label=f"Training {metric}")
        if all(f"val_{metric}" in row for row in history):
            axis.plot(epochs, [row[f"val_{metric}"] for row in history], "b", label=f"Validation {metric}")
        axis.set_xlabel("epoch")
        axis.set_title(f"Training and validation {metric}")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def close_figures(*figures: Any) -> None:
    """Free figures once saved or logged: pyplot keeps every open figure alive otherwise."""
    plt = pyplot()
    for figure in figures:
        plt.close(figure)



def confusion_figure(cm: np.ndarray, title: str) -> Any:
    """Counts as a heat map; the diagonal dominates, so cell text switches colour on dark cells."""
    plt = pyplot()
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
    plt = pyplot()
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


def corruption_grid(clean: np.ndarray, corrupted: Mapping[str, np.ndarray], title: str) -> Figure:
    """One digit clean and under every corruption, side by side, each named underneath.

    Pixels are drawn as stored (white ink on black) on a fixed 0-255 scale, so a brightness shift
    or a fog shows as the grey it is rather than being stretched away.
    """
    plt = pyplot()
    panels = [("clean", clean), *corrupted.items()]
    columns = min(len(panels), 8)
    rows = int(math.ceil(len(panels) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(1.3 * columns, 1.5 * rows + 0.5), squeeze=False)
    for axis in axes.ravel()[len(panels):]:
        figure.delaxes(axis)
    for axis, (name, image) in zip(axes.ravel(), panels):
        axis.imshow(np.asarray(image).reshape(IMAGE_SIDE, IMAGE_SIDE), cmap="gray", vmin=0, vmax=255)
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_xlabel(name.replace("_", " "), fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def robustness_heatmap(accuracy: pandas.DataFrame, title: str) -> Figure:
    """Accuracy per model (rows) and test set (columns) on a fixed 0-100 % scale, each cell labelled."""
    plt = pyplot()
    values = accuracy.to_numpy(dtype=float)
    figure, axis = plt.subplots(figsize=(max(6.0, 0.75 * values.shape[1] + 3), max(2.5, 0.5 * values.shape[0] + 2)))
    image = axis.imshow(values, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    colourbar = figure.colorbar(image, ax=axis)
    colourbar.ax.yaxis.set_major_formatter(lambda value, _: f"{value:.0%}")
    for row in range(values.shape[0]):
        for column in range(values.shape[1]):
            value = values[row, column]
            # viridis runs dark to light, so low accuracies get white text.
            axis.text(
                column, row, "–" if np.isnan(value) else f"{value:.1%}", ha="center", va="center", fontsize=8,
                color="white" if np.isnan(value) or image.norm(value) < 0.5 else "black",
            )
    axis.set_xticks(range(values.shape[1]), [str(column) for column in accuracy.columns], rotation=45, ha="right")
    axis.set_yticks(range(values.shape[0]), [str(row) for row in accuracy.index])
    axis.set_xlabel("test set")
    axis.set_ylabel("model")
    axis.set_title(title)
    figure.tight_layout()
    return figure


def reliability_figure(panels: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]], title: str, bins: int = 15) -> Figure:
    """Reliability diagrams: per panel (a model), accuracy against confidence in equal-width bins, one curve
    per labelled ``(confidence, correct)`` pair (before and after calibration), the diagonal for reference."""
    plt = pyplot()
    columns = min(len(panels), 4)
    rows = int(math.ceil(len(panels) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3.3 * columns, 3.3 * rows + 0.4), squeeze=False)
    for axis in axes.ravel()[len(panels):]:
        figure.delaxes(axis)
    for axis, (panel, curves) in zip(axes.ravel(), panels.items()):
        axis.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
        for (label, (confidence, correct)), style in zip(curves.items(), ("--", "-", "-.")):
            confidence = np.asarray(confidence, dtype=np.float64)
            which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
            count = np.bincount(which, minlength=bins)
            hits = np.bincount(which, weights=np.asarray(correct, dtype=np.float64), minlength=bins)
            sure = np.bincount(which, weights=confidence, minlength=bins)
            ece = float(np.abs(hits - sure).sum() / max(count.sum(), 1))
            used = count > 0
            axis.plot(sure[used] / count[used], hits[used] / count[used], style, marker="o", markersize=3, label=f"{label}: ECE {ece:.3f}")
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.set_xlabel("confidence")
        axis.set_ylabel("accuracy")
        axis.set_title(panel, fontsize=9)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="upper left")
    figure.suptitle(title)
    figure.tight_layout()
    return figure
