"""``type: gaussian_nb``: scikit-learn's Gaussian naive Bayes, the seed homework's first baseline."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from mnist_pipeline.models.base import InputScale, input_for_scale
from mnist_pipeline.models.registry import ModelType
from mnist_pipeline.paths import Section


class GaussianNBParams(Section):
    type: Literal["gaussian_nb"]  # deterministic: no seed
    input: InputScale = "scaled"
    var_smoothing: Annotated[float, Field(gt=0.0, le=1.0)] = 1e-9


def build_gaussian_nb(params: GaussianNBParams, name: str = "gaussian_nb") -> Any:
    from sklearn.naive_bayes import GaussianNB

    return GaussianNB(var_smoothing=params.var_smoothing)


MODEL_TYPE = ModelType(
    "gaussian_nb", GaussianNBParams, "sklearn", build_gaussian_nb, lambda params: input_for_scale(params.input),
    trusted_types=frozenset({"sklearn.naive_bayes.GaussianNB"}),
)
