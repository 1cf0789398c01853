"""DVC stage `testsets`: the test digits under every corruption, the UCI digits, and who wrote each test digit.

Writes ``paths.testsets_dir`` whole or not at all (see ``mnist_pipeline.data.testsets``) and
``reports/corruptions.png``, one test digit under every corruption. ``QMNIST_MIRROR`` (a URL or
a local folder) is tried before ``testsets.writers.mirrors``, e.g. for an offline machine.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from mnist_pipeline.atomic import atomic_directory
from mnist_pipeline.config import load_params
from mnist_pipeline.constants import IMAGE_SIDE
from mnist_pipeline.data.arrays import load_split
from mnist_pipeline.data.corruptions import corrupt
from mnist_pipeline.data.testsets import Layout, make_testsets
from mnist_pipeline.reporting.plots import corruption_grid
from mnist_pipeline.reporting.report import save_figure
from mnist_pipeline.stage import run_stage

log = logging.getLogger("mnist_pipeline.testsets")

FIGURE_DIGIT = 0  # the first test digit (a 7) shows every corruption
CORRUPTIONS_PNG = "corruptions.png"


def body() -> None:
    params = load_params()
    paths, settings = params.paths, params.testsets
    pixels, labels = load_split(paths, "test", "pixels")
    digits = pixels.reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    with atomic_directory(Path(paths.testsets_dir)) as staging:
        examples = make_testsets(Layout(staging), digits, labels, settings, os.environ.get("QMNIST_MIRROR"), FIGURE_DIGIT, corrupt)
    title = f"test digit {FIGURE_DIGIT} under each corruption (seed {settings.seed})"
    save_figure(corruption_grid(digits[FIGURE_DIGIT], examples, title), paths.report_file(CORRUPTIONS_PNG))
    log.info("test sets in %s, one digit under each corruption in %s", paths.testsets_dir, paths.report_file(CORRUPTIONS_PNG))


def main() -> int:
    return run_stage("testsets", body)


if __name__ == "__main__":
    sys.exit(main())
