"""The digit classifier people use: the pixels a client has in, the digit and its probabilities out.

One trained model folder (``models/<name>/model``) plus the preprocessing the pipeline applied to
its training data, so a client never needs to know which representation a model was trained on:

- uint8 (or any integer) pixels 0-255, the way images are stored: ``(N, 28, 28)`` or ``(N, 784)``;
- float pixels in [0, 1], the way the pipeline scales them: the same shapes, or ``(N, 28, 28, 1)``;
- one base64 string per digit, its 784 uint8 pixels row by row: the compact form for HTTP, where
  MLflow's server parses (and deep-copies) a JSON list of 784 numbers per digit far more slowly
  than one string (benchmarks/bench_serving.py).

Integers are raw pixels and floats are scaled ones, so the dtype says which; a float above 1 is
an error rather than a silent misreading (a float 0-255 image would otherwise be scored as if it
were saturated). Digits are white ink on black, centred in 28x28, as MNIST is: ``data/images.py``
turns photos and scans into that.

No MLflow here: ``pyfunc.py`` wraps this for MLflow, and ``mnist-predict`` uses it directly for a
local model folder.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mnist_pipeline.constants import IMAGE_SIDE, NUM_CLASSES
from mnist_pipeline.data.preprocess import PIXEL_MAX, PIXELS, SCALED_DTYPE, as_representation
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.models.calibration import calibrate
from mnist_pipeline.models.store import load_model_folder, temperature_of

log = logging.getLogger(__name__)

ACCEPTED_SHAPES = f"(N, {IMAGE_SIDE}, {IMAGE_SIDE}), (N, {PIXELS}) or (N, {IMAGE_SIDE}, {IMAGE_SIDE}, 1), or N base64 strings"
OUTPUT_COLUMNS = ("digit", "probability", "probabilities")


class InputError(PipelineError):
    """Pixels a model cannot classify: the message names what was wrong and what is accepted."""


def _decode_base64(strings: np.ndarray) -> np.ndarray:
    digits = []
    for index, text in enumerate(strings.tolist()):
        if not isinstance(text, (str, bytes)):
            raise InputError(f"expected every digit as a base64 string, digit {index} is {type(text).__name__}")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InputError(f"digit {index} is not valid base64 ({exc})") from None
        if len(raw) != PIXELS:
            raise InputError(f"base64 digit {index} decodes to {len(raw)} bytes, expected {PIXELS} (28x28 uint8 pixels, row by row)")
        digits.append(np.frombuffer(raw, dtype=np.uint8))
    return np.stack(digits).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)


def digit_batch(values: Any) -> np.ndarray:
    """Validate a batch of digits; returns ``(N, 28, 28)``, uint8 for raw pixels or float32 in [0, 1].

    Accepts a NumPy array, nested lists (as JSON gives them, possibly as an object array), a
    DataFrame of 784 pixel columns, or a list of base64 strings (see the module docstring).
    """
    if isinstance(values, pd.DataFrame):
        values = values.to_numpy()
    if isinstance(values, dict):
        raise InputError(f"expected one array of digits, got named inputs {sorted(values)}")
    try:
        array = np.asarray(values)
        if array.ndim == 1 and array.size and (array.dtype.kind in "SU" or isinstance(array.flat[0], (str, bytes))):
            return _decode_base64(array)
        if array.dtype == object:
            # JSON numbers arrive as Python ints and floats: let NumPy pick int64 or float64 from them.
            array = np.asarray(array.tolist())
    except (ValueError, TypeError) as exc:
        raise InputError(f"expected a rectangular array of digits shaped {ACCEPTED_SHAPES}; got rows of unequal length ({exc})") from None
    if array.ndim == 0 or array.shape[0] == 0:
        raise InputError(f"expected at least one digit shaped {ACCEPTED_SHAPES}, got shape {array.shape}")
    if array.ndim == 2 and array.shape[1] == PIXELS:
        array = array.reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    elif array.ndim == 4 and array.shape[1:] == (IMAGE_SIDE, IMAGE_SIDE, 1):
        array = array[..., 0]
    elif not (array.ndim == 3 and array.shape[1:] == (IMAGE_SIDE, IMAGE_SIDE)):
        raise InputError(f"expected digits shaped {ACCEPTED_SHAPES}, got shape {array.shape}")
    if np.issubdtype(array.dtype, np.bool_) or not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise InputError(f"expected integer pixels 0-255 or float pixels in [0, 1], got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > PIXEL_MAX:
            raise InputError(f"integer pixels must be 0-255, found values from {low} to {high}")
        return array.astype(np.uint8, copy=False)
    if not np.isfinite(array).all():
        raise InputError("float pixels must be finite numbers in [0, 1], found NaN or infinity")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 1:
        hint = " (raw 0-255 pixels must be sent as integers, or divided by 255)" if high > 1 else ""
        raise InputError(f"float pixels must be in [0, 1], found values from {low:g} to {high:g}{hint}")
    return array.astype(SCALED_DTYPE, copy=False)


def prediction_frame(probabilities: np.ndarray) -> pd.DataFrame:
    """One row per digit: the predicted digit, its probability, and all ten probabilities."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    digits = probabilities.argmax(axis=1)
    return pd.DataFrame(
        {
            "digit": digits.astype(np.int64),
            "probability": probabilities[np.arange(len(digits)), digits],
            "probabilities": list(probabilities),
        }
    )


@dataclass
class DigitClassifier:
    """A trained model folder, loaded once, that classifies batches of digits."""

    directory: Path
    batch_size: int = 1000

    def load(self) -> "DigitClassifier":
        self.config_, self.adapter_, self.model_ = load_model_folder(self.directory)
        log.debug("loaded %s (%s) from %s", self.config_["name"], self.config_["type"], self.directory)
        return self

    @property
    def name(self) -> str:
        return self.config_["name"]

    def predict_proba(self, values: Any) -> np.ndarray:
        inputs = as_representation(digit_batch(values), self.config_["input"])
        probabilities = self.adapter_.predict_proba(self.model_, inputs, self.batch_size)
        if probabilities.shape != (inputs.shape[0], NUM_CLASSES):
            raise PipelineError(f"{self.directory}: the model returned shape {probabilities.shape}, expected ({inputs.shape[0]}, {NUM_CLASSES})")
        # Calibrated as evaluation scores it: the temperature fitted on the validation digits.
        return calibrate(probabilities, temperature_of(self.config_))

    def predict(self, values: Any) -> pd.DataFrame:
        return prediction_frame(self.predict_proba(values))

