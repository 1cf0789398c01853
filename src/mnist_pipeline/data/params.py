"""The ``data`` and ``preprocess`` sections of params.yaml: where MNIST comes from, what it must hash to, how it is cut."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from mnist_pipeline.constants import MNIST_TEST_SIZE, MNIST_TRAIN_SIZE
from mnist_pipeline.paths import Section

Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class PinnedFile(Section):
    filename: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]+\.gz$")]
    sha256: Sha256 = Field(description="SHA-256 of the decompressed content")
    size: Annotated[int, Field(gt=0)] = Field(description="decompressed size in bytes")


class DataFiles(Section):
    train_images: PinnedFile
    train_labels: PinnedFile
    test_images: PinnedFile
    test_labels: PinnedFile


class Mirrored(Section):
    """Where pinned files come from: mirrors tried in order, retries on transient errors, a timeout."""

    mirrors: Annotated[list[Annotated[str, Field(pattern=r"^(https?|file)://")]], Field(min_length=1)]
    retries: Annotated[int, Field(ge=0, le=10)] = 3
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0


class DataParams(Mirrored):
    files: DataFiles


class PreprocessParams(Section):
    dtype: Literal["float32", "float64"] = "float32"
    # The last tenth of the training digits (6,000) is the validation split: every choice is made
    # on it, and no model fits on it. The last, as Keras' validation_split takes them.
    validation_fraction: Annotated[float, Field(ge=0.05, le=0.5)] = 0.1
    # Shrink the data for smoke runs; null keeps every example.
    train_limit: Annotated[int, Field(ge=100, le=MNIST_TRAIN_SIZE)] | None = None
    test_limit: Annotated[int, Field(ge=100, le=MNIST_TEST_SIZE)] | None = None
