"""DVC stage `valsets`: the validation digits under every validation corruption, for choosing, never for reporting.

Writes ``paths.valsets_dir`` whole or not at all (``mnist_pipeline.data.valsets``) and
``reports/validation_corruptions.png``, one validation digit under every validation corruption.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from mnist_pipeline.atomic import atomic_directory
from mnist_pipeline.config import load_params
from mnist_pipeline.constants import IMAGE_SIDE
from mnist_pipeline.data.arrays import load_split
from mnist_pipeline.data.testsets import Layout
from mnist_pipeline.data.validation_corruptions import corrupt_validation
from mnist_pipeline.data.valsets import make_valsets
from mnist_pipeline.reporting.plots import corruption_grid
from mnist_pipeline.reporting.report import save_figure
from mnist_pipeline.stage import run_stage

log = logging.getLogger("mnist_pipeline.valsets")

FIGURE_DIGIT = 0  # the first validation digit shows every validation corruption
FIGURE_FILE = "validation_corruptions.png"


def body() -> None:
    params = load_params()
    paths, settings = params.paths, params.valsets
    pixels, _ = load_split(paths, "validation", "pixels")
    digits = pixels.reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    with atomic_directory(Path(paths.valsets_dir)) as staging:
        examples = make_valsets(Layout(staging), digits, settings, FIGURE_DIGIT, corrupt_validation)
    title = f"validation digit {FIGURE_DIGIT} under each validation corruption (seed {settings.seed})"
    save_figure(corruption_grid(digits[FIGURE_DIGIT], examples, title), paths.report_file(FIGURE_FILE))
    log.info("validation sets in %s, one digit under each corruption in %s", paths.valsets_dir, paths.report_file(FIGURE_FILE))


def main() -> int:
    return run_stage("valsets", body)


if __name__ == "__main__":
    sys.exit(main())
