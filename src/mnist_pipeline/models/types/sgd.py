"""``type: sgd``: scikit-learn's SGDClassifier, optionally behind a StandardScaler in one Pipeline."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from mnist_pipeline.models.base import InputScale, Seed, input_for_scale
from mnist_pipeline.models.registry import ModelType
from mnist_pipeline.paths import Section


class SGDParams(Section):
    type: Literal["sgd"]
    seed: Seed
    input: InputScale
    standardize: bool = False
    loss: Literal["hinge", "log_loss", "modified_huber", "squared_hinge", "perceptron"] = "hinge"
    alpha: Annotated[float, Field(gt=0.0, le=10.0)] = 1e-4
    max_iter: Annotated[int, Field(ge=1, le=10_000)] = 1000
    tol: Annotated[float, Field(gt=0.0)] | None = 1e-3
    early_stopping: bool = False
    validation_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.1
    n_iter_no_change: Annotated[int, Field(ge=1, le=1000)] = 5
    average: bool = False
    n_jobs: Annotated[int, Field(ge=-1, le=64)] = -1  # one-vs-rest classes fit in parallel

    @model_validator(mode="after")
    def _n_jobs_not_zero(self) -> "SGDParams":
        if self.n_jobs == 0:
            raise ValueError("n_jobs must be -1 (all cores) or a positive count, not 0")
        return self


def build_sgd(params: SGDParams, name: str = "sgd") -> Any:
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    classifier = SGDClassifier(
        loss=params.loss,
        alpha=params.alpha,
        max_iter=params.max_iter,
        tol=params.tol,
        early_stopping=params.early_stopping,
        validation_fraction=params.validation_fraction,
        n_iter_no_change=params.n_iter_no_change,
        average=params.average,
        n_jobs=params.n_jobs,
        random_state=params.seed,
    )
    if not params.standardize:
        return classifier
    return Pipeline([("scaler", StandardScaler()), ("sgd", classifier)])


MODEL_TYPE = ModelType(
    "sgd", SGDParams, "sklearn", build_sgd, lambda params: input_for_scale(params.input),
    trusted_types=frozenset({
        "sklearn.linear_model._stochastic_gradient.SGDClassifier",
        "sklearn.pipeline.Pipeline",
        "sklearn.preprocessing._data.StandardScaler",
    }),
)
