"""Figures people would rather look at than read: training curves, confusion matrices, error galleries.

Matplotlib runs headless (Agg) and is imported lazily, so stages that draw nothing don't pay for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mnist_pipeline.constants import IMAGE_SIDE


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
