"""What the Keras model types share: their common params and the layers they are built from.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from mnist_pipeline.constants import MNIST_TRAIN_SIZE, NUM_CLASSES
from mnist_pipeline.models.base import Activation, Fraction, Seed
from mnist_pipeline.paths import Section


class OptimizerParams(Section):
    name: Literal["rmsprop", "adam", "adamw", "nadam", "sgd"]
    learning_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 0.001


class ScheduleParams(Section):
    """How the learning rate moves during a fit; the optimizer's ``learning_rate`` is its peak.

    ``one_cycle``: a linear rise from a tenth of the peak over ``warmup_fraction`` of the steps,
    then a cosine fall to ``final_fraction`` of it, step by step (Smith & Topin 2019), as the
    MNIST speed-runs train. ``exponential``: the peak times ``decay_per_epoch`` to the power of
    the epoch, as Deotte's Kaggle recipe.
    """

    name: Literal["one_cycle", "exponential"]
    warmup_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.25
    final_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 0.01
    decay_per_epoch: Annotated[float, Field(gt=0.0, le=1.0)] = 0.95


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
    # Adam's family takes its betas from params that set them (models/types/keras_convnet.py).
    betas = {key: value for key in ("beta_1", "beta_2") if (value := getattr(params, key, None)) is not None}
    return classes[params.name](learning_rate=params.learning_rate, **betas)


def compile_classifier(model: Any, optimizer: OptimizerParams, label_smoothing: float = 0.0, steps_per_execution: int = 1) -> Any:
    from mnist_pipeline.models.quiet_keras import keras

    # The plain string keeps the seed's models' compiled config as it always was.
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing) if label_smoothing else "categorical_crossentropy"
    model.compile(optimizer=make_optimizer(optimizer), loss=loss, metrics=["accuracy"], steps_per_execution=steps_per_execution)
    return model


def learning_rate_at(schedule: ScheduleParams, peak: float, step: int, total_steps: int, epoch: int) -> float:
    """The learning rate of one step of a fit of ``total_steps`` (``ScheduleParams`` says how)."""
    if schedule.name == "exponential":
        return peak * schedule.decay_per_epoch**epoch
    progress = step / max(total_steps - 1, 1)
    if progress < schedule.warmup_fraction:
        return peak * (0.1 + 0.9 * progress / schedule.warmup_fraction)
    fall = (progress - schedule.warmup_fraction) / (1.0 - schedule.warmup_fraction)
    return peak * (schedule.final_fraction + (1.0 - schedule.final_fraction) * 0.5 * (1.0 + math.cos(math.pi * fall)))


def schedule_callbacks(params: Any) -> list[Any]:
    """The callback that drives the learning rate, for params with a ``schedule`` (else none).

    A callback rather than a Keras ``LearningRateSchedule``: it reads the fit's real number of
    steps, so a smoke run on fewer digits still ends its cycle.
    """
    schedule = getattr(params, "schedule", None)
    if schedule is None:
        return []
    from mnist_pipeline.models.quiet_keras import keras

    peak = params.optimizer.learning_rate

    class LearningRateDriver(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            # ``batch`` counts steps within the epoch, also when several run per call (steps_per_execution).
            steps = self.params["steps"]
            step = self.epoch * steps + batch
            self.model.optimizer.learning_rate.assign(learning_rate_at(schedule, peak, step, steps * self.params["epochs"], self.epoch))

    return [LearningRateDriver()]


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
