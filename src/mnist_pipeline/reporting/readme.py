"""The README's measured tables, generated from the committed results files so they cannot go stale.

Each table sits between ``<!-- begin: NAME -->`` and ``<!-- end: NAME -->`` in README.md and is
made from files in the repository, never typed by hand:

- ``noise``: the noise model (``noise/noise.json``): per model and gated metric, mean ± sd over
  seeds and the same-seed sd over numeric variants (``reporting.noise.format_summary``);
- ``seeds-by-set``: models x the gated test sets, mean ± sd over seeds (``reporting.report.seeds_table``);
- ``this-run-by-set``: the committed run's models x test sets table (``reports/summary.json``);
- ``bench-testsets``: what making the test sets and scoring every model on them cost
  (``benchmarks/results/testsets.json`` and ``evaluation.json``, written by their benchmarks);
- ``fast-tuning``: the candidates `fast` was chosen from, on the validation split (``benchmarks/results/fast_tuning.json``);
- ``beyond-seed``: the models beyond the seed's, mean ± sd over seeds beside their fit time as a
  ratio to the seed CNN's, measured side by side (``benchmarks/results/training.json``), and each
  ensemble against its best member (``noise/noise.json``).

``python -m mnist_pipeline.reporting.readme`` rewrites them; ``tests/test_readme.py`` fails when
the README disagrees with its sources.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

from mnist_pipeline.config import load_params
from mnist_pipeline.models.base import params_hash
from mnist_pipeline.reporting import noise
from mnist_pipeline.reporting.report import ModelRow, seeds_table, sets_table
from mnist_pipeline.stage import configure_logging

log = logging.getLogger(__name__)

BLOCK = re.compile(r"(<!-- begin: (?P<name>[a-z-]+) -->\n)(?P<body>.*?)(<!-- end: (?P=name) -->)", re.DOTALL)


def blocks(root: Path) -> dict[str, str]:
    """Every generated table, from the results files under ``root``."""
    params = load_params(root / "params.yaml")
    models = list(params.scored)
    payload = json.loads((root / params.paths.noise_model).read_text(encoding="utf-8"))
    hashes = {name: params_hash(model, without_seed=True) for name, model in params.scored.items()}
    summary = json.loads((root / params.paths.report_file("summary.json")).read_text(encoding="utf-8"))
    rows = [ModelRow(**row) for row in summary["models"]]
    return {
        "noise": noise.format_summary({name: payload["models"][name] for name in models if name in payload["models"]}),
        "seeds-by-set": seeds_table(models, hashes, noise.parse(payload, str(params.paths.noise_model))) or "(not measured yet)\n",
        "this-run-by-set": sets_table(rows) + "\n",
        "bench-testsets": bench_testsets(root / "benchmarks" / "results"),
        "fast-tuning": fast_tuning(root / "benchmarks" / "results"),
        "beyond-seed": beyond_seed(params, noise.parse(payload, str(params.paths.noise_model)), hashes, rows, root / "benchmarks" / "results"),
    }


def fast_tuning(results: Path) -> str:
    """The candidates `fast` was chosen from, scored on the validation split (``benchmarks/tune_fast.py``)."""
    import pandas as pd

    tuning = json.loads((results / "fast_tuning.json").read_text(encoding="utf-8"))
    rows = [
        [name, f"{100 * entry['val_accuracy_mean']:.2f}", ", ".join(f"{100 * run['val_accuracy']:.2f}" for run in entry["runs"]),
         f"{sum(run['fit_seconds'] for run in entry['runs']) / len(entry['runs']):.1f}"]
        for name, entry in tuning["candidates"].items()
    ]
    frame = pd.DataFrame(rows, columns=["candidate", "validation accuracy, % (mean)", f"seeds {tuning['seeds']}", "fit, s (mean)"])
    return frame.to_markdown(index=False, colalign=["left", "right", "right", "right"], disable_numparse=True) + "\n"


def beyond_seed(params, measured, hashes: dict[str, str], rows: list[ModelRow], results: Path) -> str:
    """Accuracy over seeds beside fit time against the seed CNN's; then each ensemble against its best member."""
    import pandas as pd
    from scipy import stats

    bench = json.loads((results / "training.json").read_text(encoding="utf-8"))
    fits, seed_cnn = bench["models"], bench["seed_cnn"]["fit_seconds"]["median"]
    parameters = {row.model: row.parameters for row in rows}

    def spread(model: str, metric: str):
        found = measured.get(model, metric)
        return found if found is not None and found.params_hash == hashes.get(model) and found.n >= 2 else None

    def accuracy(model: str) -> str:
        found = spread(model, "accuracy")
        return f"{100 * found.mean:.2f} ± {100 * found.sd:.2f} ({found.n})" if found else "-"

    def fit_seconds(model: str) -> float | None:
        if model in params.ensembles:  # what it costs from nothing: its members' fits
            members = [fit_seconds(member) for member in params.ensembles[model].members]
            return None if None in members else sum(members)
        entry = fits.get(model)
        return None if entry is None or entry["recipe"] else entry["fit_seconds"]["median"]

    table = []
    for model in [*params.scored, *(name for name in fits if fits[name]["recipe"])]:
        seconds = fit_seconds(model)
        if model in fits and fits[model]["recipe"]:
            entry = fits[model]
            epochs = params.recipes[model].epochs
            projected = entry["seconds_per_epoch"] * epochs
            table.append([f"`{model}` (recipe)", "-", "-", f"{entry['seconds_per_epoch']:.1f} s/epoch; {epochs} epochs: ~{projected / 3600:.1f} h",
                          f"~{projected / seed_cnn:.0f}x"])
        elif seconds is not None:
            table.append([f"`{model}`", f"{parameters.get(model, 0):,}", accuracy(model), f"{seconds:.1f}", f"{seconds / seed_cnn:.3f} (1/{seed_cnn / seconds:.1f})"])
    frame = pd.DataFrame(table, columns=["model", "parameters", "MNIST test, % (seeds)", "fit, s (median)", "fit / seed CNN's"])
    machine = bench["machine"]
    lines = [
        frame.to_markdown(index=False, colalign=["left", "right", "right", "right", "right"], disable_numparse=True),
        "",
        f"Fit times: medians of {bench['repeats']} side-by-side runs on one {machine['cpu']} ({machine['cpu_count']} cores), "
        f"alternating with the seed's own CNN code, whose fit took {seed_cnn:.1f} s (`benchmarks/bench_training.py --fit-ratio`); "
        "an ensemble's is its members' together.",
    ]
    for name, ensemble in params.ensembles.items():
        for metric, label in (("accuracy", "MNIST test"), ("corruption_mean", "corruption mean")):
            own = spread(name, metric)
            members = [(member, found) for member in ensemble.members if (found := spread(member, metric))]
            if own is None or not members:
                continue
            best, found = max(members, key=lambda item: item[1].mean)
            test = stats.ttest_ind_from_stats(own.mean, own.sd, own.n, found.mean, found.sd, found.n, equal_var=False)
            gap = 100 * (own.mean - found.mean)
            verdict = "beyond noise" if test.pvalue < 0.01 else "within noise"
            lines.append(
                f"- `{name}` against its best member on the {label}, `{best}`: {gap:+.2f} points "
                f"({100 * own.mean:.2f} against {100 * found.mean:.2f}; Welch's t-test over seeds, p = {test.pvalue:.2g}: {verdict})."
            )
    return "\n".join(lines) + "\n"


def bench_testsets(results: Path) -> str:
    """The testsets stage's time and each model's scoring time, from the benchmarks' result files."""
    import pandas as pd

    stage = json.loads((results / "testsets.json").read_text(encoding="utf-8"))
    scoring = json.loads((results / "evaluation.json").read_text(encoding="utf-8"))
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


def render(text: str, tables: dict[str, str]) -> str:
    """``text`` with every block's body replaced by its table; an unknown block name is an error."""
    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in tables:
            raise KeyError(f"README block {name!r} has no generator; known: {sorted(tables)}")
        return match.group(1) + tables[name] + match.group(4)

    return BLOCK.sub(replace, text)


def main() -> int:
    configure_logging()
    root = Path.cwd()
    readme = root / "README.md"
    text = readme.read_text(encoding="utf-8")
    updated = render(text, blocks(root))
    readme.write_text(updated, encoding="utf-8")
    log.info("README.md tables %s", "updated" if updated != text else "already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
