"""``type: keras_cnn``: the seed's convolutional network on 28x28x1 images ('valid' padding, max-pools)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from mnist_pipeline.constants import IMAGE_SIDE
from mnist_pipeline.models.keras_blocks import (
    KerasModelParams,
    augmentation_layers,
    classifier_head,
    compile_classifier,
)
from mnist_pipeline.models.registry import ModelType
from mnist_pipeline.paths import Section


class ConvLayerParams(Section):
    filters: Annotated[int, Field(ge=1, le=4096)]
    kernel_size: Annotated[int, Field(ge=1, le=IMAGE_SIDE)] = 3
    pool: bool = False


class KerasCNNParams(KerasModelParams):
    type: Literal["keras_cnn"]
    conv_layers: Annotated[list[ConvLayerParams], Field(min_length=1)]
    dense_units: list[Annotated[int, Field(ge=1, le=65536)]] = []

    @model_validator(mode="after")
    def _fits_28x28(self) -> "KerasCNNParams":
        side = IMAGE_SIDE
        for index, layer in enumerate(self.conv_layers):
            side = side - layer.kernel_size + 1  # 'valid' padding, as in the seed
            if side < 1:
                raise ValueError(
                    f"conv_layers[{index}] (kernel {layer.kernel_size}) leaves no pixels: the "
                    f"feature map would be {side}x{side} on 28x28 inputs"
                )
            if layer.pool:
                side //= 2
                if side < 1:
                    raise ValueError(
                        f"conv_layers[{index}] pools a 1x1 feature map: more pooling than a "
                        "28x28 image allows"
                    )
        return self


def build_cnn(params: KerasCNNParams, name: str = "cnn") -> Any:
    """The seed's Conv2D/MaxPooling stack ('valid' padding), flattened into a Dense classifier."""
    from keras import layers

    from mnist_pipeline.models.quiet_keras import keras

    stack: list[Any] = [keras.Input((IMAGE_SIDE, IMAGE_SIDE, 1)), *augmentation_layers(params.augmentation, params.seed)]
    for conv in params.conv_layers:
        stack.append(layers.Conv2D(conv.filters, (conv.kernel_size, conv.kernel_size), activation=params.activation))
        if conv.pool:
            stack.append(layers.MaxPooling2D((2, 2)))
    stack.append(layers.Flatten())
    stack += classifier_head(params.dense_units, params)
    return compile_classifier(keras.Sequential(stack, name=name), params.optimizer)


MODEL_TYPE = ModelType("keras_cnn", KerasCNNParams, "keras", build_cnn, lambda params: "image")
