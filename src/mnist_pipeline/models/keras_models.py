"""Keras builders for the seed's networks. Keras is imported inside functions: only stages that
actually build or run a Keras model pay for importing TensorFlow."""

from __future__ import annotations

from typing import Any

from mnist_pipeline.config import (
    IMAGE_SIDE,
    NUM_CLASSES,
    AugmentationParams,
    KerasCNNParams,
    KerasMLPParams,
    OptimizerParams,
)


def _augmentation_layers(augmentation: AugmentationParams | None, seed: int) -> list[Any]:
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


def _compile(model: Any, optimizer: OptimizerParams) -> Any:
    model.compile(optimizer=make_optimizer(optimizer), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def _classifier_head(hidden_units: list[int], params: KerasMLPParams | KerasCNNParams) -> list[Any]:
    """Dense hidden layers (each followed by dropout, if any), then the 10-way softmax."""
    from keras import layers

    head: list[Any] = []
    for units in hidden_units:
        head.append(layers.Dense(units, activation=params.activation))
        if params.dropout:
            head.append(layers.Dropout(params.dropout, seed=params.seed))
    head.append(layers.Dense(NUM_CLASSES, activation="softmax"))
    return head


def build_mlp(params: KerasMLPParams, name: str = "mlp") -> Any:
    """Dense(256, relu) -> Dense(10, softmax) in the seed; deeper stacks and dropout by params."""
    import keras
    from keras import layers

    stack: list[Any] = [keras.Input((IMAGE_SIDE * IMAGE_SIDE,))]
    augment = _augmentation_layers(params.augmentation, params.seed)
    if augment:
        stack += [layers.Reshape((IMAGE_SIDE, IMAGE_SIDE, 1)), *augment, layers.Flatten()]
    stack += _classifier_head(params.hidden_units, params)
    return _compile(keras.Sequential(stack, name=name), params.optimizer)


def build_cnn(params: KerasCNNParams, name: str = "cnn") -> Any:
    """The seed's Conv2D/MaxPooling stack ('valid' padding), flattened into a Dense classifier."""
    import keras
    from keras import layers

    stack: list[Any] = [keras.Input((IMAGE_SIDE, IMAGE_SIDE, 1)), *_augmentation_layers(params.augmentation, params.seed)]
    for conv in params.conv_layers:
        stack.append(layers.Conv2D(conv.filters, (conv.kernel_size, conv.kernel_size), activation=params.activation))
        if conv.pool:
            stack.append(layers.MaxPooling2D((2, 2)))
    stack.append(layers.Flatten())
    stack += _classifier_head(params.dense_units, params)
    return _compile(keras.Sequential(stack, name=name), params.optimizer)


def parameter_counts(model: Any) -> dict[str, int]:
    import numpy as np

    trainable = int(sum(np.prod(weight.shape) for weight in model.trainable_weights))
    total = int(model.count_params())
    return {"total": total, "trainable": trainable, "non_trainable": total - trainable}


def summary_text(model: Any) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line), line_length=100)
    return "\n".join(lines) + "\n"
