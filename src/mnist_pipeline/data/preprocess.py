"""Turn decoded MNIST arrays into the representations the seed's models consume.

Pure functions over NumPy arrays; ``pipeline/preprocess.py`` does the file I/O. Three splits:
``train`` (the first 54,000 training digits), ``validation`` (the last 6,000: every choice is made
on them, and no model fits on them) and ``test``. Each split is stored in its own folder as several ``.npy`` arrays (``np.load(..., mmap_mode="r")`` maps them without copying):

- ``pixels``: (N, 784) uint8, the raw 0-255 pixels the seed's scikit-learn homework uses;
- ``flat``: (N, 784) float in [0, 1], the MLP's input;
- ``image``: (N, 28, 28, 1) float in [0, 1], the CNN's input;
- ``onehot``: (N, 10) float32, Keras' categorical targets;
- ``labels``: (N,) uint8 digits.
"""

from __future__ import annotations

import numpy as np

from mnist_pipeline.constants import IMAGE_SIDE, NUM_CLASSES
from mnist_pipeline.data.params import PreprocessParams

PIXEL_MAX = 255
PIXELS = IMAGE_SIDE * IMAGE_SIDE
# preprocess.dtype's default: serving and the ensemble's members scale with it too, so a model
# served or averaged sees exactly the numbers it was evaluated on.
SCALED_DTYPE = np.float32


def one_hot(labels: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    encoded = np.zeros((labels.shape[0], num_classes), dtype=np.float32)
    encoded[np.arange(labels.shape[0]), labels] = 1.0
    return encoded


def represent(images: np.ndarray, labels: np.ndarray, params: PreprocessParams, limit: int | None) -> dict[str, np.ndarray]:
    """All representations of one split, keyed by representation name."""
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    pixels = np.ascontiguousarray(images.reshape(images.shape[0], PIXELS))
    flat = as_representation(pixels, "flat", params.dtype)
    return {
        "pixels": pixels,
        "flat": flat,
        "image": as_representation(flat, "image", params.dtype),
        "onehot": one_hot(labels),
        "labels": np.ascontiguousarray(labels, dtype=np.uint8),
    }


def as_representation(
    digits: np.ndarray, representation: str, dtype: str | np.dtype = SCALED_DTYPE, *, floats_are_raw: bool = False,
) -> np.ndarray:
    """Digits (N first, any shape of 784 pixels each) in one model input representation.

    The one path from pixels to a model's input: preprocessing, evaluation on every test set, the
    ensemble's members and serving all call it. uint8 digits are raw 0-255 pixels; float digits are
    pixels already scaled to [0, 1] (a client's, or ``flat``), unless ``floats_are_raw`` (the
    ensemble's own input, which is the ``pixels`` representation of a client's floats).
    """
    count = digits.shape[0]
    flat = digits.reshape(count, PIXELS)
    if flat.dtype != np.uint8 and floats_are_raw:
        flat = (flat / PIXEL_MAX).astype(dtype)
    if representation == "pixels":
        # scikit-learn models learned from raw 0-255 pixels.
        return np.ascontiguousarray(flat) if flat.dtype == np.uint8 else flat * flat.dtype.type(PIXEL_MAX)
    if flat.dtype == np.uint8:
        # Divide in the target dtype, as the seed does (astype("float32") / 255), so values match it bit for bit.
        flat = flat.astype(dtype)
        flat /= np.asarray(PIXEL_MAX, dtype=dtype)
    if representation == "flat":
        return flat
    if representation == "image":
        return flat.reshape(count, IMAGE_SIDE, IMAGE_SIDE, 1)
    raise ValueError(f"unknown input representation {representation!r}; expected pixels, flat or image")


def validation_start(count: int, fraction: float) -> int:
    """Where the validation split begins among ``count`` training digits: the last ``fraction`` of
    them, cut where Keras' ``validation_split`` cuts, so a Keras model holding out at least that
    fraction holds out every validation digit."""
    return int(count * (1.0 - fraction))


def preprocess(
    train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], params: PreprocessParams
) -> dict[str, dict[str, np.ndarray]]:
    """``{"train": {"flat": ..., ...}, "validation": {...}, "test": {...}}``."""
    images, labels = train
    if params.train_limit is not None:
        images, labels = images[: params.train_limit], labels[: params.train_limit]
    start = validation_start(len(labels), params.validation_fraction)
    return {
        "train": represent(images[:start], labels[:start], params, None),
        "validation": represent(images[start:], labels[start:], params, None),
        "test": represent(*test, params, params.test_limit),
    }
