"""The champion rule: a declared profile of constraints and an objective, all read on the validation sets.

``registry.profile`` in params.yaml says what the model people use must be. Every constraint must
hold; among the gate-passing models that meet them all, the objective picks the challenger, which
replaces the champion only when it gains on the objective beyond noise, or when the champion no
longer meets the profile. Only validation metrics can be named (``metrics/<m>.json``'s
``validation`` section): the test sets gate and report, and never choose.

A constraint is one of:

- ``at_least`` / ``at_most``: an absolute bound (say ECE after calibration at most 0.01);
- ``within_noise_of: best``: not worse than the best candidate's value beyond noise;
- ``within_noise_of: champion``: not worse than the current champion's beyond noise.

"Noise" is how far two independent trainings of the candidate land apart by chance, at the
gate's false-alarm rate, from the noise model's seed spread of that validation metric
(``reporting.tolerances.run_to_run_tolerance``); where the noise model has not measured it, the
constraint's ``tolerance``. Each verdict is MLflow's own: the constraint becomes a
``MetricThreshold`` with an absolute ``threshold`` and ``mlflow.validate_evaluation_results``
judges it. MLflow cannot express "no worse than a reference beyond a margin" itself (its
``min_absolute_change`` must be positive: "better by at least"), so for the relative constraints
the threshold is computed here (reference ∓ noise) and handed to MLflow as an absolute one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from mnist_pipeline.paths import Section

# The validation metrics a profile may name, and whether higher is better.
VALIDATION_METRICS = {
    "validation.accuracy": True,
    "validation.corruption_mean": True,
    "validation.corruption_worst": True,
    "validation.loss": False,
    "validation.ece": False,
    "validation.ece_corruption_mean": False,
}
ValidationMetric = Literal[tuple(VALIDATION_METRICS)]  # type: ignore[valid-type]


class Constraint(Section):
    metric: ValidationMetric
    at_least: float | None = None
    at_most: float | None = None
    within_noise_of: Literal["best", "champion"] | None = None
    # The noise where the noise model has not measured this metric for a model.
    tolerance: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0

    @model_validator(mode="after")
    def _one_kind(self) -> "Constraint":
        kinds = [name for name in ("at_least", "at_most", "within_noise_of") if getattr(self, name) is not None]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of at_least, at_most, within_noise_of (got {kinds or 'none'})")
        return self

    def describe(self) -> str:
        if self.at_least is not None:
            return f"{self.metric} >= {self.at_least:g}"
        if self.at_most is not None:
            return f"{self.metric} <= {self.at_most:g}"
        return f"{self.metric} within noise of the {self.within_noise_of}'s"


class ProfileParams(Section):
    """``registry.profile``: what the champion must be, judged on the validation sets."""

    objective: ValidationMetric = "validation.corruption_mean"  # among the models meeting every constraint, the best of this
    constraints: list[Constraint] = []


def validation_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The profile's metrics of one ``metrics/<m>.json``, as ``validation.<name>``: its validation section only."""
    section = metrics.get("validation") if isinstance(metrics, Mapping) else None
    if not isinstance(section, Mapping):
        return {}
    return {
        key: float(section[key.removeprefix("validation.")]) for key in VALIDATION_METRICS
        if isinstance(section.get(key.removeprefix("validation.")), (int, float))
    }


@dataclass(frozen=True)
class Check:
    constraint: str  # Constraint.describe()
    metric: str
    value: float | None
    threshold: float | None  # None: could not be judged (nothing to compare with), which passes
    passed: bool
    detail: str  # MLflow's message, or what the threshold came from


@dataclass
class Judgement:
    model: str
    objective: float | None
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.objective is not None and all(check.passed for check in self.checks)

    def record(self) -> dict[str, Any]:
        return {"objective": self.objective, "meets_profile": self.passed, "checks": [asdict(check) for check in self.checks]}


def _mlflow_verdict(metric: str, value: float, threshold: float) -> tuple[bool, str]:
    """MLflow's own check of ``value`` against an absolute ``threshold`` in the metric's direction."""
    import mlflow
    from mlflow.models import EvaluationResult, MetricThreshold

    failed = mlflow.models.evaluation.validation.ModelValidationFailedException  # loaded with mlflow.models

    rule = MetricThreshold(threshold=float(threshold), greater_is_better=VALIDATION_METRICS[metric])
    quiet = logging.getLogger("mlflow.models.evaluation.validation")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # it logs every check at INFO: the register stage logs the outcome itself
    try:
        mlflow.validate_evaluation_results({metric: rule}, EvaluationResult({metric: float(value)}, {}, run_id=""))
    except failed as exc:
        return False, exc.message
    finally:
        quiet.setLevel(level)
    return True, f"{metric} = {value:.4f} meets the threshold {threshold:.4f}"


# (model, metric as the noise model names it: "validation_accuracy") -> (noise, where it came from), or None if unmeasured
Tolerances = Callable[[str, str], "tuple[float, str] | None"]


def judge(
    profile: ProfileParams, candidates: Mapping[str, Mapping[str, float]], champion: tuple[str, Mapping[str, float]] | None,
    noise: Tolerances,
) -> dict[str, Judgement]:
    """Every candidate (model -> its ``validation_metrics``) against every constraint of ``profile``.

    ``champion``: (label, its validation metrics) of the current champion, for ``within_noise_of:
    champion``; None (or a metric it lacks) makes that constraint pass, saying why. ``noise``
    gives a model's noise for a metric and where it came from, or None where the noise model has
    not measured it (then the constraint's ``tolerance`` applies).
    """
    judgements = {}
    for model, metrics in candidates.items():
        judgement = Judgement(model, metrics.get(profile.objective))
        for constraint in profile.constraints:
            judgement.checks.append(_check(constraint, model, metrics, candidates, champion, noise))
        judgements[model] = judgement
    return judgements


def _check(
    constraint: Constraint, model: str, metrics: Mapping[str, float], candidates: Mapping[str, Mapping[str, float]],
    champion: tuple[str, Mapping[str, float]] | None, noise: Tolerances,
) -> Check:
    metric, described = constraint.metric, constraint.describe()
    value = metrics.get(metric)
    if value is None:
        return Check(described, metric, None, None, False, f"{model} has no {metric} (metrics/{model}.json lacks it)")
    higher = VALIDATION_METRICS[metric]
    if constraint.at_least is not None or constraint.at_most is not None:
        threshold = constraint.at_least if constraint.at_least is not None else constraint.at_most
        return Check(described, metric, value, threshold, *_mlflow_verdict(metric, value, threshold))
    if constraint.within_noise_of == "best":
        values = {name: found[metric] for name, found in candidates.items() if metric in found}
        reference_model = (max if higher else min)(values, key=lambda name: (values[name], name))
        reference, label = values[reference_model], f"the best candidate, {reference_model}"
    elif champion is None or metric not in champion[1]:
        why = "there is no champion yet" if champion is None else f"the champion ({champion[0]}) has no {metric} recorded"
        return Check(described, metric, value, None, True, f"not judged: {why}")
    else:
        reference, label = champion[1][metric], f"the champion, {champion[0]}"
    measured = noise(model, metric.replace(".", "_"))
    margin, source = measured or (constraint.tolerance, f"registry.profile's tolerance: the noise model has not measured {model}'s {metric}")
    threshold = reference - margin if higher else reference + margin
    passed, detail = _mlflow_verdict(metric, value, threshold)
    return Check(described, metric, value, threshold, passed, f"{detail} ({label}: {reference:.4f}, noise {margin:.4f}: {source})")


def challenger_of(judgements: Mapping[str, Judgement], objective: str) -> str | None:
    """The candidate meeting every constraint with the best objective (ties: the name first in order); None if none does."""
    passing = [judgement for judgement in judgements.values() if judgement.passed]
    if not passing:
        return None
    higher = VALIDATION_METRICS[objective]
    return max(passing, key=lambda j: (j.objective if higher else -j.objective, -list(judgements).index(j.model))).model
