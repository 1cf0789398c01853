"""Figures people would rather look at than read. Matplotlib runs headless (Agg) and is imported
lazily, so stages that draw nothing don't pay for it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curves(history: Sequence[dict[str, float]], title: str) -> Any:
    """The seed's plot: training (dots) vs validation (line), accuracy and loss side by side."""
    plt = _pyplot()
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
    plt = _pyplot()
    for figure in figures:
        plt.close(figure)
