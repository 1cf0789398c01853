"""DVC stage `testsets`: the test digits under every corruption, the UCI digits, and who wrote each test digit.

Writes ``paths.testsets_dir`` whole or not at all (see ``mnist_pipeline.data.testsets``) and
``reports/corruptions.png``, one test digit under every corruption. ``QMNIST_MIRROR`` (a URL or
a local folder) is tried before ``testsets.writers.mirrors``, e.g. for an offline machine.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from mnist_pipeline.atomic import atomic_directory, write_json
from mnist_pipeline.config import load_params
from mnist_pipeline.constants import IMAGE_SIDE
from mnist_pipeline.data.arrays import load_split, save_array
from mnist_pipeline.data.corruptions import corrupt
from mnist_pipeline.data.testsets import Layout, fetch_writers, parse_writers, sha256_of, uci_digits
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
    made: dict[str, str] = {}
    seconds: dict[str, float] = {}
    with atomic_directory(Path(paths.testsets_dir)) as staging:
        out = Layout(staging)
        source = out.writers.parent / settings.writers.file.filename
        source.parent.mkdir(parents=True)
        fetch_writers(settings.writers, source, os.environ.get("QMNIST_MIRROR"))
        writers = parse_writers(source, labels)
        save_array(out.writers, writers)
        made["writers"] = sha256_of(writers)
        log.info("writers: %d test digits by %d writers, series %s", len(writers), len(set(writers[:, 1])), sorted(set(writers[:, 0])))

        examples = {}
        for number, name in enumerate(settings.corruptions, start=1):
            started = time.perf_counter()
            corrupted = corrupt(digits, name, settings.seed)
            seconds[name] = round(time.perf_counter() - started, 3)
            out.corruption(name).parent.mkdir(exist_ok=True)
            save_array(out.corruption(name), corrupted.reshape(len(corrupted), -1))
            made[name] = sha256_of(corrupted)
            examples[name] = corrupted[FIGURE_DIGIT]
            log.info("corruption %d/%d %s: %d digits in %.1f s", number, len(settings.corruptions), name, len(corrupted), seconds[name])

        started = time.perf_counter()
        uci, uci_labels = uci_digits()
        seconds["uci"] = round(time.perf_counter() - started, 3)
        out.uci_pixels.parent.mkdir()
        save_array(out.uci_pixels, uci)
        save_array(out.uci_labels, uci_labels)
        made["uci"] = sha256_of(uci)
        log.info("UCI digits: %d made MNIST-style in %.1f s", len(uci), seconds["uci"])

        write_json(out.manifest, {
            "seed": settings.seed,
            "corruptions": list(settings.corruptions),
            "test_digits": int(len(labels)),
            "params": settings.model_dump(mode="json"),
            "sha256": made,
        })
    title = f"test digit {FIGURE_DIGIT} under each corruption (seed {settings.seed})"
    save_figure(corruption_grid(digits[FIGURE_DIGIT], examples, title), paths.report_file(CORRUPTIONS_PNG))
    log.info("test sets in %s (%.1f s of corruption)", paths.testsets_dir, sum(seconds[name] for name in settings.corruptions))


def main() -> int:
    return run_stage("testsets", body)


if __name__ == "__main__":
    sys.exit(main())
