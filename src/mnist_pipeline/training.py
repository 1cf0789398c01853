"""Fit one model: pure functions of (params, inputs, targets), with no file or MLflow I/O.

``fit`` returns a ``FitResult``; the ``pipeline/train.py`` entry saves it and logs it. Per-epoch
observers (the MLflow logger, for one) are passed in as plain callables.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mnist_pipeline.config import ModelParams
from mnist_pipeline.errors import ConfigError
from mnist_pipeline.models import registry

log = logging.getLogger(__name__)

EpochObserver = Callable[[int, dict[str, float]], None]
HISTORY_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


@dataclass
class FitResult:
    model: Any
    fit_seconds: float
    epochs: int
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch (Keras)
    parameter_counts: dict[str, int] = field(default_factory=dict)


def targets_for(params: ModelParams) -> str:
    """Keras trains on one-hot targets (categorical cross-entropy); scikit-learn on digit labels."""
    return "onehot" if registry.kind_of(params).framework == "keras" else "labels"


def check_batch_fits(name: str, params: ModelParams, n_examples: int) -> None:
    """The static check in config assumes 60,000 digits; smoke runs train on fewer."""
    batch_size = getattr(params, "batch_size", None)
    if batch_size is None:
        return
    available = int(n_examples * (1.0 - params.validation_split))
    if batch_size > available:
        raise ConfigError(
            f"models.{name}.batch_size: {batch_size} is larger than the {available} training examples "
            f"left after validation_split {params.validation_split} of {n_examples}"
        )


def fit(
    name: str,
    params: ModelParams,
    inputs: np.ndarray,
    targets: np.ndarray,
    *,
    observers: Sequence[EpochObserver] = (),
    verbose: int | None = None,
) -> FitResult:
    check_batch_fits(name, params, inputs.shape[0])
    if registry.kind_of(params).framework == "keras":
        return _fit_keras(name, params, inputs, targets, observers, verbose)
    return _fit_sklearn(name, params, inputs, targets)


def _fit_keras(name, params, inputs, targets, observers, verbose) -> FitResult:
    import keras

    keras.utils.set_random_seed(params.seed)
    model = registry.build(params, name)
    history: list[dict[str, float]] = []

    class _EpochRecorder(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            row = {key: float(value) for key, value in (logs or {}).items() if key in HISTORY_METRICS}
            row["epoch_seconds"] = time.perf_counter() - self._started
            history.append({"epoch": epoch, **row})
            for observer in observers:
                observer(epoch, row)

    if verbose is None:
        # A live bar on a terminal; one line per epoch in logs and CI.
        verbose = 1 if sys.stdout.isatty() else 2
    log.info(
        "%s: fitting %s parameters for %d epochs (batch %d, validation_split %.2f) on %d digits",
        name, f"{model.count_params():,}", params.epochs, params.batch_size, params.validation_split, inputs.shape[0],
    )
    started = time.perf_counter()
    model.fit(
        np.asarray(inputs),
        np.asarray(targets),
        epochs=params.epochs,
        batch_size=params.batch_size,
        validation_split=params.validation_split,
        callbacks=[_EpochRecorder()],
        verbose=verbose,
    )
    fit_seconds = time.perf_counter() - started
    return FitResult(
        model=model,
        fit_seconds=fit_seconds,
        epochs=len(history),
        history=history,
        parameter_counts=registry.parameter_counts(params, model),
    )


@contextlib.contextmanager
def heartbeat(message: str, every_s: float = 15.0) -> Iterator[None]:
    """Log ``message`` with the elapsed time every ``every_s`` while a silent fit runs."""
    done = threading.Event()
    started = time.perf_counter()

    def beat() -> None:
        while not done.wait(every_s):
            log.info("%s (%.0f s so far)", message, time.perf_counter() - started)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _fit_sklearn(name, params, inputs, targets) -> FitResult:
    model = registry.build(params, name)  # seeded through random_state where the estimator is random
    log.info("%s: fitting %s on %d digits (%s input)", name, type(model).__name__, inputs.shape[0], params.input)
    started = time.perf_counter()
    with heartbeat(f"{name}: still fitting"):
        model.fit(np.asarray(inputs), np.asarray(targets))
    fit_seconds = time.perf_counter() - started
    estimator = model.steps[-1][1] if hasattr(model, "steps") else model
    epochs = int(getattr(estimator, "n_iter_", 1))
    # scikit-learn exposes no per-epoch curve; one row with the final training accuracy keeps
    # history.csv (and its DVC plot) uniform across models.
    train_accuracy = float(np.mean(model.predict(inputs) == np.asarray(targets)))
    log.info("%s: fitted in %.1f s (%d epochs), training accuracy %.4f", name, fit_seconds, epochs, train_accuracy)
    return FitResult(
        model=model,
        fit_seconds=fit_seconds,
        epochs=epochs,
        history=[{"epoch": epochs - 1, "accuracy": train_accuracy}],
        parameter_counts=registry.parameter_counts(params, model),
    )
