"""``type: keras_convnet``: convolutional networks beyond the seed's, and the recipes that train them.

Each conv block chooses its padding, stride, batch norm, max-pool and dropout, so one schema
holds both the fast speed-run net (two 'valid' convs with pools, one-cycle Adam, label smoothing)
and Deotte's best single-network recipe (six 'same' convs with batch norm, strided 5x5 convs for
pooling, augmentation, an exponentially decaying learning rate). The seed's own ``keras_cnn``
keeps its schema, so its models' settings, and the noise measured for them, stay as they are.

For robustness (``robust``, chosen on the validation sets only: benchmarks/tune_robust.py), two
more settings: ``standardize_input`` (each image to zero mean and unit variance before the first
conv, a LayerNormalization over the image, in training and prediction alike) and ``photometric``
augmentation during training (ink inverted with some probability, Gaussian pixel noise, random erasing), beside
the affine ``augmentation``. None of them is a test corruption's code (docs: models).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from mnist_pipeline.constants import IMAGE_SIDE
from mnist_pipeline.models.base import Fraction
from mnist_pipeline.models.keras_blocks import (
    KerasModelParams,
    OptimizerParams,
    ScheduleParams,
    augmentation_layers,
    classifier_head,
    compile_classifier,
)
from mnist_pipeline.models.registry import ModelType
from mnist_pipeline.paths import Section

Beta = Annotated[float, Field(gt=0.0, lt=1.0)]


class ConvBlockParams(Section):
    filters: Annotated[int, Field(ge=1, le=4096)]
    kernel_size: Annotated[int, Field(ge=1, le=IMAGE_SIDE)] = 3
    strides: Annotated[int, Field(ge=1, le=IMAGE_SIDE)] = 1
    padding: Literal["valid", "same"] = "valid"
    batch_norm: bool = False  # after the convolution's activation, as Deotte's nets
    pool: bool = False  # 2x2 max-pool
    dropout: Fraction = 0.0  # after the block


class ConvNetOptimizerParams(OptimizerParams):
    beta_1: Beta | None = None  # Adam's family only; None keeps Keras' default
    beta_2: Beta | None = None

    @model_validator(mode="after")
    def _betas_need_adam(self) -> "ConvNetOptimizerParams":
        if (self.beta_1 is not None or self.beta_2 is not None) and self.name not in ("adam", "adamw", "nadam"):
            raise ValueError(f"beta_1 and beta_2 are Adam's settings; optimizer {self.name!r} has none")
        return self


class PhotometricAugmentationParams(Section):
    """Random changes of the pixels' values, only while training (Keras layers after the affine jitter)."""

    invert_probability: Fraction = 0.0  # each image's ink inverted (1 - x) with this probability
    noise_sd: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0  # Gaussian noise on [0, 1] pixels
    # Random erasing (Zhong et al. 2017): a rectangle of 2-33% of the image replaced, with this probability,
    # by erase_fill, or by random pixel values (the paper's choice) when erase_fill is None. Both stay out
    # of the dumped settings while off, so the configurations measured before they existed keep their
    # params_hash, and with it their rows in the noise model.
    erase_probability: Fraction = Field(0.0, exclude_if=lambda value: value == 0.0)
    erase_fill: Annotated[float, Field(ge=0.0, le=1.0)] | None = Field(None, exclude_if=lambda value: value is None)


class KerasConvNetParams(KerasModelParams):
    type: Literal["keras_convnet"]
    optimizer: ConvNetOptimizerParams
    conv_layers: Annotated[list[ConvBlockParams], Field(min_length=1)]
    dense_units: list[Annotated[int, Field(ge=1, le=65536)]] = []
    schedule: ScheduleParams | None = None  # None: the optimizer's learning rate throughout
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    # Training steps per call into the compiled graph: fewer Python round trips for small nets.
    steps_per_execution: Annotated[int, Field(ge=1, le=1000)] = 1
    photometric: PhotometricAugmentationParams | None = None
    standardize_input: bool = False  # each image to zero mean, unit variance (LayerNormalization over it)

    @model_validator(mode="after")
    def _fits_28x28(self) -> "KerasConvNetParams":
        side = IMAGE_SIDE
        for index, block in enumerate(self.conv_layers):
            if block.padding == "valid":
                side = side - block.kernel_size + 1
            side = -(-side // block.strides) if side > 0 else side  # ceil, as Keras computes it
            if block.pool:
                side //= 2
            if side < 1:
                raise ValueError(
                    f"conv_layers[{index}] (kernel {block.kernel_size}, stride {block.strides}, {block.padding} "
                    f"padding{', pool' if block.pool else ''}) leaves no pixels of a 28x28 image"
                )
        return self


def build_convnet(params: KerasConvNetParams, name: str = "convnet") -> Any:
    from keras import layers

    from mnist_pipeline.models.quiet_keras import keras

    stack: list[Any] = [keras.Input((IMAGE_SIDE, IMAGE_SIDE, 1)), *augmentation_layers(params.augmentation, params.seed)]
    if params.photometric is not None:
        # After the affine jitter, so an inverted image's border (the jitter's zero fill) inverts with it,
        # and an erased patch with it.
        if params.photometric.erase_probability:
            probability, fill = params.photometric.erase_probability, params.photometric.erase_fill
            stack.append(layers.RandomErasing(factor=(probability, probability), fill_value=fill, value_range=(0, 1), seed=params.seed + 5))
        if params.photometric.invert_probability:
            stack.append(layers.RandomInvert(factor=(params.photometric.invert_probability,) * 2, value_range=(0, 1), seed=params.seed + 3))
        if params.photometric.noise_sd:
            stack.append(layers.GaussianNoise(params.photometric.noise_sd, seed=params.seed + 4))
    if params.standardize_input:
        stack.append(layers.LayerNormalization(axis=[1, 2, 3], center=False, scale=False, name="standardize_input"))
    for index, block in enumerate(params.conv_layers):
        size = (block.kernel_size, block.kernel_size)
        stack.append(layers.Conv2D(block.filters, size, strides=block.strides, padding=block.padding, activation=params.activation))
        if block.batch_norm:
            stack.append(layers.BatchNormalization())
        if block.pool:
            stack.append(layers.MaxPooling2D((2, 2)))
        if block.dropout:
            stack.append(layers.Dropout(block.dropout, seed=params.seed + 10 + index))
    stack.append(layers.Flatten())
    stack += classifier_head(params.dense_units, params)
    model = keras.Sequential(stack, name=name)
    return compile_classifier(model, params.optimizer, params.label_smoothing, params.steps_per_execution)


MODEL_TYPE = ModelType("keras_convnet", KerasConvNetParams, "keras", build_convnet, lambda params: "image")
