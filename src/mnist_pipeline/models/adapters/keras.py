"""The Keras adapter: fit with per-epoch observers, softmax outputs, the native ``.keras`` format.

Models are loaded with ``safe_mode=True`` (no lambda deserialisation), so a tampered file cannot
run code.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.atomic import atomic_path
from mnist_pipeline.errors import ArtifactError
from mnist_pipeline.models.base import HISTORY_METRICS, EpochObserver, FitResult
from mnist_pipeline.models.keras_blocks import schedule_callbacks

log = logging.getLogger("mnist_pipeline.training")


class KerasAdapter:
    name = "keras"
    model_filename = "model.keras"
    targets = "onehot"  # categorical cross-entropy
    heavy_modules = ("mnist_pipeline.models.quiet_keras",)  # keras, without TensorFlow's start-up notices
    pip_packages = ("keras", "tensorflow")

    def fit(
        self, model_type: Any, name: str, params: Any, inputs: np.ndarray, targets: np.ndarray,
        observers: Sequence[EpochObserver] = (), verbose: int | None = None,
    ) -> FitResult:
        from mnist_pipeline.models.quiet_keras import keras

        keras.utils.set_random_seed(params.seed)
        model = model_type.build(params, name)
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
            callbacks=[*schedule_callbacks(params), _EpochRecorder()],
            verbose=verbose,
        )
        fit_seconds = time.perf_counter() - started
        return FitResult(model, fit_seconds, len(history), history, self.parameter_counts(model))

    def predict_proba(self, model: Any, inputs: np.ndarray, batch_size: int) -> np.ndarray:
        # The models end in a softmax over the ten digits: predict already returns probabilities.
        inputs = np.asarray(inputs)
        if inputs.shape[0] <= batch_size:
            # One batch: predict() would build a tf.data pipeline per call, 100+ ms to serve a
            # single digit; predict_on_batch runs the same compiled step directly (about 1 ms).
            # benchmarks/bench_serving.py measures both.
            return np.asarray(model.predict_on_batch(inputs), dtype=np.float64)
        return np.asarray(model.predict(inputs, batch_size=batch_size, verbose=0), dtype=np.float64)

    def save(self, model: Any, directory: Path) -> Path:
        path = directory / self.model_filename
        with atomic_path(path, suffix=".keras") as tmp:
            model.save(tmp)
        return path

    def load(self, directory: Path, model_type: Any = None) -> Any:
        from mnist_pipeline.models.quiet_keras import keras

        path = directory / self.model_filename
        if not path.exists():
            raise ArtifactError(f"{path}: no trained model here; run `dvc repro` for its train stage first")
        try:
            return keras.models.load_model(path, safe_mode=True, compile=True)
        except (ValueError, OSError) as exc:
            raise ArtifactError(f"{path}: not a loadable Keras model ({exc})") from None

    def summary(self, model: Any) -> str:
        lines: list[str] = []
        model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line), line_length=100)
        return "\n".join(lines) + "\n"

    def parameter_counts(self, model: Any) -> dict[str, int]:
        trainable = int(sum(np.prod(weight.shape) for weight in model.trainable_weights))
        total = int(model.count_params())
        return {"total": total, "trainable": trainable, "non_trainable": total - trainable}


ADAPTER = KerasAdapter()
