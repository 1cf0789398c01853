"""The measured noise model: how much a model's metrics move between runs, and why.

The model of a run
------------------
A run's metric is ``y = mu_config + s_seed + e``:

- ``s_seed ~ N(0, sigma_seed^2)`` is the training seed's own offset. It is fixed per seed and
  travels across machines: the same seed lands within ~0.1 points on two different CPUs, while
  seeds spread with sd 0.14-0.24 points (mlp's seed 0 sits 2.7 sd below its 20-seed mean on both);
- ``e ~ N(0, sigma_num^2)`` is the numerics noise (CPU kind, oneDNN, thread count, library
  build), fresh for every run.

``benchmarks/seed_spread.py`` measures both with the project's own code, appends one row per run
to ``noise/runs.jsonl`` and summarises them (``summarize``) into ``noise/noise.json``, which the
gate reads (``load``). Per model and metric:

- ``seeds``: n seeds under the default numerics (variant ``"default"``). Their mean estimates
  ``mu_config``, their sd ``s`` estimates ``sigma_total = sqrt(sigma_seed^2 + sigma_num^2)``;
- ``same_seed``: the default seed rerun under V numeric variants (``"default"``, ``"onednn-off"``,
  ``"threads-1"``, ...). Their sd ``s_num`` estimates ``sigma_num``. Where the other seeds were
  also run under a paired variant, ``s_num`` is pooled over all those seeds: the model's e does not
  depend on the seed, and each pair adds a degree of freedom (``df = V - 1 + pairs``), which
  narrows the same-seed tolerance far more than more seeds would.

Tolerances
----------
The gate fails on drops only (one-sided). For a false-alarm rate alpha of the whole gate over k
(model, metric) checks, each check gets alpha / k (Bonferroni, whatever the correlation). As the
sds are estimated, a standardised difference follows Student's t (a prediction interval). A run is
judged by what it is a draw of (``reporting.tolerances`` picks the case):

1. the baseline run's configuration and seed (CI reruns the committed params elsewhere): the two
   runs differ by ``e_now - e_base`` only, sd ``sigma_num * sqrt(2)`` (``same_seed_tolerance``)::

       t(1 - alpha/k, df) * s_num * sqrt(2)             against the baseline run (df = V - 1 unpooled)

2. another seed of the measured configuration: a fresh draw over seeds, whose deviation from the
   mean of n has sd ``sigma_total * sqrt(1 + 1/n)`` (``tolerance(..., against="mean")``)::

       t(1 - alpha/k, n - 1) * s * sqrt(1 + 1/n)        against the measured mean

3. only one run of the reference configuration is known (``against="run"``)::

       t(1 - alpha/k, n - 1) * s * sqrt(2)              against the baseline run

Judging a case-1 run by rule 2 spends the tolerance on the seed's own offset: mlp's seed 0 passed
by 0.02 points. With alpha = 1 % and k = 8: V = 6 gives 7.93 s_num; n = 20 gives 3.57 s (rule 2)
and 4.92 s (rule 3). A deterministic model (no seed) and a model whose variants are bit-identical
(s_num = 0) get ``resolution``, a few test digits; no tolerance is ever smaller.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnist_pipeline.errors import ArtifactError

SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)
SCHEMA_1_METRICS = ("accuracy", "loss")
SUMMARISED_METRICS = (
    "accuracy", "loss", "corruption_mean", "corruption_worst", "uci_accuracy", "ece", "ece_corruption_mean",
    "series0_accuracy", "series4_accuracy",
    # The validation sets' (what the champion rule reads), as seed_spread.py records them.
    "validation_accuracy", "validation_corruption_mean", "validation_corruption_worst", "validation_loss", "validation_ece",
    "validation_ece_corruption_mean",
)
DEFAULT_VARIANT = "default"
TABLE_METRICS = ("accuracy", "corruption_mean", "uci_accuracy")  # format_summary's columns, where measured


@dataclass(frozen=True)
class ModelNoise:
    """One model's measured spread of one metric over seeds (default numerics)."""

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
class SameSeedNoise:
    """One model's default seed rerun under ``n`` numeric variants: sd estimates sigma_num.

    Where other seeds were also run under a variant, sd is pooled over those seeds and the default
    seed (noise.json's ``pooled``), and each adds its runs less one to the degrees of freedom.
    """

    model: str
    metric: str
    seed: int | None
    n: int
    mean: float
    sd: float
    variants: tuple[str, ...]
    params_hash: str
    pooled_seeds: int = 0  # other seeds whose variants sd pools
    pooled_df: int = 0  # the degrees of freedom they add
    unpooled_sd: float | None = None  # the default seed's variants' own sd, where sd is pooled

    @property
    def df(self) -> int:
        return self.n - 1 + self.pooled_df

    def describe(self) -> str:
        """Where sd comes from, as the gate's tolerances name it."""
        if not self.pooled_seeds:
            return f"{self.n} numeric variants"
        return f"{self.n} numeric variants, pooled with {self.pooled_seeds} seeds' pairs ({self.df} df)"


@dataclass(frozen=True)
class NoiseModel:
    models: dict[str, dict[str, ModelNoise]]  # model -> metric -> spread over seeds
    source: str
    machine: dict[str, Any]
    same_seed: dict[str, dict[str, SameSeedNoise]] = field(default_factory=dict)  # model -> metric -> same-seed spread
    schema: int = SCHEMA_VERSION
    # model -> the test sets' digests its runs were scored on (null: before test sets); absent: not recorded
    testsets: dict[str, list[str | None]] = field(default_factory=dict)

    def get(self, model: str, metric: str) -> ModelNoise | None:
        return self.models.get(model, {}).get(metric)

    def get_same_seed(self, model: str, metric: str) -> SameSeedNoise | None:
        return self.same_seed.get(model, {}).get(metric)


# ---------------------------------------------------------------------------------------------
# summarising runs.jsonl


def summarize_values(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "median": statistics.median(values),
    }


def variant_of(row: Mapping[str, Any]) -> str:
    return row.get("variant") or DEFAULT_VARIANT


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _metric_values(runs: list[Mapping[str, Any]], metric: str, label: Callable[[Mapping[str, Any]], Any]) -> tuple[list[float], list[Any]]:
    """The metric's values in the runs that have it, and ``label`` of each of those runs."""
    present = [row for row in runs if _is_number(row.get(metric))]
    return [float(row[metric]) for row in present], [label(row) for row in present]


def _pooled(by_seed: Mapping[Any, list[float]]) -> dict[str, Any]:
    """The within-seed sd pooled over every seed run under 2 or more variants, and its degrees of freedom."""
    runs = {seed: values for seed, values in by_seed.items() if len(values) >= 2}
    squares = sum(sum((value - statistics.fmean(values)) ** 2 for value in values) for values in runs.values())
    df = sum(len(values) - 1 for values in runs.values())
    return {"sd": math.sqrt(squares / df), "df": df, "seeds": sorted(runs, key=lambda seed: -1 if seed is None else seed)}


def _same_seed(runs: list[Mapping[str, Any]], seed: int | None) -> dict[str, Any] | None:
    """The default seed's variants; and, where other seeds were also run under a variant, the
    numerics sd pooled over all those seeds (``pooled``): sigma_num is one number for every seed."""
    mine = sorted((row for row in runs if row["seed"] == seed), key=lambda row: (variant_of(row) != DEFAULT_VARIANT, variant_of(row)))
    if len(mine) < 2:
        return None
    metrics = {}
    for metric in SUMMARISED_METRICS:
        values, variants = _metric_values(mine, metric, variant_of)
        if values:
            stats = summarize_values(values)
            metrics[metric] = {"n": len(values), "mean": stats["mean"], "sd": stats["sd"], "values": values, "variants": variants}
            by_seed: dict[Any, list[float]] = {}
            for value, other in zip(*_metric_values(runs, metric, lambda row: row["seed"]), strict=True):
                by_seed.setdefault(other, []).append(value)
            if len(values) >= 2 and sum(len(found) >= 2 for found in by_seed.values()) >= 2:
                metrics[metric]["pooled"] = _pooled(by_seed)
    return {"seed": seed, "variants": [variant_of(row) for row in mine], "metrics": metrics}


def summarize(
    rows: Iterable[Mapping[str, Any]], current_hashes: Mapping[str, str], default_seeds: Mapping[str, int | None] | None = None,
) -> dict[str, Any]:
    """Per-model statistics (schema 2) of the runs whose params, seed aside, match ``current_hashes``.

    Rows measured with other settings are kept in the runs file but left out here, so a changed
    default never mixes two distributions. A row repeating (model, params_hash, seed, variant)
    replaces the earlier one: the last measurement wins. ``seeds``: per metric, over the
    default-numerics rows that have it. ``same_seed``: ``default_seeds[model]`` (params.yaml's
    seed; None for a deterministic model) over all its variants, when 2 or more were run.
    """
    latest: dict[tuple[str, Any, str], Mapping[str, Any]] = {}
    for row in rows:
        if current_hashes.get(row["model"]) == row["params_hash"]:
            latest[(row["model"], row["seed"], variant_of(row))] = row
    models: dict[str, Any] = {}
    for name in current_hashes:
        runs = [row for (model, _, _), row in latest.items() if model == name]
        if not runs:
            continue
        by_seed = sorted(
            (row for row in runs if variant_of(row) == DEFAULT_VARIANT), key=lambda row: -1 if row["seed"] is None else row["seed"]
        )
        seeds = {}
        for metric in SUMMARISED_METRICS:
            values, which = _metric_values(by_seed, metric, lambda row: row["seed"])
            if values:
                seeds[metric] = {"n": len(values), **summarize_values(values), "values": values, "seeds": which}
        entry: dict[str, Any] = {
            "type": runs[0]["type"],
            "params_hash": runs[0]["params_hash"],
            "deterministic": all(row["seed"] is None for row in runs),
            "fit_seconds_median": statistics.median(row["fit_seconds"] for row in runs),
            "fit_seconds": [row["fit_seconds"] for row in runs],  # every run of this configuration, variants included
            "machines": sorted({row["machine"]["cpu"] + f" ({row['machine']['cpu_count']} cores)" for row in runs}),
            # The test sets the runs were scored on (null: a run from before they existed, clean metrics only).
            "testsets": sorted({row.get("testsets") for row in runs}, key=lambda digest: (digest is not None, digest or "")),
            "seeds": seeds,
        }
        same = _same_seed(runs, default_seeds[name]) if default_seeds is not None and name in default_seeds else None
        if same is not None:
            entry["same_seed"] = same
        models[name] = entry
    return models


def format_summary(models: Mapping[str, Any]) -> str:
    """A Markdown table of ``summarize``'s models: per metric, mean ± sd over seeds (n) and the same-seed sd (V variants of
    the default seed, plus the other seeds run in pairs when pooled), in percent."""
    shown = [metric for metric in TABLE_METRICS if any(metric in entry.get("seeds", {}) for entry in models.values())]
    header = ["model"]
    for metric in shown:
        header += [f"{metric}: seeds, mean ± sd (n)", f"{metric}: same seed, sd (V + seeds paired)"]
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    for name, entry in models.items():
        cells = [f"`{name}`"]
        for metric in shown:
            seeds = entry.get("seeds", {}).get(metric)
            same = entry.get("same_seed", {}).get("metrics", {}).get(metric)
            cells.append("-" if seeds is None else f"{100 * seeds['mean']:.2f} ± {100 * seeds['sd']:.2f} ({seeds['n']})")
            if same is None or same["n"] < 2:
                cells.append("-")
            elif "pooled" in same:  # the sd the gate uses, pooled with the other seeds' pairs
                cells.append(f"{100 * same['pooled']['sd']:.2f} ({same['n']} + {len(same['pooled']['seeds']) - 1})")
            else:
                cells.append(f"{100 * same['sd']:.2f} ({same['n']})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# reading noise.json

FIX = "regenerate it with `python benchmarks/seed_spread.py`"


def _number(value: Any, where: str) -> float:
    if not _is_number(value):
        raise ArtifactError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArtifactError(f"{where}: expected a positive run count, got {value!r}; {FIX}")
    return value


def _stats(stats: Any, where: str, counted: bool = False) -> tuple[int, float, float]:
    """(n, mean, sd) of a statistics mapping, checked; n is 0 unless ``counted``."""
    if not isinstance(stats, dict):
        raise ArtifactError(f"{where}: expected {'n, ' if counted else ''}mean and sd; {FIX}")
    n = _count(stats.get("n"), f"{where}.n") if counted else 0
    sd = _number(stats.get("sd"), f"{where}.sd")
    if sd < 0:
        raise ArtifactError(f"{where}.sd: a standard deviation cannot be negative ({sd}); {FIX}")
    return n, _number(stats.get("mean"), f"{where}.mean"), sd


def _mapping(value: Any, where: str, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ArtifactError(f"{where}: expected a mapping of {what}; {FIX}")
    return value


def _parse_schema_1(name: str, entry: dict[str, Any], where: str, deterministic: bool, params: str) -> dict[str, ModelNoise]:
    n = _count(entry.get("n"), f"{where}.n")
    parsed = {}
    for metric in SCHEMA_1_METRICS:
        _, mean, sd = _stats(entry.get(metric), f"{where}.{metric}")
        parsed[metric] = ModelNoise(name, metric, n, mean, sd, deterministic, params)
    return parsed


def _parse_schema_2(
    name: str, entry: dict[str, Any], where: str, deterministic: bool, params: str
) -> tuple[dict[str, ModelNoise], dict[str, SameSeedNoise]]:
    seeds = {}
    for metric, stats in _mapping(entry.get("seeds"), f"{where}.seeds", "metric to statistics").items():
        n, mean, sd = _stats(stats, f"{where}.seeds.{metric}", counted=True)
        seeds[metric] = ModelNoise(name, metric, n, mean, sd, deterministic, params)
    same: dict[str, SameSeedNoise] = {}
    if "same_seed" not in entry:
        return seeds, same
    block = _mapping(entry["same_seed"], f"{where}.same_seed", "seed, variants and metrics")
    seed = block.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ArtifactError(f"{where}.same_seed.seed: expected a seed (an integer, or null), got {seed!r}; {FIX}")
    variants = block.get("variants")
    if not isinstance(variants, list) or len(variants) < 2 or not all(isinstance(v, str) for v in variants):
        raise ArtifactError(f"{where}.same_seed.variants: expected a list of 2 or more variant names, got {variants!r}; {FIX}")
    for metric, stats in _mapping(block.get("metrics"), f"{where}.same_seed.metrics", "metric to statistics").items():
        n, mean, sd = _stats(stats, f"{where}.same_seed.metrics.{metric}", counted=True)
        pooled_seeds = pooled_df = 0
        unpooled_sd = None
        if "pooled" in stats:
            unpooled_sd = sd
            pooled = _mapping(stats["pooled"], f"{where}.same_seed.metrics.{metric}.pooled", "sd, df and seeds")
            sd = _stats(pooled | {"mean": 0.0}, f"{where}.same_seed.metrics.{metric}.pooled")[2]
            df, pooled_over = pooled.get("df"), pooled.get("seeds")
            if (not isinstance(pooled_over, list) or seed not in pooled_over or isinstance(df, bool) or not isinstance(df, int)
                    or df < n - 1 + len(pooled_over) - 1):
                raise ArtifactError(
                    f"{where}.same_seed.metrics.{metric}.pooled: expected the seeds pooled (the default seed among them) and "
                    f"their degrees of freedom (at least {n - 1} + 1 per other seed), got {pooled!r}; {FIX}"
                )
            pooled_seeds, pooled_df = len(pooled_over) - 1, df - (n - 1)
        same[metric] = SameSeedNoise(name, metric, seed, n, mean, sd, tuple(variants), params, pooled_seeds, pooled_df, unpooled_sd)
    return seeds, same


def parse(payload: Any, source: str) -> NoiseModel:
    """Validate a ``noise.json`` payload (schema 1 or 2); anything malformed is an ``ArtifactError`` naming the key."""
    schema = payload.get("schema") if isinstance(payload, dict) else None
    if isinstance(schema, bool) or schema not in READABLE_SCHEMAS:
        raise ArtifactError(f"{source}: not a noise model of schema {' or '.join(map(str, READABLE_SCHEMAS))}; {FIX}")
    models = payload.get("models")
    if not isinstance(models, dict):
        raise ArtifactError(f"{source}: 'models' must be a mapping of model name to statistics; {FIX}")
    parsed: dict[str, dict[str, ModelNoise]] = {}
    same_seed: dict[str, dict[str, SameSeedNoise]] = {}
    testsets: dict[str, list[str | None]] = {}
    for name, entry in models.items():
        where = f"{source}: models.{name}"
        if not isinstance(entry, dict):
            raise ArtifactError(f"{where}: expected a mapping; {FIX}")
        deterministic = entry.get("deterministic")
        if not isinstance(deterministic, bool):
            raise ArtifactError(f"{where}.deterministic: expected true or false, got {deterministic!r}; {FIX}")
        params = str(entry.get("params_hash", ""))
        if "testsets" in entry:
            digests = entry["testsets"]
            if not isinstance(digests, list) or not all(digest is None or isinstance(digest, str) for digest in digests):
                raise ArtifactError(f"{where}.testsets: expected a list of digests (or null), got {digests!r}; {FIX}")
            testsets[name] = digests
        if schema == 1:
            parsed[name] = _parse_schema_1(name, entry, where, deterministic, params)
        else:
            parsed[name], same = _parse_schema_2(name, entry, where, deterministic, params)
            if same:
                same_seed[name] = same
    machine = payload.get("machine") if isinstance(payload.get("machine"), dict) else {}
    return NoiseModel(parsed, source, machine, same_seed, schema, testsets)


def stale_for(noise: NoiseModel, testsets_digest: str) -> str:
    """What of ``noise`` was not measured on the test sets whose digest is ``testsets_digest``; "" when all was."""
    if not noise.testsets:
        return (f"{noise.source} does not record the test sets it was measured on; rebuild it from its runs "
                "(`python benchmarks/seed_spread.py --summarize-only`)")
    other = sorted(name for name, digests in noise.testsets.items() if any(digest not in (None, testsets_digest) for digest in digests))
    if other:
        return (f"{noise.source}: {', '.join(other)} measured on other test sets than these ({testsets_digest}): their spread "
                "may not be this data's; remeasure them (`make noise`)")
    return ""


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


# ---------------------------------------------------------------------------------------------
# tolerances


def per_model_alpha(false_alarm_rate: float, models_checked: int) -> float:
    """Bonferroni: each of ``models_checked`` one-run comparisons gets an equal share of the rate."""
    return false_alarm_rate / max(models_checked, 1)


def critical_t(alpha: float, df: int) -> float:
    """The one-sided Student t quantile for a new run, sigma estimated with ``df`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(1.0 - alpha, df))


AGAINST_MEAN, AGAINST_RUN = "mean", "run"


def compared_sd(sd: float, runs: int, against: str) -> float:
    """The sd of a new run minus its reference, for runs of sd ``sd``: the mean of ``runs`` measured
    runs (``"mean"``), or one other run (``"run"``)."""
    return sd * (math.sqrt(1.0 + 1.0 / runs) if against == AGAINST_MEAN else math.sqrt(2.0))


def tolerance(noise: ModelNoise, alpha: float, resolution: float, against: str = AGAINST_RUN) -> float:
    """The largest drop below the reference that a fresh seed's run shows with probability at most ``alpha``.

    ``against``: ``"mean"`` when the reference is the measured mean of the noise model's runs
    (rule 2), ``"run"`` when it is one other run (rule 3; see the module docstring).
    """
    if against not in (AGAINST_MEAN, AGAINST_RUN):
        raise ValueError(f"against must be {AGAINST_MEAN!r} or {AGAINST_RUN!r}, got {against!r}")
    if noise.deterministic or noise.sd == 0.0:
        return resolution
    if noise.n < 2:
        raise ValueError(f"{noise.model}: a spread needs at least 2 runs, got {noise.n}")
    return max(critical_t(alpha, noise.n - 1) * compared_sd(noise.sd, noise.n, against), resolution)


def same_seed_tolerance(noise: SameSeedNoise, alpha: float, resolution: float) -> float:
    """Rule 1: the largest drop a rerun of the baseline run's configuration and seed shows with probability at most ``alpha``."""
    if noise.sd == 0.0:
        return resolution
    if noise.n < 2:
        raise ValueError(f"{noise.model}: a same-seed spread needs at least 2 variants, got {noise.n}")
    return max(critical_t(alpha, noise.df) * compared_sd(noise.sd, noise.n, AGAINST_RUN), resolution)
