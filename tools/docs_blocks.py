"""The documentation's measured tables and its pipeline picture, generated so they cannot go stale.

Each block sits between ``<!-- begin: NAME -->`` and ``<!-- end: NAME -->`` in README.md or a page
under docs/ (a name may appear in more than one file) and is made from files in the repository,
never typed by hand:

- ``pipeline``: the pipeline as a Mermaid flowchart (``pipeline_picture.py``), made from ``dvc dag
  --mermaid``: each ``foreach`` stage (``train@<model>``, ``evaluate@<model>``) is one node, and
  an edge that another path already implies is left out (a transitive reduction). The same graph
  is drawn as ``docs/assets/pipeline.svg`` for the documentation site, which must work offline;
- ``noise``: the noise model (``noise/noise.json``): per model and gated metric, mean ± sd over
  seeds and the same-seed sd over numeric variants (``reporting.noise.format_summary``);
- ``lead-table``: the committed run's models x (MNIST test, corruption mean, worst corruption, UCI
  digits, series error ratio, ECE), the champion and the unbeaten models marked (``reports/summary.json``);
- ``validation-table``: the committed run's models on the validation sets (``reports/summary.json``);
- ``champion-profile``: the committed run's champion decision and each candidate's checks (``reports/registry.json``);
- ``robust-tuning``, ``robust-tuning-by-corruption``: the candidates `robust` was chosen from on the
  validation sets, and what each scored on every test corruption afterwards (``benchmarks/results/robust_tuning.json``);
- ``seeds-by-set``: models x the gated test sets, mean ± sd over seeds (``reporting.report.seeds_table``);
- ``this-run-by-set``: the committed run's models x test sets table (``reports/summary.json``);
- ``bench-goals``: every benchmark's figures beside their goals, and ``stage-time``: where the
  from-scratch pipeline's time goes, stage by stage, and ``ci-time``: `.ci/run`'s steps on a clean clone
  (``benchmarks/results/*.json``, ``bench_docs.py``);
- ``bench-testsets``: what making the test sets and scoring every model on them cost
  (``benchmarks/results/testsets.json`` and ``evaluation.json``, written by their benchmarks);
- ``fast-tuning``: the candidates `fast` was chosen from, on the validation split (``benchmarks/results/fast_tuning.json``);
- ``beyond-seed``: the models beyond the seed's, mean ± sd over seeds beside their fit time as a
  ratio to the seed CNN's, measured side by side (``benchmarks/results/training.json``), and each
  ensemble against its best member (``noise/noise.json``);
- ``best-recipe``: the best recipe's runs, seed by seed (``benchmarks/results/best.json``, by
  ``benchmarks/best_recipe.py``; until it has one, a line saying so);
- ``gate-power``: each gated (model, metric)'s tolerance and the drop it catches 80% of the time (``noise/noise.json``);
- ``gate-simulation``: the gate's simulated false alarms and power (``tools/gate_simulation.py``, seeded);
- ``numerics-spread``: how far the numeric variants move a model's default seed (``noise/noise.json``);
- ``seed-zero``: how far the MLP's default seed sits from its mean over seeds (``noise/noise.json``);
- ``sgd-scaled``: StandardScaler + SGD's fit time and accuracy in the committed run (``reports/summary.json``).

``python tools/docs_blocks.py`` rewrites them in every file, and the picture;
``tests/test_readme.py`` and ``tests/test_docs.py`` fail when a file disagrees with its sources. A
missing source file is an error, never a block left as it was.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
from collections.abc import Callable, Iterable
from functools import cached_property
from pathlib import Path

import pandas as pd
from scipy import stats

from bench_docs import (
    bench_goals,
    bench_testsets,
    best_recipe,
    ci_time,
    fast_tuning,
    robust_tuning,
    robust_tuning_by_corruption,
    serving,
    stage_time,
)
from gate_simulation import SIMULATED_GATES, SIMULATED_RATE, measured_models, simulate_gates
from pipeline_picture import dvc_dag, pipeline_mermaid, pipeline_svg

from mnist_pipeline.config import load_params
from mnist_pipeline.models.base import params_hash
from mnist_pipeline.reporting import noise
from mnist_pipeline.reporting.tables import LEAD_NOTE, ModelRow, lead_table, seeds_table, sets_table, validation_table
from mnist_pipeline.reporting.tolerances import ParamsHashes, derive_tolerances, detectable_drop, per_check_alpha
from mnist_pipeline.stage import configure_logging

log = logging.getLogger(__name__)

BLOCK = re.compile(r"(<!-- begin: (?P<name>[a-z-]+) -->\n)(?P<body>.*?)(<!-- end: (?P=name) -->)", re.DOTALL)
# The pipeline picture of the documentation site.
PICTURE = Path("docs") / "assets" / "pipeline.svg"


class Sources:
    """The results files under ``root``, each read on first use: a block reads only what it needs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.results = root / "benchmarks" / "results"

    @cached_property
    def params(self):
        return load_params(self.root / "params.yaml")

    @cached_property
    def models(self) -> list[str]:
        return list(self.params.scored)

    @cached_property
    def noise_payload(self) -> dict:
        return json.loads((self.root / self.params.paths.noise_model).read_text(encoding="utf-8"))

    @cached_property
    def measured(self) -> noise.NoiseModel:
        return noise.parse(self.noise_payload, str(self.params.paths.noise_model))

    @cached_property
    def hashes(self) -> dict[str, str]:
        return {name: params_hash(model, without_seed=True) for name, model in self.params.scored.items()}

    @cached_property
    def summary(self) -> dict:
        return json.loads((self.root / self.params.paths.report_file("summary.json")).read_text(encoding="utf-8"))

    @cached_property
    def rows(self) -> list[ModelRow]:
        return [ModelRow(**row) for row in self.summary["models"]]

    @cached_property
    def registry(self) -> dict:
        return json.loads((self.root / self.params.paths.report_file("registry.json")).read_text(encoding="utf-8"))


GENERATORS: dict[str, Callable[[Sources], str]] = {
    "pipeline": lambda s: pipeline_mermaid(dvc_dag(s.root)),
    "noise": lambda s: noise.format_summary(
        {name: s.noise_payload["models"][name] for name in s.models if name in s.noise_payload["models"]}),
    "lead-table": lambda s: LEAD_NOTE + "\n\n" + lead_table(s.rows, s.summary.get("champion")) + "\n",
    "validation-table": lambda s: validation_table(s.rows) + "\n",
    "champion-profile": lambda s: champion_profile(s.registry),
    "robust-tuning": lambda s: robust_tuning(s.results),
    "robust-tuning-by-corruption": lambda s: robust_tuning_by_corruption(s.results),
    "seeds-by-set": lambda s: seeds_table(s.models, s.hashes, s.measured) or "(not measured yet)\n",
    "this-run-by-set": lambda s: sets_table(s.rows) + "\n",
    "bench-goals": lambda s: bench_goals(s.results),
    "stage-time": lambda s: stage_time(s.results),
    "ci-time": lambda s: ci_time(s.results),
    "bench-testsets": lambda s: bench_testsets(s.results),
    "serving": lambda s: serving(s.results),
    "fast-tuning": lambda s: fast_tuning(s.results),
    "best-recipe": lambda s: best_recipe(s.results),
    "beyond-seed": lambda s: beyond_seed(s.params, s.measured, s.hashes, s.rows, s.results),
    "gate-simulation": lambda s: gate_simulation(s.params, s.measured),
    "numerics-spread": lambda s: numerics_spread(s.measured),
    "gate-power": lambda s: gate_power(s.params, s.measured),
    "seed-zero": lambda s: seed_zero(s.measured),
    "sgd-scaled": lambda s: sgd_scaled(s.rows),
}


def blocks(root: Path, names: Iterable[str] | None = None) -> dict[str, str]:
    """The generated blocks ``names`` (default: every one), from the files under ``root``.

    A name without a generator is left out here and refused by ``render``.
    """
    sources = Sources(root)
    wanted = GENERATORS if names is None else [name for name in dict.fromkeys(names) if name in GENERATORS]
    return {name: GENERATORS[name](sources) for name in wanted}


def documents(root: Path) -> list[Path]:
    """Every file that may hold blocks: README.md and each page of the documentation site."""
    return [root / "README.md", *sorted((root / "docs").glob("**/*.md"))]


def block_names(text: str) -> list[str]:
    return [match.group("name") for match in BLOCK.finditer(text)]


def champion_profile(registry: dict) -> str:
    """The committed run's champion decision, and each candidate's verdict on every constraint of the profile."""
    profile = registry.get("profile") or {}
    rows = []
    for model, judged in (registry.get("candidates") or {}).items():
        checks = ["pass" if check["passed"] else "**fail**" for check in judged["checks"]]
        objective = judged["objective"]
        rows.append([f"`{model}`", *checks, "-" if objective is None else f"{100 * objective:.2f}", "yes" if judged["meets_profile"] else "no"])
    constraints = [_constraint_label(constraint) for constraint in profile.get("constraints", [])]
    frame = pd.DataFrame(rows, columns=["candidate", *constraints, f"objective: {profile.get('objective')}, %", "meets the profile"])
    return (f"The committed run's decision (`reports/registry.json`): {registry.get('decision')}.\n\n"
            + frame.to_markdown(index=False, disable_numparse=True) + "\n")


def _constraint_label(constraint: dict) -> str:
    if constraint.get("at_least") is not None:
        return f"{constraint['metric']} ≥ {constraint['at_least']:g}"
    if constraint.get("at_most") is not None:
        return f"{constraint['metric']} ≤ {constraint['at_most']:g}"
    return f"{constraint['metric']} within noise of the {constraint['within_noise_of']}'s"


def gate_simulation(params, measured: noise.NoiseModel) -> str:
    """The simulated gates' false alarms and power under the committed noise model, as tests/test_gate_simulation.py runs them (seeded)."""
    models = measured_models(measured, params.models, params.gate.rules)

    def simulate(chosen=models, **rules):
        return simulate_gates(chosen, SIMULATED_RATE, SIMULATED_GATES, resolution=params.gate.resolution, **rules)

    def rate(**rules) -> float:
        return simulate(**rules).gate_failure_rate

    cnn = "cnn:accuracy"
    caught = simulate(dict(models, **{cnn: dataclasses.replace(models[cnn], drop=0.01)})).model_failure_rates[cnn]
    return (
        f"`tests/test_gate_simulation.py` simulates {SIMULATED_GATES:,} gates of the {len(models)} (model, metric) checks "
        f"that the committed noise model measured over seeds and under numeric variants, each spread as measured "
        f"(`noise/noise.json`, {_machine(measured)}) and each default seed 3 sd (of its seeds) below its mean: the same-seed rule "
        f"raises a false alarm in {rate():.2%} of them ({rate(default_seed_measured=False):.2%} when the default seed is not "
        f"among those measured; stated rate: {SIMULATED_RATE:.0%}), judging against the mean in "
        f"{rate(same_seed_measured=False):.2%} ({rate(same_seed_measured=False, default_seed_measured=False):.1%}). "
        f"A 1-point drop of the cnn's accuracy fails it {caught:.1%} of the time.\n"
    )


POWER = 0.8
# Issue 23's goals for a rerun of the committed cnn, in points: tolerance at most this.
POWER_GOALS = {("cnn", "accuracy"): 0.5, ("cnn", "corruption_mean"): 2.0}


def gate_power(params, measured: noise.NoiseModel) -> str:
    """Each gated (model, metric) for a rerun of the committed params: its rule, tolerance, false alarms and detectable drop."""
    hashes = {name: ParamsHashes.of(model) for name, model in params.scored.items()}
    tolerances = derive_tolerances(params.gate, measured, hashes, hashes)
    alpha = per_check_alpha(params.gate, len(hashes))
    rows, goals = [], []
    for (model, metric), found in tolerances.items():
        drop = detectable_drop(found, measured, model, metric, POWER)
        rows.append([f"`{model}`", metric, f"{100 * found.value:.2f}", "-" if drop is None else f"{100 * drop:.2f}", found.source])
        goal = POWER_GOALS.get((model, metric))
        if goal is not None:
            same = measured.get_same_seed(model, metric)
            # However many runs measure s_num, the tolerance stays above z * s_num * sqrt(2).
            floor = stats.norm.ppf(1.0 - alpha) * noise.compared_sd(same.sd, same.n, noise.AGAINST_RUN)
            goals.append(f"`{model}` {metric}: tolerance {100 * found.value:.2f} points, goal ≤ {goal:g}: "
                         + ("met" if 100 * found.value <= goal else "**not met**")
                         + f" (with its sd known exactly, {100 * floor:.2f})")
    frame = pd.DataFrame(rows, columns=["model", "metric", "tolerance, points", f"drop caught {POWER:.0%} of the time, points",
                                        "rule, and the spread it rests on (sd as a fraction)"])
    return (f"A rerun of the committed params (what `.ci/run` and a code-only change are), under the committed noise "
            f"model (`noise/noise.json`, {_machine(measured)}): each check's false-alarm rate is {alpha:.3%} "
            f"({params.gate.false_alarm_rate:.0%} for the whole gate, shared by {len(rows)} checks). A drop of the last "
            f"column's size fails the gate {POWER:.0%} of the time (one run; normal approximation); a smaller one "
            "mostly passes.\n\n" + frame.to_markdown(index=False, disable_numparse=True,
                                                      colalign=["left", "left", "right", "right", "left"])
            + "\n\n" + "; ".join(goals) + ".\n\n" + _t_quantiles(alpha, measured.get_same_seed("cnn", "accuracy")))


def _t_quantiles(alpha: float, cnn) -> str:
    """The critical values behind the same-seed tolerances: how much of them is the sd's own uncertainty."""
    few, pooled = noise.critical_t(alpha, 5), noise.critical_t(alpha, cnn.df)
    return (f"At {alpha:.3%} per check, Student's t is {few:.1f} with 5 degrees of freedom (seed 0's 6 variants alone), "
            f"{pooled:.1f} with the cnn's {cnn.df}, and {stats.norm.ppf(1.0 - alpha):.1f} for a spread known exactly.\n")


def numerics_spread(measured: noise.NoiseModel) -> str:
    """How far the numeric variants move the default seed: the CNN beside its seeds, and the widest UCI spread."""
    cnn_same, cnn_seeds = measured.get_same_seed("cnn", "accuracy"), measured.get("cnn", "accuracy")
    uci = [found for model in measured.same_seed if (found := measured.get_same_seed(model, "uci_accuracy")) and found.n >= 2]
    widest = max(uci, key=lambda found: found.sd)
    text = (
        f"The measured numerics are not small everywhere (`noise/noise.json`, {_machine(measured)}; sd in points): "
        f"oneDNN and thread settings move a CNN run of one seed by {100 * cnn_same.sd:.2f} "
        f"({cnn_same.describe()}), against {100 * cnn_seeds.sd:.2f} from one seed to the next ({cnn_seeds.n} seeds), "
        f"and the UCI digits (1,797 of them) by up to {100 * widest.sd:.2f} (`{widest.model}`), so those same-seed tolerances are wide.\n"
    )
    if cnn_same.unpooled_sd is None:
        return text
    # Pooling assumes one sigma_num for every seed: seed 0's variants and the other seeds' pairs should agree.
    own_df = cnn_same.n - 1
    pairs_variance = (cnn_same.sd**2 * cnn_same.df - cnn_same.unpooled_sd**2 * own_df) / cnn_same.pooled_df
    ratio = cnn_same.unpooled_sd**2 / pairs_variance
    p_value = 2 * min(stats.f.cdf(ratio, own_df, cnn_same.pooled_df), stats.f.sf(ratio, own_df, cnn_same.pooled_df))
    return text + (
        f"Pooling assumes one numerics spread for every seed: the CNN's seed {cnn_same.seed} under its {cnn_same.n} variants "
        f"gives {100 * cnn_same.unpooled_sd:.2f}, its other {cnn_same.pooled_seeds} seeds' pairs {100 * pairs_variance**0.5:.2f} "
        f"(F test of equal variances: p = {min(p_value, 1.0):.2f}).\n"
    )


def seed_zero(measured: noise.NoiseModel) -> str:
    """How far the MLP's default seed, rerun under the numeric variants, sits from its mean over seeds."""
    same, seeds = measured.get_same_seed("mlp", "accuracy"), measured.get("mlp", "accuracy")
    offset = (same.mean - seeds.mean) / seeds.sd
    side = "below" if offset < 0 else "above"
    return (f"Under the committed noise model (`noise/noise.json`, {_machine(measured)}), the MLP's seed {same.seed} "
            f"({100 * same.mean:.2f}, mean of {same.n} numeric variants) sits {abs(offset):.1f} sd {side} its mean over "
            f"{seeds.n} seeds ({100 * seeds.mean:.2f} ± {100 * seeds.sd:.2f}).\n")


def sgd_scaled(rows: list[ModelRow]) -> str:
    """StandardScaler + SGD with the project's early stopping, in the committed run."""
    row = next(row for row in rows if row.model == "sgd_scaled")
    return (f"With these settings it fits in {row.fit_seconds:.1f} s and reaches {100 * row.accuracy:.2f}% "
            "(`sgd_scaled` in the committed run, `reports/summary.json`).\n")


def _machine(measured: noise.NoiseModel) -> str:
    machine = measured.machine
    return f"{machine.get('cpu', 'CPU not recorded')}, {machine.get('cpu_count', '?')} cores"


def beyond_seed(params, measured, hashes: dict[str, str], rows: list[ModelRow], results: Path) -> str:
    """Accuracy over seeds beside fit time against the seed CNN's; then each ensemble against its best member."""

    bench = json.loads((results / "training.json").read_text(encoding="utf-8"))
    fits = bench["models"]
    parameters = {row.model: row.parameters for row in rows}

    def spread(model: str, metric: str):
        found = measured.get(model, metric)
        return found if found is not None and found.params_hash == hashes.get(model) and found.n >= 2 else None

    def accuracy(model: str) -> str:
        found = spread(model, "accuracy")
        return f"{100 * found.mean:.2f} ± {100 * found.sd:.2f} ({found.n})" if found else "-"

    def cost(model: str) -> tuple[float, float] | None:
        """(fit seconds, ratio to the seed CNN's fit measured beside it); an ensemble's: its members' summed."""
        if model in params.ensembles:  # what it costs from nothing: its members' fits
            members = [cost(member) for member in params.ensembles[model].members]
            return None if None in members else (sum(m[0] for m in members), sum(m[1] for m in members))
        entry = fits.get(model)
        return None if entry is None or entry["recipe"] else (entry["fit_seconds"]["median"], entry["ratio_to_seed_cnn"])

    table = []
    for model in [*params.scored, *(name for name in fits if fits[name]["recipe"])]:
        if model in fits and fits[model]["recipe"]:
            entry = fits[model]
            epochs = params.recipes[model].epochs
            projected = entry["seconds_per_epoch"] * epochs
            table.append([f"`{model}` (recipe)", "-", "-", f"{entry['seconds_per_epoch']:.1f} s/epoch; {epochs} epochs: ~{projected / 60:.0f} min",
                          f"~{entry['ratio_to_seed_cnn'] * epochs:.0f}x"])
        elif (found := cost(model)) is not None:
            seconds, ratio = found
            share = f"{ratio:.3f} (1/{1 / ratio:.1f})" if ratio < 1 else f"{ratio:.2f}x"
            table.append([f"`{model}`", f"{parameters.get(model, 0):,}", accuracy(model), f"{seconds:.1f}", share])
    frame = pd.DataFrame(table, columns=["model", "parameters", "MNIST test, % (seeds)", "fit, s (median)", "fit / seed CNN's"])
    machine = bench["machine"]
    references = ", ".join(f"`{name}` {entry['seed_cnn_fit_seconds']['median']:.1f} s ({entry['repeats']} runs, {entry['measured_utc'][:10]})"
                           for name, entry in fits.items())
    lines = [
        frame.to_markdown(index=False, colalign=["left", "right", "right", "right", "right"], disable_numparse=True),
        "",
        f"Fit times on one {machine['cpu']} ({machine['cpu_count']} cores): each model's median over runs alternating with the "
        f"seed's own CNN code (`benchmarks/bench_training.py --fit-ratio`), whose fit took, beside each: {references}. "
        "An ensemble's is its members' together; a recipe's is projected from its time per epoch.",
    ]
    for name, ensemble in params.ensembles.items():
        for metric, label in (
            ("validation_corruption_mean", "validation-corruption mean (what it chose on)"), ("accuracy", "MNIST test"),
            ("corruption_mean", "corruption mean"),
        ):
            own = spread(name, metric)
            members = [(member, found) for member in ensemble.members if (found := spread(member, metric))]
            if own is None or not members:
                continue
            best, found = max(members, key=lambda item: item[1].mean)
            test = stats.ttest_ind_from_stats(own.mean, own.sd, own.n, found.mean, found.sd, found.n, equal_var=False)
            gap = 100 * (own.mean - found.mean)
            if test.pvalue >= 0.01:
                verdict = "no difference beyond noise"
            else:
                verdict = "better beyond noise" if gap > 0 else "worse beyond noise"
            if lines[-1].startswith("Fit times"):  # Python-Markdown (the docs site) starts a list only after a blank line
                lines.append("")
            lines.append(
                f"- `{name}` against its best candidate on the {label}, `{best}`: {gap:+.2f} points "
                f"({100 * own.mean:.2f} against {100 * found.mean:.2f}; Welch's t-test over seeds, p = {test.pvalue:.2g}: {verdict})."
            )
    return "\n".join(lines) + "\n"


def render(text: str, tables: dict[str, str]) -> str:
    """``text`` with every block's body replaced by its table; an unknown block name is an error."""
    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in tables:
            raise KeyError(f"block {name!r} has no generator; known: {sorted(tables)}")
        return match.group(1) + tables[name] + match.group(4)

    return BLOCK.sub(replace, text)


def render_all(root: Path) -> dict[Path, tuple[str, str]]:
    """Each file that holds blocks: (its text now, its text with every block regenerated)."""
    texts = {path: path.read_text(encoding="utf-8") for path in documents(root)}
    texts = {path: text for path, text in texts.items() if BLOCK.search(text)}
    tables = blocks(root, [name for text in texts.values() for name in block_names(text)])
    return {path: (text, render(text, tables)) for path, text in texts.items()}


def main() -> int:
    configure_logging()
    root = Path.cwd()
    for path, (text, updated) in render_all(root).items():
        path.write_text(updated, encoding="utf-8")
        log.info("%s: blocks %s", path.relative_to(root), "updated" if updated != text else "already up to date")
    picture = root / PICTURE
    svg = pipeline_svg(dvc_dag(root))
    if not picture.exists() or picture.read_text(encoding="utf-8") != svg:
        picture.parent.mkdir(parents=True, exist_ok=True)
        picture.write_text(svg, encoding="utf-8")
        log.info("%s updated", PICTURE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
