"""``type: ensemble``: a model made of trained models, averaging their calibrated probabilities.

An ensemble reads raw 0-255 pixels and hands each member the representation it was trained on,
so it takes what every model takes and can mix Keras and scikit-learn members. Its members are
models of ``models:`` in params.yaml; the ``ensembles:`` section names them (config.py checks).

With ``selection``, ``members`` are candidates, and the ensemble learns which of them to average,
and with what weights, on the validation sets only: Caruana et al.'s (2004) greedy forward
selection with replacement. Each round adds the candidate that most raises the objective (the
clean validation accuracy plus the mean accuracy over the validation corruptions) of the running
average of the candidates' calibrated validation probabilities (``evaluate@<m>`` writes them);
the best round's picks are kept, a candidate's weight being how often it was picked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field, PrivateAttr, computed_field, model_validator

from mnist_pipeline.data.preprocess import as_representation
from mnist_pipeline.models.registry import ModelType
from mnist_pipeline.paths import Section


class SelectionParams(Section):
    """Choose the members and their weights on the validation sets (greedy forward selection with replacement)."""

    rounds: Annotated[int, Field(ge=1, le=100)] = 10  # picks at most; the best round's picks are kept


class EnsembleParams(Section):
    type: Literal["ensemble"]
    # The trained models it averages; with `selection`, the candidates it chooses them from.
    members: Annotated[list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]], Field(min_length=2)]
    # One weight per member, in order; None: equal weights. Normalised to sum to one.
    weights: list[Annotated[float, Field(gt=0.0)]] | None = None
    selection: SelectionParams | None = None
    _members: dict[str, Any] = PrivateAttr(default_factory=dict)

    def resolve(self, models: Mapping[str, Any]) -> "EnsembleParams":
        """Learn the members' params (``models:``), which the ensemble's settings and seed include."""
        self._members = {name: models[name] for name in self.members if name in models}
        return self

    # Computed, so in every dump of its params (the params hash, config.json, MLflow): an ensemble is
    # another configuration when a member is, and a rerun of the same seed when its members are.
    @computed_field  # type: ignore[prop-decorator]
    @property
    def member_settings(self) -> dict[str, Any]:
        """Each member's params, its seed aside."""
        return {name: params.model_dump(mode="json", exclude={"seed"}) for name, params in self._members.items()}

    @computed_field  # type: ignore[prop-decorator]
    @property
    def seed(self) -> int | None:
        """The members' common seed (members without one aside); None if they differ."""
        seeds = {params.seed for params in self._members.values() if getattr(params, "seed", None) is not None}
        return seeds.pop() if len(seeds) == 1 else None

    @model_validator(mode="after")
    def _members_once_each(self) -> "EnsembleParams":
        repeated = sorted({name for name in self.members if self.members.count(name) > 1})
        if repeated:
            raise ValueError(f"members name {repeated} more than once; each member counts once (use weights to favour one)")
        if self.weights is not None and len(self.weights) != len(self.members):
            raise ValueError(f"weights has {len(self.weights)} values for {len(self.members)} members; give one per member")
        if self.weights is not None and self.selection is not None:
            raise ValueError("weights and selection exclude each other: selection chooses the weights on the validation sets")
        return self


@dataclass
class Member:
    """One trained model inside an ensemble: its saved config (``models.store``) and the loaded model."""

    name: str
    config: dict[str, Any]
    model: Any

    @property
    def representation(self) -> str:
        return self.config["input"]


@dataclass
class EnsembleModel:
    members: list[Member]
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        weights = np.asarray(self.weights, dtype=np.float64)
        if not weights.size:
            weights = np.ones(len(self.members))
        if len(weights) != len(self.members):
            raise ValueError(f"{len(weights)} weights for {len(self.members)} members")
        self.weights = weights / weights.sum() if weights.size else weights


def member_inputs(pixels: np.ndarray, representation: str) -> np.ndarray:
    """The ensemble's own input, 0-255 pixels (uint8, or floats from a client's [0, 1] pixels times 255), in one member's representation."""
    return as_representation(np.asarray(pixels), representation, floats_are_raw=True)


def selection_objective(summed: Mapping[str, np.ndarray], labels: np.ndarray) -> float:
    """Clean validation accuracy plus the mean accuracy over the validation corruptions, of summed probabilities per set."""
    accuracy = {name: float(np.mean(proba.argmax(axis=1) == labels)) for name, proba in summed.items()}
    corrupted = [value for name, value in accuracy.items() if name != "clean"]
    return accuracy["clean"] + (float(np.mean(corrupted)) if corrupted else 0.0)


def select_members(
    scores: Mapping[str, Mapping[str, np.ndarray]], labels: np.ndarray, rounds: int
) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Greedy forward selection with replacement over ``scores`` (candidate -> set -> calibrated
    validation probabilities, ``"clean"`` among the sets). Returns the kept picks (candidate ->
    times picked) and every round (what it added, the objective after it). Pure and deterministic:
    ties go to the candidate named first."""
    names = list(scores)
    sets = list(scores[names[0]])
    labels = np.asarray(labels)
    summed = {name: np.zeros_like(np.asarray(scores[names[0]][name], dtype=np.float64)) for name in sets}
    picks: dict[str, int] = {}
    best, kept, history = -np.inf, {}, []
    for number in range(1, rounds + 1):
        value, chosen = max(
            ((selection_objective({s: summed[s] + scores[c][s] for s in sets}, labels), c) for c in names),
            key=lambda option: (option[0], -names.index(option[1])),
        )
        for name in sets:
            summed[name] = summed[name] + scores[chosen][name]
        picks[chosen] = picks.get(chosen, 0) + 1
        history.append({"round": number, "added": chosen, "objective": value})
        if value > best + 1e-12:
            best, kept = value, dict(picks)
    return kept, history


def build_ensemble(params: EnsembleParams, name: str = "ensemble", members: list[Member] | None = None, weights: Any = None) -> EnsembleModel:
    """The ensemble of ``members`` (trained models, in the order params names them) with ``weights``
    (default: params' own, else equal); none: an empty one."""
    if not members:
        return EnsembleModel([])
    return EnsembleModel(members, np.asarray(params.weights or [] if weights is None else weights, dtype=np.float64))


MODEL_TYPE = ModelType(
    "ensemble", EnsembleParams, "ensemble", build_ensemble, lambda params: "pixels", members=lambda params: list(params.members)
)
