"""The one loader of ``params.yaml``: typed, validated, and handed out one section per stage.

Each section's schema lives beside the code that reads it:

| section | schema |
| --- | --- |
| ``paths`` | ``paths.PathsParams`` |
| ``data``, ``preprocess`` | ``data.params`` |
| ``testsets`` | ``data.testsets.TestsetsParams`` |
| ``valsets`` | ``data.valsets.ValsetsParams`` |
| ``models.<name>`` | the model type's module, ``models/types/<type>.py`` (``models.registry``) |
| ``ensembles.<name>`` | ``models.types.ensemble.EnsembleParams`` |
| ``recipes.<name>`` | as ``models.<name>`` (``mnist_pipeline.recipes``: trained on demand) |
| ``evaluate`` | ``evaluation.EvaluateParams`` |
| ``report`` | ``reporting.report.ReportParams`` |
| ``gate`` | ``reporting.tolerances.GateParams`` |
| ``registry`` | ``tracking.registry.RegistryParams`` |
| ``sweep`` | ``sweep.params.SweepParams`` (read by ``mnist-sweep`` only, no DVC stage) |

Every section forbids unknown keys, so a misspelled key is an error rather than a silently
ignored setting. ``load_params`` validates the whole file before any stage does work and turns
pydantic's report into one ``ConfigError`` whose lines name the key, the bad value and what is
allowed. The ``models`` entries are checked against every registered model type, so a new type
(one module in ``models/types/``) needs no change here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Union

from pydantic import Field, ValidationError, create_model, model_validator

from mnist_pipeline.data.params import DataParams, PreprocessParams
from mnist_pipeline.data.testsets import TestsetsParams
from mnist_pipeline.data.valsets import ValsetsParams
from mnist_pipeline.errors import ConfigError
from mnist_pipeline.evaluation import EvaluateParams
from mnist_pipeline.models import registry
from mnist_pipeline.models.types.ensemble import EnsembleParams
from mnist_pipeline.paths import PathsParams, Section
from mnist_pipeline.reporting.tolerances import GateParams
from mnist_pipeline.reporting.report import ReportParams
from mnist_pipeline.sweep.params import SweepParams
from mnist_pipeline.tracking.registry import RegistryParams
from mnist_pipeline.yaml_file import parse_yaml

DEFAULT_PARAMS_PATH = Path("params.yaml")
ModelName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]


class Params(Section):
    """All of params.yaml. ``models`` maps a model name to its type's params (see ``params_schema``).

    ``ensembles`` are models made of those (``dvc.yaml`` has one stage per ensemble, as DVC can't
    template a list of members into a stage's deps). ``scored`` is both: every model that is
    evaluated, reported, gated and registered.
    """

    paths: PathsParams
    data: DataParams
    preprocess: PreprocessParams
    testsets: TestsetsParams
    valsets: ValsetsParams
    models: Annotated[dict[ModelName, Any], Field(min_length=1)]
    ensembles: dict[ModelName, EnsembleParams] = {}
    # Models trained only on demand, as DVC experiments (mnist_pipeline.recipes); no stage reads them.
    recipes: dict[ModelName, Any] = {}
    evaluate: EvaluateParams
    report: ReportParams
    gate: GateParams
    registry: RegistryParams
    sweep: SweepParams

    @model_validator(mode="after")
    def _names_known(self) -> "Params":
        for name, ensemble in self.ensembles.items():
            if name in self.models:
                raise ValueError(f"ensembles.{name}: {name!r} is also a key of models; a name means one model")
            unknown = [member for member in ensemble.members if member not in self.models]
            if unknown:
                raise ValueError(
                    f"ensembles.{name}.members: {unknown} are not trained models; members must be keys of models: {sorted(self.models)}"
                )
            ensemble.resolve(self.models)
        fraction = self.preprocess.validation_fraction
        for section, models in (("models", self.models), ("recipes", self.recipes)):
            for name, model in models.items():
                held_out = getattr(model, "validation_split", 0.0)
                if 0 < held_out < fraction:
                    raise ValueError(
                        f"{section}.{name}.validation_split: {held_out} holds out fewer digits than the validation split "
                        f"(preprocess.validation_fraction {fraction}), so the model would fit on validation digits; "
                        f"use 0 (no per-epoch curves) or at least {fraction}"
                    )
        unknown = sorted(set(self.gate.floors) - set(self.scored))
        if unknown:
            raise ValueError(
                f"gate.floors names models that are not in models or ensembles: {unknown}; known models are {sorted(self.scored)}"
            )
        return self

    @property
    def scored(self) -> dict[str, Any]:
        """Every model that is evaluated, reported, gated and registered: the trained ones, then the ensembles."""
        return {**self.models, **self.ensembles}

    def model(self, name: str) -> Any:
        try:
            return self.scored[name]
        except KeyError:
            raise ConfigError(
                f"models.{name}: no such model in params.yaml; known models are {sorted(self.scored)}"
            ) from None


_schemas: dict[tuple[str, ...], type[Params]] = {}


def params_schema() -> type[Params]:
    """``Params`` whose ``models`` values are a union of every registered type's params, told apart by ``type``."""
    model_types = registry.types()
    key = tuple(sorted(model_types))
    if key not in _schemas:
        classes = tuple(model_types[name].params for name in key)
        union: Any = Annotated[Union[classes], Field(discriminator="type")] if len(classes) > 1 else classes[0]  # noqa: UP007
        _schemas[key] = create_model(
            "Params", __base__=Params, models=(Annotated[dict[ModelName, union], Field(min_length=1)], ...),
            recipes=(dict[ModelName, union], {}),
        )
    return _schemas[key]


def _describe(error: dict[str, Any]) -> str:
    loc = [str(part) for part in error["loc"]]
    # pydantic puts the union tag into the location (models.cnn.keras_cnn.epochs); users never wrote it.
    if len(loc) > 2 and loc[0] in ("models", "recipes") and loc[2] in registry.types():
        del loc[2]
    key = ".".join(loc) or "<top level>"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        return f"{key}: missing required key"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key (value {error['input']!r}); check the spelling"
    if isinstance(error["input"], (dict, list)):
        return f"{key}: {message}"
    return f"{key}: {message} (got {error['input']!r})"


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Validate an already-parsed mapping. Raises ``ConfigError`` listing every problem found."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    try:
        return params_schema().model_validate(raw)
    except ValidationError as exc:
        problems = "\n  ".join(_describe(error) for error in exc.errors(include_url=False))
        raise ConfigError(f"{source} is invalid:\n  {problems}") from None


def load_params(path: str | os.PathLike[str] = DEFAULT_PARAMS_PATH) -> Params:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found (run from the project root)") from None
    return parse_params(parse_yaml(text, str(path)), source=str(path))
