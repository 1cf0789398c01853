"""The README's measured tables, generated from the committed results files so they cannot go stale.

Each table sits between ``<!-- begin: NAME -->`` and ``<!-- end: NAME -->`` in README.md and is
made from files in the repository, never typed by hand:

- ``noise``: the noise model (``noise/noise.json``): per model and gated metric, mean ± sd over
  seeds and the same-seed sd over numeric variants (``reporting.noise.format_summary``);
- ``seeds-by-set``: models x the gated test sets, mean ± sd over seeds (``reporting.report.seeds_table``);
- ``this-run-by-set``: the committed run's models x test sets table (``reports/summary.json``).

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
    models = list(params.models)
    payload = json.loads((root / params.paths.noise_model).read_text(encoding="utf-8"))
    hashes = {name: params_hash(model, without_seed=True) for name, model in params.models.items()}
    summary = json.loads((root / params.paths.report_file("summary.json")).read_text(encoding="utf-8"))
    rows = [ModelRow(**row) for row in summary["models"]]
    return {
        "noise": noise.format_summary({name: payload["models"][name] for name in models if name in payload["models"]}),
        "seeds-by-set": seeds_table(models, hashes, noise.parse(payload, str(params.paths.noise_model))) or "(not measured yet)\n",
        "this-run-by-set": sets_table(rows) + "\n",
    }


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
