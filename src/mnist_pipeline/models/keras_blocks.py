"""What the Keras model types share: their common params and the layers they are built from.

Keras is imported inside functions: only stages that build or run a Keras model pay for TensorFlow.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from mnist_pipeline.constants import MNIST_TRAIN_SIZE, NUM_CLASSES
from mnist_pipeline.models.base import Activation, Fraction, Seed
from mnist_pipeline.paths import Section


class OptimizerParams(Section):
    name: Literal["rmsprop", "adam", "adamw", "nadam", "sgd"]
    learning_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 0.001


class AugmentationParams(Section):
    """Small random affine jitter applied only while training (Keras preprocessing layers)."""

    rotation_degrees: Annotated[float, Field(ge=0.0, le=45.0)] = 10.0
    shift_fraction: Annotated[float, Field(ge=0.0, le=0.3)] = 0.1
    zoom_fraction: Annotated[float, Field(ge=0.0, le=0.3)] = 0.0


class KerasModelParams(Section):
    seed: Seed
    optimizer: OptimizerParams
    epochs: Annotated[int, Field(ge=1, le=1000)]
    batch_size: Annotated[int, Field(ge=1)]
    validation_split: Fraction
    activation: Activation = "relu"
    dropout: Fraction = 0.0
    augmentation: AugmentationParams | None = None

    @model_validator(mode="after")
    def _batch_fits_training_set(self) -> "KerasModelParams":
        available = int(MNIST_TRAIN_SIZE * (1.0 - self.validation_split))
        if self.batch_size > available:
            raise ValueError(
                f"batch_size {self.batch_size} is larger than the {available} training examples "
                f"left after validation_split {self.validation_split}"
            )
        return self


def augmentation_layers(augmentation: AugmentationParams | None, seed: int) -> list[Any]:
    """Random jitter active only in ``fit``; ``predict``/``evaluate`` see the image unchanged."""
    if augmentation is None:
        return []
    from keras import layers

    stack: list[Any] = []
    if augmentation.rotation_degrees:
        stack.append(layers.RandomRotation(augmentation.rotation_degrees / 360.0, fill_mode="constant", seed=seed))
    if augmentation.shift_fraction:
        shift = augmentation.shift_fraction
        stack.append(layers.RandomTranslation(shift, shift, fill_mode="constant", seed=seed + 1))
    if augmentation.zoom_fraction:
        stack.append(layers.RandomZoom(augmentation.zoom_fraction, fill_mode="constant", seed=seed + 2))
    return stack


def make_optimizer(params: OptimizerParams) -> Any:
    from keras import optimizers

    classes = {
        "rmsprop": optimizers.RMSprop,
        "adam": optimizers.Adam,
        "adamw": optimizers.AdamW,
        "nadam": optimizers.Nadam,
        "sgd": optimizers.SGD,
    }
    return classes[params.name](learning_rate=params.learning_rate)


def compile_classifier(model: Any, optimizer: OptimizerParams) -> Any:
    model.compile(optimizer=make_optimizer(optimizer), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def classifier_head(hidden_units: list[int], params: KerasModelParams) -> list[Any]:
    """Dense hidden layers (each followed by dropout, if any), then the 10-way softmax."""
    from keras import layers

    head: list[Any] = []
    for units in hidden_units:
        head.append(layers.Dense(units, activation=params.activation))
        if params.dropout:
            head.append(layers.Dropout(params.dropout, seed=params.seed))
    head.append(layers.Dense(NUM_CLASSES, activation="softmax"))
    return head
