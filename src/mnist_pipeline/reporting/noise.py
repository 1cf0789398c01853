"""The measured noise model: how much a model's test accuracy moves from one training seed to the next.

A seed is not a result. On another CPU, thread count or library build, the same seed lands
somewhere else in the same distribution, so the gate compares runs against that distribution's
spread, never against bit-exact reproduction. ``benchmarks/seed_spread.py`` trains every model
over many seeds with the project's own code, appends one row per run to ``noise/runs.jsonl`` and
summarises them into ``noise/noise.json`` (``summarize``), which the gate reads (``load``).

How a tolerance follows from the spread (``tolerance``)
-------------------------------------------------------
A run is one draw from its model's distribution of test accuracy over seeds (and machines),
with standard deviation sigma, estimated by the sample standard deviation ``s`` of the ``n``
measured seeds. The gate asks whether a run now is worse than the baseline's model, and there
are two ways to know what the baseline's model scores:

- ``against="mean"``: the noise model measured that very configuration (the usual case: the
  baseline commit runs the default params). Its expected score is the measured mean, and a new
  run's deviation from a mean of ``n`` runs has standard deviation sigma * sqrt(1 + 1/n);
- ``against="run"``: otherwise, the only reference is the baseline commit's own single run, and
  the difference of two runs has standard deviation sigma * sqrt(2).

Since sigma is estimated from ``n`` runs, the standardised deviation follows Student's t with
``n - 1`` degrees of freedom (a prediction interval), not a normal distribution: with 10 seeds, t
is noticeably wider than z. The gate fails on a drop only (one-sided). For a false-alarm rate
``alpha`` of the whole gate, over ``k`` models checked with one run each, each model gets
``alpha / k`` (Bonferroni, which holds whatever the correlation between models). So model ``m``'s
tolerance is

    tolerance_m = t_{1 - alpha/k, n_m - 1} * s_m * sqrt(1 + 1/n_m)    (against the mean)
    tolerance_m = t_{1 - alpha/k, n_m - 1} * s_m * sqrt(2)            (against one run)

With alpha = 1 %, k = 8 and 20 seeds: 3.57 s against the mean, 4.92 s against one run.

A deterministic model (no seed: GaussianNB) has s = 0. It still gets ``resolution``, a few test
digits, because a different CPU may sum floating-point numbers in another order and flip a
borderline digit. Every tolerance is at least ``resolution``.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_pipeline.errors import ArtifactError

SCHEMA_VERSION = 1
SUMMARISED_METRICS = ("accuracy", "loss")


@dataclass(frozen=True)
class ModelNoise:
    """One model's measured spread of one metric."""

    model: str
    metric: str
    n: int
    mean: float
    sd: float
    deterministic: bool
    params_hash: str  # the model's params without its seed, when measured

    @property
    def measured_spread(self) -> bool:
        return self.deterministic or self.n >= 2


@dataclass(frozen=True)
class NoiseModel:
    models: dict[str, dict[str, ModelNoise]]  # model -> metric -> noise
    source: str
    machine: dict[str, Any]

    def get(self, model: str, metric: str) -> ModelNoise | None:
        return self.models.get(model, {}).get(metric)


def summarize_values(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "median": statistics.median(values),
    }


def summarize(rows: Iterable[Mapping[str, Any]], current_hashes: Mapping[str, str]) -> dict[str, Any]:
    """Per-model statistics of the runs whose params (seed aside) match ``current_hashes``.

    Rows measured with other settings of a model are kept in the runs file but left out here, so
    a changed default never mixes two distributions.
    """
    by_model: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if current_hashes.get(row["model"]) == row["params_hash"]:
            by_model.setdefault(row["model"], []).append(row)
    models: dict[str, Any] = {}
    for name in current_hashes:
        runs = sorted(by_model.get(name, []), key=lambda row: row["seed"] if row["seed"] is not None else -1)
        if not runs:
            continue
        deterministic = runs[0]["seed"] is None
        entry: dict[str, Any] = {
            "type": runs[0]["type"],
            "params_hash": runs[0]["params_hash"],
            "deterministic": deterministic,
            "n": len(runs),
            "seeds": [row["seed"] for row in runs],
            "fit_seconds_median": statistics.median(row["fit_seconds"] for row in runs),
            "fit_seconds": [row["fit_seconds"] for row in runs],
            "machines": sorted({row["machine"]["cpu"] + f" ({row['machine']['cpu_count']} cores)" for row in runs}),
        }
        for metric in SUMMARISED_METRICS:
            values = [float(row[metric]) for row in runs]
            entry[metric] = {**summarize_values(values), "values": values}
        models[name] = entry
    return models


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ArtifactError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def parse(payload: Any, source: str) -> NoiseModel:
    """Validate a ``noise.json`` payload; anything malformed is an ``ArtifactError`` naming the key."""
    fix = "regenerate it with `python benchmarks/seed_spread.py`"
    if not isinstance(payload, dict) or payload.get("schema") != SCHEMA_VERSION:
        raise ArtifactError(f"{source}: not a noise model of schema {SCHEMA_VERSION}; {fix}")
    models = payload.get("models")
    if not isinstance(models, dict):
        raise ArtifactError(f"{source}: 'models' must be a mapping of model name to statistics; {fix}")
    parsed: dict[str, dict[str, ModelNoise]] = {}
    for name, entry in models.items():
        where = f"{source}: models.{name}"
        if not isinstance(entry, dict):
            raise ArtifactError(f"{where}: expected a mapping; {fix}")
        n = entry.get("n")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ArtifactError(f"{where}.n: expected a positive run count, got {n!r}; {fix}")
        deterministic = entry.get("deterministic")
        if not isinstance(deterministic, bool):
            raise ArtifactError(f"{where}.deterministic: expected true or false, got {deterministic!r}; {fix}")
        parsed[name] = {}
        for metric in SUMMARISED_METRICS:
            stats = entry.get(metric)
            if not isinstance(stats, dict):
                raise ArtifactError(f"{where}.{metric}: expected mean and sd; {fix}")
            sd = _number(stats.get("sd"), f"{where}.{metric}.sd")
            if sd < 0:
                raise ArtifactError(f"{where}.{metric}.sd: a standard deviation cannot be negative ({sd}); {fix}")
            parsed[name][metric] = ModelNoise(
                model=name,
                metric=metric,
                n=n,
                mean=_number(stats.get("mean"), f"{where}.{metric}.mean"),
                sd=sd,
                deterministic=deterministic,
                params_hash=str(entry.get("params_hash", "")),
            )
    machine = payload.get("machine") if isinstance(payload.get("machine"), dict) else {}
    return NoiseModel(parsed, source, machine)


def load(path: Path) -> NoiseModel:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArtifactError(
            f"{path}: noise model not found; the gate derives its tolerances from it "
            "(measure it with `python benchmarks/seed_spread.py`)"
        ) from None
    except OSError as exc:
        raise ArtifactError(f"{path}: noise model is not readable ({exc})") from None
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: noise model is not valid JSON ({exc})") from None
    return parse(payload, str(path))


def per_model_alpha(false_alarm_rate: float, models_checked: int) -> float:
    """Bonferroni: each of ``models_checked`` one-run comparisons gets an equal share of the rate."""
    return false_alarm_rate / max(models_checked, 1)


def critical_t(alpha: float, runs: int) -> float:
    """The one-sided Student t quantile for a new run, sigma estimated from ``runs`` runs."""
    from scipy.stats import t

    return float(t.ppf(1.0 - alpha, runs - 1))


AGAINST_MEAN, AGAINST_RUN = "mean", "run"


def tolerance(noise: ModelNoise, alpha: float, resolution: float, against: str = AGAINST_RUN) -> float:
    """The largest drop below the reference that a run of the same model shows with probability at most ``alpha``.

    ``against``: ``"mean"`` when the reference is the measured mean of the noise model's runs,
    ``"run"`` when it is one other run (see the module docstring).
    """
    if against not in (AGAINST_MEAN, AGAINST_RUN):
        raise ValueError(f"against must be {AGAINST_MEAN!r} or {AGAINST_RUN!r}, got {against!r}")
    if noise.deterministic or noise.sd == 0.0:
        return resolution
    if noise.n < 2:
        raise ValueError(f"{noise.model}: a spread needs at least 2 runs, got {noise.n}")
    spread = math.sqrt(1.0 + 1.0 / noise.n) if against == AGAINST_MEAN else math.sqrt(2.0)
    return max(critical_t(alpha, noise.n) * noise.sd * spread, resolution)
