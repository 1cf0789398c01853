"""Measure the noise model: every model's test accuracy over many training seeds, with the project's own code.

Every model in params.yaml is trained and scored exactly as `train@<m>` and `evaluate@<m>` do it
(``training.fit``, ``evaluation.predict_proba``, ``evaluation.compute_metrics``), once per seed:
20 seeds where one fit takes under 30 s, 10 otherwise, a single run for a model without a seed
(GaussianNB is deterministic), each in a fresh process as the pipeline's stages are. Each run is
appended to ``noise/runs.jsonl`` as it finishes, so an
interrupted measurement resumes where it stopped; runs already there (same model, same params
apart from the seed, same seed) are not repeated. At the end the runs of the current params are
summarised into ``noise/noise.json``, which the gate reads (see ``mnist_pipeline.noise``).

Usage: python benchmarks/seed_spread.py [--models cnn mlp ...] [--seeds N] [--summarize-only]
Needs the processed arrays (`dvc repro preprocess`). Runs outside CI: about an hour on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mnist_pipeline.atomic import write_json
from mnist_pipeline.config import load_params
from mnist_pipeline.data.arrays import load_split
from mnist_pipeline.models.base import params_hash
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.stage import configure_logging
from mnist_pipeline.reporting import noise
from mnist_pipeline.tracking.provenance import library_versions, machine_facts

log = logging.getLogger("seed_spread")

FAST_FIT_SECONDS = 30.0
SEEDS_IF_FAST = 20
SEEDS_IF_SLOW = 10


def read_runs(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise PipelineError(f"{path}:{number}: not a JSON line ({exc}); remove or fix that line") from None
    return rows


def append_run(path: Path, row: dict[str, Any]) -> None:
    # One line per write, flushed and synced: an interrupted measurement loses at most the run in flight.
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def run_once(name: str, params: Any, paths: Any, seed: int | None) -> dict[str, Any]:
    from mnist_pipeline.evaluation import compute_metrics, predict_proba
    from mnist_pipeline.models import registry
    from mnist_pipeline.training import fit, targets_for

    framework = registry.of(params).framework
    representation = registry.input_representation(params)
    x_train, _ = load_split(paths, "train", representation)
    y_train, _ = load_split(paths, "train", targets_for(params))
    x_test, y_test = load_split(paths, "test", representation)
    model_params = params if seed is None else params.model_copy(update={"seed": seed})
    result = fit(name, model_params, x_train, y_train, verbose=0)
    metrics = compute_metrics(y_test, predict_proba(result.model, framework, x_test, 1000))
    return {
        "model": name,
        "type": params.type,
        "params_hash": params_hash(params, without_seed=True),
        "seed": seed,
        "accuracy": metrics["accuracy"],
        "loss": metrics["loss"],
        "fit_seconds": round(result.fit_seconds, 2),
        "epochs": result.epochs,
        "machine": machine_facts(),
        "versions": library_versions(),
    }


def run_in_child(name: str, seed: int | None, runs_path: Path) -> dict[str, Any]:
    """One training in a fresh process, as the pipeline runs each stage.

    Back-to-back fits in one long-lived process slow down several-fold (a CNN fit took 406 s
    after a dozen earlier fits, against about 80 s in a fresh process), and a fresh process is
    also the state a train stage starts from.
    """
    before = len(read_runs(runs_path))
    command = [sys.executable, __file__, "--one", name, "none" if seed is None else str(seed)]
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    rows = read_runs(runs_path)
    if result.returncode != 0 or len(rows) != before + 1:
        raise PipelineError(f"{name} seed {seed}: the training process failed ({result.returncode}):\n{result.stdout[-3000:]}")
    return rows[-1]


def measure(names: list[str], params: Any, runs_path: Path, seeds_override: int | None) -> None:
    done = read_runs(runs_path)
    for name in names:
        model = params.model(name)
        params_hash = params_hash(model, without_seed=True)
        have = {row["seed"] for row in done if row["model"] == name and row["params_hash"] == params_hash}
        if not hasattr(model, "seed"):
            if None not in have:
                row = run_in_child(name, None, runs_path)
                done.append(row)
                log.info("%s (deterministic): accuracy %.4f, fit %.1f s", name, row["accuracy"], row["fit_seconds"])
            continue
        target = seeds_override
        seed = 0
        while target is None or len([s for s in have if s is not None and s < target]) < target:
            if seed not in have:
                started = time.perf_counter()
                row = run_in_child(name, seed, runs_path)
                done.append(row)
                have.add(seed)
                log.info(
                    "%s seed %d: accuracy %.4f, fit %.1f s (wall %.1f s)",
                    name, seed, row["accuracy"], row["fit_seconds"], time.perf_counter() - started,
                )
            if target is None:
                fit_times = [row["fit_seconds"] for row in done if row["model"] == name and row["params_hash"] == params_hash]
                target = SEEDS_IF_FAST if sorted(fit_times)[len(fit_times) // 2] < FAST_FIT_SECONDS else SEEDS_IF_SLOW
                log.info("%s: fit takes %.0f s, so %d seeds", name, fit_times[0], target)
            seed += 1


def write_summary(params: Any, runs_path: Path, out_path: Path) -> dict[str, Any]:
    hashes = {name: params_hash(model, without_seed=True) for name, model in params.models.items()}
    models = noise.summarize(read_runs(runs_path), hashes)
    fit_total = sum(sum(entry["fit_seconds"]) for entry in models.values())
    missing = sorted(set(hashes) - set(models))
    payload = {
        "schema": noise.SCHEMA_VERSION,
        "measured_with": "benchmarks/seed_spread.py",
        "runs_file": str(runs_path),
        "machine": machine_facts() | {"platform": platform.platform(), "python": platform.python_version()},
        "versions": library_versions(),
        # Measurements resume across invocations, so the work is summed per run, not timed once.
        "fit_seconds_total": round(fit_total, 1),
        "models": models,
    }
    write_json(out_path, payload)
    lines = ["| model | test accuracy, mean ± sd | runs | range | seed 0 |", "| --- | --- | --- | --- | --- |"]
    for name, entry in models.items():
        acc = entry["accuracy"]
        seed0 = acc["values"][entry["seeds"].index(0)] if 0 in entry["seeds"] else acc["values"][0]
        spread = "deterministic" if entry["deterministic"] else f"{100 * acc['min']:.2f}–{100 * acc['max']:.2f}"
        lines.append(
            f"| `{name}` | {100 * acc['mean']:.2f} ± {100 * acc['sd']:.2f} | {entry['n']} | {spread} | {100 * seed0:.2f} |"
        )
    log.info("noise model (percent):\n%s", "\n".join(lines))
    if missing:
        log.warning("no runs with the current params for %s: the gate will use its default tolerance for them", missing)
    return payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None, help="default: every model in params.yaml")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per model (default: 20 if a fit < 30 s, else 10)")
    parser.add_argument("--summarize-only", action="store_true", help="only rebuild noise.json from the runs file")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "SEED"), help=argparse.SUPPRESS)  # the child of run_in_child
    args = parser.parse_args(argv)
    configure_logging()
    params = load_params()
    runs_path, out_path = Path(params.paths.noise_runs), Path(params.paths.noise_model)
    if args.one:
        name, seed = args.one
        append_run(runs_path, run_once(name, params.model(name), params.paths, None if seed == "none" else int(seed)))
        return 0
    started = time.perf_counter()
    try:
        if not args.summarize_only:
            names = args.models or list(params.models)
            for name in names:
                params.model(name)
            measure(names, params, runs_path, args.seeds)
        write_summary(params, runs_path, out_path)
    except PipelineError as exc:
        log.error("%s", exc)
        return 2
    log.info("noise model written to %s (%.0f s)", out_path, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
