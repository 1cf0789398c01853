"""Which tolerance the gate gives each (model, metric).

A run is judged by what it is a draw of (the rules and their derivation: ``reporting.noise``):

1. ``SAME_SEED``: its params, seed included, are the baseline commit's (``ParamsHashes.run``
   equal), and the noise model measured this configuration's default seed under 2 or more numeric
   variants for the metric: judged against the baseline run, ``t(df) * s_num * sqrt(2)`` (df = V-1,
   plus one per other seed run under a paired variant);
2. ``ANOTHER_SEED``: the baseline's configuration with another seed, which the noise model
   measured: a fresh draw over seeds, judged against the measured mean, ``t(n-1) * s * sqrt(1+1/n)``;
3. ``OTHER_CONFIG``: its params changed (seed aside). Against the measured mean of the baseline's
   configuration when the noise model measured it (rule 2's formula), else against the baseline
   run, ``t(n-1) * s * sqrt(2)``;
4. ``UNMEASURED``: no measured spread for that model and metric: ``gate.rules[metric].tolerance``
   against the baseline run.

A run of the baseline's configuration and seed whose noise model has no same-seed measurement
(a schema-1 ``noise.json``, or a metric not yet measured under variants) gets rule 2, and its
``source`` says so. ``derive_tolerances`` is pure; ``tools/gate_simulation.py`` runs it on
simulated measurement campaigns and reruns to find the whole gate's false-alarm rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple

from pydantic import Field

from mnist_pipeline.models.base import params_hash
from mnist_pipeline.paths import Section
from mnist_pipeline.reporting import noise as noise_model

if TYPE_CHECKING:
    from pydantic import BaseModel

# The gate section's schema: the rules and settings the tolerances are derived from.
MetricName = Literal[
    "accuracy", "loss", "errors", "precision_macro", "recall_macro", "f1_macro",
    "corruption_mean",  # mean accuracy over the 15 MNIST-C-style corruptions
    "corruption_worst",  # accuracy under the worst of them
    "uci_accuracy",  # accuracy on scikit-learn's UCI digits, made MNIST-style
    "ece", "ece_corruption_mean",  # expected calibration error: lower is better
    "series0_accuracy", "series4_accuracy",
]


class MetricRule(Section):
    """Which way a metric improves, and the tolerance used for a model the noise model hasn't measured."""

    higher_is_better: bool
    tolerance: Annotated[float, Field(ge=0.0)]


class GateParams(Section):
    """The ``gate`` section of params.yaml."""

    # The committed metrics the gate compares with; `pipeline/gate.py --baseline-ref` overrides it.
    baseline_ref: str = "HEAD"
    # The chance that the whole gate fails when nothing regressed (all models, one run each):
    # each model's tolerance follows from it and its measured spread (reporting.noise).
    false_alarm_rate: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.01
    # The smallest tolerance: a deterministic model may still flip a few digits on another CPU.
    resolution: Annotated[float, Field(ge=0.0, le=0.1)] = 0.001
    rules: dict[MetricName, MetricRule]
    floors: dict[str, dict[MetricName, float]] = {}


SAME_SEED, ANOTHER_SEED, OTHER_CONFIG, UNMEASURED, DETERMINISTIC = (
    "same seed", "another seed", "other configuration", "unmeasured", "deterministic",
)


class ParamsHashes(NamedTuple):
    """A model's params hashes: ``config`` without its seed (what the noise model measured), ``run`` with it."""

    config: str
    run: str = ""  # "" when unknown

    @classmethod
    def of(cls, params: "BaseModel") -> "ParamsHashes":
        return cls(params_hash(params, without_seed=True), params_hash(params))


@dataclass(frozen=True)
class Tolerance:
    value: float
    source: str  # where the value came from, e.g. "same seed: 6 numeric variants, sd 0.0004, against the baseline run"
    note: str = ""  # a caveat worth reading, e.g. the noise was measured for other settings
    expected: float | None = None  # the measured mean, when that is the reference; None: the baseline run
    kind: str = ""  # SAME_SEED, ANOTHER_SEED, OTHER_CONFIG, UNMEASURED or DETERMINISTIC


def _hashes(value: "str | ParamsHashes | None") -> ParamsHashes | None:
    """A plain string is the seedless hash alone (the seed unknown)."""
    if value is None or isinstance(value, ParamsHashes):
        return value
    return ParamsHashes(str(value))


def per_check_alpha(gate: "GateParams", models: int) -> float:
    """Each check's false-alarm rate: the gate's, shared by ``models`` models' ruled metrics."""
    return noise_model.per_model_alpha(gate.false_alarm_rate, max(models, 1) * len(gate.rules))


def derive_tolerances(
    gate: "GateParams",
    noise: noise_model.NoiseModel | None,
    model_hashes: "Mapping[str, str | ParamsHashes]",
    baseline_hashes: "Mapping[str, str | ParamsHashes] | None" = None,
    models_in_question: int | None = None,
) -> dict[tuple[str, str], Tolerance]:
    """One tolerance (and, where it applies, the expected value) per (model, ruled metric).

    ``model_hashes`` maps each gated model to its params' hashes now, ``baseline_hashes`` to
    those at the baseline commit (``ParamsHashes``; a plain string is the seedless hash, and
    then a run is never taken for a rerun of the baseline's seed). The module docstring says
    which rule each combination gets.

    ``models_in_question``: how many models have a result that differs from the baseline's (see
    ``models_in_question``); the false-alarm rate is shared among their checks only, since a
    result identical to the baseline's is the baseline itself and cannot raise a false alarm.
    Default: every gated model.
    """
    baseline_hashes = baseline_hashes or {}
    alpha = per_check_alpha(gate, len(model_hashes) if models_in_question is None else models_in_question)
    tolerances: dict[tuple[str, str], Tolerance] = {}
    for model, hashes in model_hashes.items():
        now, base = _hashes(hashes), _hashes(baseline_hashes.get(model))
        same_run = bool(now.run) and base is not None and (now.config, now.run) == (base.config, base.run)
        for metric in gate.rules:
            measured = noise.get(model, metric) if noise is not None else None
            same = noise.get_same_seed(model, metric) if noise is not None else None
            if same_run and same is not None and same.n >= 2 and same.params_hash and same.params_hash == now.config:
                value = noise_model.same_seed_tolerance(same, alpha, gate.resolution)
                source = f"same seed: {same.describe()}, sd {same.sd:.4f}, against the baseline run"
                tolerances[(model, metric)] = Tolerance(value, source, kind=SAME_SEED)
            elif measured is None or not measured.measured_spread:
                tolerances[(model, metric)] = Tolerance(
                    gate.rules[metric].tolerance, "gate.rules default",
                    f"{model} has no noise measurement of {metric}; gate.rules.{metric}.tolerance applies", kind=UNMEASURED,
                )
            elif measured.deterministic:
                value = noise_model.tolerance(measured, alpha, gate.resolution)
                tolerances[(model, metric)] = Tolerance(value, "resolution (deterministic)", kind=DETERMINISTIC)
            else:
                tolerances[(model, metric)] = _over_seeds(model, measured, now, base, same_run, alpha, gate.resolution)
    return tolerances


def _over_seeds(
    model: str, measured: noise_model.ModelNoise, now: ParamsHashes, base: ParamsHashes | None, same_run: bool,
    alpha: float, resolution: float,
) -> Tolerance:
    """Rules 2 and 3: the spread over seeds, against their mean or against the baseline run."""
    spread = f"{measured.n} seeds, sd {measured.sd:.4f}"
    if measured.params_hash and base is not None and base.config == measured.params_hash:
        value = noise_model.tolerance(measured, alpha, resolution, against=noise_model.AGAINST_MEAN)
        if same_run:
            return Tolerance(value, f"same seed, not measured under variants: {spread}, against their mean", expected=measured.mean, kind=SAME_SEED)
        if now.config == base.config:
            return Tolerance(value, f"another seed: {spread}, against their mean", expected=measured.mean, kind=ANOTHER_SEED)
        return Tolerance(
            value, f"other configuration: {spread} of the baseline's, against their mean", expected=measured.mean, kind=OTHER_CONFIG
        )
    value = noise_model.tolerance(measured, alpha, resolution, against=noise_model.AGAINST_RUN)
    note = ""
    if measured.params_hash and base is not None and base.config != measured.params_hash:
        note = f"{model} at the baseline commit is not the configuration its noise was measured for; judged against that commit's run"
    elif measured.params_hash and measured.params_hash != now.config:
        note = f"{model}'s params differ from those its noise was measured with; the measured spread applies"
    return Tolerance(value, f"baseline configuration not measured: {spread}, against the baseline run", note, kind=OTHER_CONFIG)


def detectable_drop(tolerance: Tolerance, noise: noise_model.NoiseModel, model: str, metric: str, power: float = 0.8) -> float | None:
    """The drop one run reveals with probability ``power``: the tolerance plus z(power) sds of the compared difference.

    The compared difference is the new run minus its reference: numerics on both sides for the
    same-seed rule, a fresh seed against the measured mean (or against one run) otherwise. A normal
    approximation around the t-based tolerance. None where nothing was measured (rule 4).
    """
    from scipy.stats import norm

    if tolerance.kind == DETERMINISTIC:
        return tolerance.value  # every run gives the same result: any drop past the resolution is caught
    if tolerance.kind == UNMEASURED:
        return None
    same = noise.get_same_seed(model, metric)
    if tolerance.kind == SAME_SEED and tolerance.expected is None and same is not None:
        spread = noise_model.compared_sd(same.sd, same.n, noise_model.AGAINST_RUN)
    else:
        measured = noise.get(model, metric)
        against = noise_model.AGAINST_MEAN if tolerance.expected is not None else noise_model.AGAINST_RUN
        spread = noise_model.compared_sd(measured.sd, measured.n, against)
    return tolerance.value + float(norm.ppf(power)) * spread


def models_in_question(
    current: Mapping[str, Mapping[str, Any] | None], baseline: Mapping[str, Mapping[str, Any] | None]
) -> list[str]:
    """The models whose results could raise a false alarm: both runs present and not identical.

    DVC reruns only what changed, so after `dvc exp run -S models.cnn.epochs=1` every other
    model's metrics file is still the baseline's own, byte for byte. Only the models whose results
    differ are being tested, and the gate's false-alarm rate is shared among them. On another CPU
    every model reruns and differs, and all of them share it.
    """
    return [
        model for model in current
        if current.get(model) is not None and baseline.get(model) is not None and dict(current[model]) != dict(baseline[model])
    ]


def run_to_run_tolerance(gate: Any, noise: Any, model: str, metric: str) -> tuple[float, str] | None:
    """How far two independent trainings of ``model`` land apart on ``metric`` by chance, at the
    gate's false-alarm rate for one comparison (rule 3's formula), and where that came from; None
    where the noise model has not measured the spread (any metric a run records, gated or not)."""
    measured = noise.get(model, metric) if noise is not None else None
    if measured is None or not measured.measured_spread:
        return None
    alpha = noise_model.per_model_alpha(gate.false_alarm_rate, 1)
    value = noise_model.tolerance(measured, alpha, gate.resolution, against=noise_model.AGAINST_RUN)
    source = "deterministic: the resolution" if measured.deterministic else f"noise model, {measured.n} seeds, sd {measured.sd:.4f}"
    return value, source
