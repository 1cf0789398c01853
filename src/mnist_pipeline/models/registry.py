"""Model ``type`` -> how to build it, what input it eats, and how to save, load and count it.

Adding a model of an existing type is a params.yaml entry; adding a type is one ``ModelKind``
here plus its params class in ``config.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from mnist_pipeline.config import GaussianNBParams, ModelParams, SGDParams
from mnist_pipeline.models import keras_models, sklearn_models

Framework = Literal["keras", "sklearn"]


@dataclass(frozen=True)
class ModelKind:
    framework: Framework
    build: Callable[[Any, str], Any]
    representation: Callable[[Any], str]  # which processed array the model reads


def _sklearn_input(params: GaussianNBParams | SGDParams) -> str:
    return "pixels" if params.input == "raw" else "flat"


REGISTRY: dict[str, ModelKind] = {
    "keras_mlp": ModelKind("keras", keras_models.build_mlp, lambda params: "flat"),
    "keras_cnn": ModelKind("keras", keras_models.build_cnn, lambda params: "image"),
    "gaussian_nb": ModelKind("sklearn", lambda params, name: sklearn_models.build_gaussian_nb(params), _sklearn_input),
    "sgd": ModelKind("sklearn", lambda params, name: sklearn_models.build_sgd(params), _sklearn_input),
}


def kind_of(params: ModelParams) -> ModelKind:
    return REGISTRY[params.type]


def build(params: ModelParams, name: str) -> Any:
    return kind_of(params).build(params, name)


def input_representation(params: ModelParams) -> str:
    return kind_of(params).representation(params)


def parameter_counts(params: ModelParams, model: Any) -> dict[str, int]:
    if kind_of(params).framework == "keras":
        return keras_models.parameter_counts(model)
    return sklearn_models.parameter_counts(model)

