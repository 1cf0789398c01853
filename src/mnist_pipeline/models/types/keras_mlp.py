"""``type: keras_mlp``: the seed's multilayer perceptron on flat [0, 1] pixels (Dense(256) -> softmax)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from mnist_pipeline.constants import IMAGE_SIDE
from mnist_pipeline.models.keras_blocks import (
    KerasModelParams,
    augmentation_layers,
    classifier_head,
    compile_classifier,
)
from mnist_pipeline.models.registry import ModelType


class KerasMLPParams(KerasModelParams):
    type: Literal["keras_mlp"]
    hidden_units: Annotated[list[Annotated[int, Field(ge=1, le=65536)]], Field(min_length=1)]


def build_mlp(params: KerasMLPParams, name: str = "mlp") -> Any:
    """Dense(256, relu) -> Dense(10, softmax) in the seed; deeper stacks and dropout by params."""
    from keras import layers

    from mnist_pipeline.models.quiet_keras import keras

    stack: list[Any] = [keras.Input((IMAGE_SIDE * IMAGE_SIDE,))]
    augment = augmentation_layers(params.augmentation, params.seed)
    if augment:
        stack += [layers.Reshape((IMAGE_SIDE, IMAGE_SIDE, 1)), *augment, layers.Flatten()]
    stack += classifier_head(params.hidden_units, params)
    return compile_classifier(keras.Sequential(stack, name=name), params.optimizer)


MODEL_TYPE = ModelType("keras_mlp", KerasMLPParams, "keras", build_mlp, lambda params: "flat")
