"""The benchmarks' figures as the documentation shows them, made from ``benchmarks/results/*.json``.

Each function renders one generated block (``docs_blocks.py``) from the files the benchmark
scripts write: the figure, its goal, whether it is met, and the machine and day it was measured on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd


def _read(results: Path, name: str) -> dict[str, Any]:
    return json.loads((results / f"{name}.json").read_text(encoding="utf-8"))


def _where(found: dict[str, Any]) -> str:
    machine = found["machine"]
    return f"{machine['cpu']}, {machine['cpu_count']} cores, {found['created_utc'][:10]}"


def _goal(figure: dict[str, Any], unit: str = "") -> str:
    if "goal_text" in figure:
        return figure["goal_text"]
    if "goal_max" in figure:
        return f"≤ {figure['goal_max']:,g}{unit}"
    return f"≥ {figure['goal_min']:,g}{unit}" if "goal_min" in figure else ""


def _met(figure: dict[str, Any]) -> str:
    return {True: "yes", False: "**no**"}.get(figure.get("met"), "")


def fast_tuning(results: Path) -> str:
    """The candidates `fast` was chosen from, scored on the validation split (``benchmarks/tune_fast.py``)."""
    tuning = _read(results, "fast_tuning")
    rows = [
        [name, f"{100 * entry['val_accuracy_mean']:.2f}", ", ".join(f"{100 * run['val_accuracy']:.2f}" for run in entry["runs"]),
         f"{sum(run['fit_seconds'] for run in entry['runs']) / len(entry['runs']):.1f}"]
        for name, entry in tuning["candidates"].items()
    ]
    frame = pd.DataFrame(rows, columns=["candidate", "validation accuracy, % (mean)", f"seeds {tuning['seeds']}", "fit, s (mean)"])
    machine = tuning["machine"]
    return (frame.to_markdown(index=False, colalign=["left", "right", "right", "right"], disable_numparse=True) + "\n\n"
            f"Fit times on one {machine['cpu']} ({machine['cpu_count']} cores), each with a validation pass (`benchmarks/tune_fast.py`).\n")


def best_recipe(results: Path) -> str:
    """The best recipe's runs, one per seed, by the project's own stages (``benchmarks/best_recipe.py``)."""
    if not (results / "best.json").exists():
        return "Not trained to the end here yet: `python benchmarks/best_recipe.py` records each seed in `benchmarks/results/best.json`.\n"
    runs = _read(results, "best")["runs"]
    frame = pd.DataFrame(
        [[run["seed"], run["epochs"], f"{run.get('fit_digits', 60_000):,}", f"{100 * run['accuracy']:.2f}", f"{100 * run['corruption_mean']:.2f}",
          f"{100 * run['uci_accuracy']:.2f}", f"{run['fit_seconds'] / 60:.0f}", f"{run['machine']['cpu']} ({run['machine']['cpu_count']} cores)",
          run["finished_utc"][:10]] for run in runs],
        columns=["seed", "epochs", "fitted on", "MNIST test, %", "corruptions, mean %", "UCI digits, %", "fit, min", "machine", "date"],
    )
    accuracies = [run["accuracy"] for run in runs]
    summary = f"Mean over {len(runs)} seed(s): {100 * sum(accuracies) / len(accuracies):.2f}% (the goal: at least 99.6% over at least 3 seeds)."
    lines = [frame.to_markdown(index=False, disable_numparse=True), "", summary]
    per_corruption = [run for run in runs if "corruption" in run]
    if per_corruption:
        run = per_corruption[-1]
        worst = sorted(run["corruption"].items(), key=lambda item: item[1])[:5]
        lines += ["", f"Seed {run['seed']}'s five worst test corruptions: "
                  + ", ".join(f"{name.replace('_', ' ')} {100 * value:.0f}%" for name, value in worst) + "."]
    return "\n".join(lines) + "\n"


def bench_testsets(results: Path) -> str:
    """The testsets stage's time and each model's scoring time, from the benchmarks' result files."""
    stage, scoring = _read(results, "testsets"), _read(results, "evaluation")
    machine = stage["machine"]
    lines = [
        f"The `testsets` stage: median {stage['stage_seconds']['median']:.1f} s over {len(stage['stage_seconds']['runs'])} runs "
        f"(goal: within {stage['goal_s']:.0f} s), of which the {len(stage['seconds'])} corruptions take "
        f"{stage['total_median_s']:.1f} s ({machine['cpu']}, {machine['cpu_count']} cores; `make bench-testsets`).",
        "",
        f"Scoring every set ({scoring['digits_scored']:,} digits) beside the MNIST test digits alone, per model, "
        f"median of {scoring['repeats']} (`make bench-evaluation`):",
        "",
    ]
    frame = pd.DataFrame(
        [[f"`{name}`", f"{entry['clean_only_s']['median']:.2f}", f"{entry['every_set_s']['median']:.2f}", f"{entry['ratio']:.1f}x"]
         for name, entry in scoring["models"].items()],
        columns=["model", "MNIST test only (s)", "every set (s)", "ratio"],
    )
    return "\n".join(lines) + "\n" + frame.to_markdown(index=False, colalign=["left", "right", "right", "right"], disable_numparse=True) + "\n"


MAKE_SERVE = "mlflow models serve"  # bench_serving.py's name for the setup `make serve` runs


def _served_label(setup: str, measured: dict[str, Any]) -> str:
    if "workers" in measured:
        return f"`make serve` (MLflow, {measured['workers']} workers)"
    if "adaptive_batching" in measured:
        batching = measured["adaptive_batching"]
        return f"MLServer (batches of up to {batching['max_batch_size']}, {1000 * batching['max_batch_time']:g} ms)"
    return setup


def serving(results: Path) -> str:
    """The champion in process and served, side by side in one run (``benchmarks/bench_serving.py``)."""
    found = _read(results, "serving")
    goals = found["goals"]

    def versus(text: str, figure: dict[str, Any] | None) -> str:
        return text if figure is None else f"{text} ({figure['value']:.2f}×{'' if figure['met'] else ', missed'})"

    rows = []
    # In process first: the reference every ratio is over.
    for setup, measured in sorted(found["setups"].items(), key=lambda item: (item[0] != "in process", item[0] != MAKE_SERVE)):
        verdicts = goals.get(setup, {})
        batches = "; ".join(versus(f"{form}: {entry['digits_per_s']:,}/s", verdicts.get("batch_1000_over_in_process", {}).get(form))
                            for form, entry in measured["batch_1000"].items())
        clients = [versus(f"{entry['requests_per_s']:,.0f}/s, p99 {entry['latency_ms']['p99']:.0f} ms",
                          verdicts.get("concurrent_over_in_process", {}).get(str(entry["clients"]))) for entry in measured["concurrent"]]
        one = versus(f"{measured['one_digit_ms']['p50']:.2f} ms", verdicts.get("one_digit_p50_over_in_process"))
        extra = f"{measured['memory_mib']:,} MiB, {measured['startup_s']:.0f} s" if "memory_mib" in measured else ""
        rows.append([_served_label(setup, measured), one, batches, *clients, extra])
    counts = [entry["clients"] for entry in found["setups"]["in process"]["concurrent"]]
    frame = pd.DataFrame(rows, columns=["", "one digit, p50", "1,000-digit batches",
                                        *(f"{count} client{'s' if count > 1 else ''}, one digit each" for count in counts), "memory, start-up"])
    soaked, machine = found["soak"], found["machine"]
    memory = soaked["memory_mib"]
    outcomes = ", ".join(f"{count:,} answered {outcome}" for outcome, count in sorted(soaked["outcomes"].items()))
    return (
        frame.to_markdown(index=False, disable_numparse=True) + "\n\n"
        f"`{found['classifier']['name']}` ({found['classifier']['type']}); medians; the ratios are over in process, beside "
        f"the goals of `bench_serving.py`. Soak of `make serve`: {soaked['requests']:,} requests from {soaked['clients']} clients, "
        f"{soaked['bad_share']:.0%} of them bad ({len(soaked['bad_kinds'])} kinds), in {soaked['seconds']:.0f} s: {outcomes}; "
        f"{soaked['server_errors']} server errors; resident memory {memory['after_warm_up']:,.0f} MiB after warm-up, "
        f"{memory['end']:,.0f} MiB at the end ({memory['growth']:+,.0f} MiB). "
        f"{machine['cpu']}, {machine['cpu_count']} cores, {found['created_utc'][:10]}.\n"
    )


def bench_goals(results: Path) -> str:
    """One row per figure with a goal: the scripts and their goals table of docs/benchmarks.md."""
    data, epochs, serving, team, pipeline, fits = (
        _read(results, name) for name in ("data", "training_epochs", "serving", "team", "pipeline", "training")
    )
    rows: list[list[str]] = []

    def row(script: str, what: str, result: str, figure: dict[str, Any], found: dict[str, Any], unit: str = "") -> None:
        first = all(earlier[0] != script for earlier in rows)
        rows.append([script if first else "", what, result, _goal(figure, unit), _met(figure), _where(found) if first else ""])

    scratch, noop = pipeline["repro_over_fit"], pipeline["noop_repro_s"]
    row("`bench_pipeline.py`", f"from-scratch `dvc repro` ({len(pipeline['stages'])} stages) over the sum of its fits",
        f"{pipeline['from_scratch_repro_s']:.0f} s over {pipeline['fit_total_s']:.0f} s: **{scratch['value']:.2f}×**", scratch, pipeline, "×")
    row("`bench_pipeline.py`", "no-op `dvc repro`, median", f"**{noop['median']:.2f} s**", noop, pipeline, " s")
    row("`bench_data.py`", "download + verify + preprocess from the local mirror",
        f"**{data['stages_s']['median']:.2f} s** ({data['dvc_repro_s']['median']:.2f} s through `dvc repro`)", data["stages_s"], data, " s")
    row("`bench_data.py`", "preprocess peak memory", f"{data['preprocess_peak_rss_mib']['median']:,.0f} MiB",
        data["preprocess_peak_rss_mib"], data, " MiB")
    for name, model in epochs["models"].items():
        ratio = model["ratio_to_reference"]
        row("`bench_training.py`", f"`{name}` seconds per epoch vs the seed's own code",
            f"{model['s_per_epoch']['median']:.2f} vs {model['reference_s_per_epoch']['median']:.2f}: **{ratio['value']:.2f}×**", ratio, epochs, "×")
    peak = max(epochs["models"].values(), key=lambda model: model["peak_rss_mib"]["median"])["peak_rss_mib"]
    row("`bench_training.py`", "peak memory of a training stage", f"{peak['median']:,.0f} MiB", peak, epochs, " MiB")
    overhead = max(epochs["models"].values(), key=lambda model: model["mlflow_overhead_s"]["median"])["mlflow_overhead_s"]
    row("`bench_training.py`", "the train stage's MLflow work (set-up + logging), the larger", f"{overhead['median']:.2f} s", overhead, epochs, " s")
    fast = fits["models"]["fast"]
    ratio = {"goal_text": "≤ 1/10", "met": fast["ratio_to_seed_cnn"] <= 1 / 10}
    row("`bench_training.py --fit-ratio`", "`fast`'s whole fit vs the seed CNN's, by the seed's code",
        f"{fast['fit_seconds']['median']:.1f} vs {fast['seed_cnn_fit_seconds']['median']:.1f} s: **1/{1 / fast['ratio_to_seed_cnn']:.1f}**",
        ratio, {"machine": fits["machine"], "created_utc": fast["measured_utc"]}, "×")
    name = serving["classifier"]["name"]
    for setup, verdicts in sorted(serving["goals"].items(), key=lambda item: item[0] != MAKE_SERVE):
        if setup == "soak":
            continue
        measured, local = serving["setups"][setup], serving["setups"]["in process"]
        label = _served_label(setup, measured)
        p50 = verdicts["one_digit_p50_over_in_process"]
        row("`bench_serving.py`", f"`{name}` one digit, p50: {label} over in process",
            f"{measured['one_digit_ms']['p50']:.2f} vs {local['one_digit_ms']['p50']:.2f} ms: **{p50['value']:.2f}×**", p50, serving, "×")
        for form, figure in verdicts["batch_1000_over_in_process"].items():
            row("`bench_serving.py`", f"1,000-digit batches, {label} ({form}) over in process",
                f"{measured['batch_1000'][form]['digits_per_s']:,} vs {local['batch_1000']['numpy']['digits_per_s']:,} digits/s: "
                f"**{figure['value']:.2f}×**", figure, serving, "×")
        for clients, figure in sorted(verdicts["concurrent_over_in_process"].items(), key=lambda item: int(item[0])):
            served = next(entry for entry in measured["concurrent"] if str(entry["clients"]) == clients)
            alone = next(entry for entry in local["concurrent"] if str(entry["clients"]) == clients)
            row("`bench_serving.py`", f"{clients} concurrent clients, {label} over in process (as many threads)",
                f"{served['requests_per_s']:,.0f} vs {alone['requests_per_s']:,.0f} requests/s: **{figure['value']:.2f}×**", figure, serving, "×")
    soaked = serving["soak"]
    row("`bench_serving.py`", f"`make serve` soak: {soaked['requests']:,} requests, {soaked['bad_share']:.0%} bad, "
        f"{soaked['clients']} clients: resident memory growth after warm-up",
        f"{soaked['memory_mib']['growth']:+,.0f} MiB; {soaked['server_errors']} server errors; "
        f"{'every answer as expected' if soaked['all_answered_as_expected'] else '**unexpected answers**'}",
        soaked["memory_mib"], serving, " MiB")
    mlflow, dvc, sweep = team["mlflow"], team["dvc"], team["sweep"]
    stores, whole = mlflow["stores"], mlflow["server_over_embedded"]["whole_run"]
    row("`bench_team.py`", "MLflow logging per run, tracking server vs embedded SQLite",
        f"{stores['server']['whole_run_s']['median']:.3f} vs {stores['embedded (SQLite)']['whole_run_s']['median']:.3f} s: "
        f"**{whole['value']:.2f}×**", whole, team, "×")
    for verb, plain in (("push", "put"), ("pull", "get")):
        ratio = dvc["dvc_over_plain_throughput"][verb]
        row("`bench_team.py`", f"`dvc {verb}` ({dvc['objects']} objects, {dvc['megabytes']:.0f} MB) vs a plain s3fs {plain}",
            f"{dvc['transfers'][f'dvc {verb}']['mb_per_s']:.1f} vs {dvc['transfers'][f's3fs {plain}']['mb_per_s']:.1f} MB/s: "
            f"**{ratio['value']:.2f}×**", ratio, team, "×")
    split, variants = sweep["two_over_one_worker_wall"], sweep["variants"]
    row("`bench_team.py`", f"`mnist-sweep`, {sweep['trials']} trials: 2 workers vs 1, wall time",
        f"{variants['2 workers']['wall_s']:.1f} vs {variants['1 worker']['wall_s']:.1f} s: **{split['value']:.2f}×**", split, team, "×")
    frame = pd.DataFrame(rows, columns=["script", "what it measures", "result", "goal", "met", "measured on"])
    return frame.to_markdown(index=False, disable_numparse=True) + "\n"


# Which stages a row of the time table sums, by the stage's name and the framework it imported.
STAGE_GROUPS = (
    ("download, preprocess, testsets, valsets", lambda stage: stage["stage"] in ("download", "preprocess", "testsets", "valsets")),
    ("train@ (Keras models)", lambda stage: stage["stage"].startswith("train@") and "import keras" in stage),
    ("train@ (scikit-learn models)", lambda stage: stage["stage"].startswith("train@") and "import sklearn" in stage),
    ("evaluate@ (Keras models)", lambda stage: stage["stage"].startswith("evaluate@") and "import keras" in stage),
    ("evaluate@ (scikit-learn models)", lambda stage: stage["stage"].startswith("evaluate@") and "import sklearn" in stage),
    ("the ensemble (train, evaluate)", lambda stage: "import ensemble" in stage),
    ("report, gate, register", lambda stage: stage["stage"] in ("report", "gate", "register")),
)
TIME_COLUMNS = {
    "fit": ("fit",),
    "start-up": ("start-up",),
    "framework import": ("import keras", "import sklearn"),
    "MLflow import": ("import mlflow",),
    "MLflow work": ("tracking set-up", "MLflow logging", "MLflow registry"),
}


def stage_time(results: Path) -> str:
    """Where the from-scratch pipeline's time went, stage group by group (``bench_pipeline.py``)."""
    pipeline = _read(results, "pipeline")
    stages, rows, totals = pipeline["stages"], [], {}
    if ungrouped := [stage["stage"] for stage in stages if sum(belongs(stage) for _, belongs in STAGE_GROUPS) != 1]:
        raise ValueError(f"stages in no group of STAGE_GROUPS, or in several: {ungrouped}")
    for label, belongs in (*STAGE_GROUPS, ("**all stages**", lambda stage: True)):
        group = [stage for stage in stages if belongs(stage)]
        sums = {column: sum(stage.get(key, 0.0) for stage in group for key in keys) for column, keys in TIME_COLUMNS.items()}
        total = sum(stage["total"] for stage in group)
        rows.append([label, str(len(group)), f"{total:.1f}", *(f"{value:.1f}" for value in sums.values()), f"{total - sum(sums.values()):.1f}"])
        totals = {"total": total, **sums}
    besides = totals["total"] - totals["fit"]
    lead = (f"From `bench_pipeline.py`'s from-scratch run of the default pipeline (seconds, {_where(pipeline)}, "
            f"TensorFlow {pipeline['libraries'].get('tensorflow', '?')}):\n\n")
    frame = pd.DataFrame(rows, columns=["stages", "count", "total", *TIME_COLUMNS, "other (scoring, test sets, ...)"])
    table = frame.to_markdown(index=False, colalign=["left", *["right"] * (len(TIME_COLUMNS) + 3)], disable_numparse=True)
    return (lead + table + f"\n\nBesides fitting, the {len(stages)} stages spend {besides:.0f} s, and DVC's own work (hashing, "
            f"locking, starting each stage) {pipeline['dvc_own_work_s']:.0f} s more.\n")


def ci_time(results: Path) -> str:
    """How long `.ci/run` took on a clean clone, step by step (``benchmarks/ci_timings.py``)."""
    ci = _read(results, "ci")

    def took(seconds: int) -> str:
        return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds} s"

    rows = [[step["step"], took(step["seconds"])] for step in ci["steps"] if step["seconds"] > 0]
    frame = pd.DataFrame(rows, columns=["step (as `.ci/run` stamps it)", "took"])
    return (f"On a clean clone of commit `{ci['commit']}` ({_where(ci)}), `.ci/run` took **{took(ci['total_s'])}**; "
            "the steps that took a second or more:\n\n" + frame.to_markdown(index=False, colalign=["left", "right"], disable_numparse=True) + "\n")


def _in_chain_order(tuning: dict) -> list[tuple[str, dict]]:
    """The candidates as the chain added them, each to the one before."""
    return [(name, tuning["candidates"][name]) for name in tuning["order"]]


def robust_tuning(results: Path) -> str:
    """The candidates `robust` was chosen from, on the validation sets (``benchmarks/tune_robust.py``): what the choice read."""
    tuning = _read(results, "robust_tuning")
    rows = [
        [name + (" (kept)" if name == tuning["kept"] else ""), f"{100 * entry['validation_accuracy_mean']:.2f}",
         f"{100 * entry['validation_corruption_mean']:.2f}", f"{100 * entry['objective']:.2f}",
         f"{entry['fit_seconds_median']:.0f} ({entry['fit_seconds_median'] / entry['budget_seconds']:.2f}x)"]
        for name, entry in _in_chain_order(tuning)
    ]
    frame = pd.DataFrame(rows, columns=[
        "candidate (each adds to the one above)", "validation, %", "validation corruptions, mean %", "objective",
        "fit, s (x the seed CNN's around it)",
    ])
    return (frame.to_markdown(index=False, colalign=["left", "right", "right", "right", "right"], disable_numparse=True) + "\n\n"
            f"Means over seeds {tuning['seeds']}; the objective is the validation accuracy plus the validation-corruption mean. "
            f"Kept: {tuning['rule']}. The seed CNN was fitted before the first candidate and after each "
            f"({_where(tuning)}; `benchmarks/tune_robust.py`).\n")


def robust_tuning_by_corruption(results: Path) -> str:
    """What each candidate scored on every test corruption, reported after the choice (never read by it)."""
    tuning = _read(results, "robust_tuning")
    candidates = tuning["candidates"]
    corruptions = list(next(iter(candidates.values()))["runs"][0]["test"]["corruption"])
    rows = []
    for name, entry in _in_chain_order(tuning):
        runs = [run["test"] for run in entry["runs"]]

        def average(values: list[float], decimals: int = 0) -> str:
            return f"{100 * sum(values) / len(values):.{decimals}f}"

        rows.append([name, average([run["accuracy"] for run in runs], decimals=2), average([run["corruption_mean"] for run in runs]),
                     *(average([run["corruption"][c] for run in runs]) for c in corruptions), average([run["uci_accuracy"] for run in runs])])
    frame = pd.DataFrame(rows, columns=["candidate", "MNIST test", "mean", *(c.replace("_", " ") for c in corruptions), "UCI"])
    return frame.to_markdown(index=False, colalign=["left"] + ["right"] * (len(corruptions) + 3), disable_numparse=True) + "\n"
