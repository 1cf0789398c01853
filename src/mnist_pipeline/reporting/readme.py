"""The README's measured tables, generated from the committed results files so they cannot go stale.

Each table sits between ``<!-- begin: NAME -->`` and ``<!-- end: NAME -->`` in README.md and is
made from files in the repository, never typed by hand:

- ``noise``: the noise model (``noise/noise.json``): per model and gated metric, mean ± sd over
  seeds and the same-seed sd over numeric variants (``reporting.noise.format_summary``);
- ``seeds-by-set``: models x the gated test sets, mean ± sd over seeds (``reporting.report.seeds_table``);
- ``this-run-by-set``: the committed run's models x test sets table (``reports/summary.json``);
- ``bench-testsets``: what making the test sets and scoring every model on them cost
  (``benchmarks/results/testsets.json`` and ``evaluation.json``, written by their benchmarks).

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
    }


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
