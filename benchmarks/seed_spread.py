"""Measure the noise model: every model's metrics over many seeds, and its default seed under other numerics.

One campaign covers every metric the gate judges and the champion rule reads: each run is
trained once with the project's own code (``training.fit``, on the training digits, its
temperature fitted on the validation digits, as the train stage does) and scored on every test
set and every validation set exactly as `evaluate@<m>` scores it (``evaluation.score_all_sets``,
``score_validation_sets``). Two kinds of run, each in a fresh process as the pipeline's stages are:

- the default seed under every numeric variant in ``VARIANTS`` (oneDNN on or off, 1, 2 or 4
  threads): the spread of one seed across machines, which judges a rerun of the committed params;
- more seeds under the default numerics: 20 where one fit takes under 30 s, 10 otherwise, a single
  run for a model without a seed (GaussianNB is deterministic): the spread over seeds;
- each of those seeds again under ``PAIRED_VARIANTS`` (oneDNN off): a degree of freedom each for
  the same-seed spread, which ``noise.summarize`` pools over seeds.

An ensemble's run of seed s is made of its members' runs of seed s (kept, or trained then), so
measuring it costs scoring only, once its members are measured; its fit time is theirs summed.
One that chooses its members (``selection``) chooses them on that seed's validation scores.

Each run is appended to ``noise/runs.jsonl`` as it finishes, so an interrupted measurement resumes
where it stopped. Trained models are kept under ``noise/models/`` (not committed): a run already
scored on today's test sets is not repeated, and one scored on older sets is rescored without
retraining. At the end the runs of the current params are summarised into ``noise/noise.json``, which the gate reads
(``mnist_pipeline.reporting.noise``).

Usage: python benchmarks/seed_spread.py [--models cnn mlp ...] [--seeds N] [--variants-only]
       [--train-only] [--summarize-only]
Needs the processed arrays and the test sets (`dvc repro testsets`). Runs outside CI: hours on 2 cores.

Spread over machines: the same command with --study [NAME] [--storage URL], as one or more workers
on each machine. The campaign is an Optuna study (default ``noise-campaign``) in the sweeps' storage
(--storage, else MNIST_SWEEP_STORAGE, e.g. the team's PostgreSQL, else mlruns/optuna.db). The first
worker queues every run (its options make the plan; runs its runs file holds are done at once); each
worker runs the next queued run, keeps its row in the study, and when none is left merges the study's
rows into its own runs file and summarises (--summarize-only --study NAME: only that). A worker that
dies mid-run stops its heartbeat (the sweeps'), and another puts that run back in the queue.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
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
# The same seed under other numerics: what moves a seeded result from one machine to the next
# (oneDNN's kernels, how reductions are split over threads). Each is a set of environment variables
# for the training process, read by TensorFlow (and OpenMP/BLAS) as it starts. "default" sets none.
_ONE_THREAD = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
_FOUR_THREADS = {"TF_NUM_INTRAOP_THREADS": "4", "TF_NUM_INTEROP_THREADS": "2", "OMP_NUM_THREADS": "4"}
_ONEDNN_OFF = {"TF_ENABLE_ONEDNN_OPTS": "0"}
VARIANTS: dict[str, dict[str, str]] = {
    "default": {},
    "onednn-off": _ONEDNN_OFF,
    "threads-1": _ONE_THREAD,
    "onednn-off-threads-1": _ONEDNN_OFF | _ONE_THREAD,
    "threads-4": _FOUR_THREADS,
    "onednn-off-threads-4": _ONEDNN_OFF | _FOUR_THREADS,
}
# The variants a campaign runs the default seed under: all of them, or only "default" (--no-variants).
PLANNED_VARIANTS = list(VARIANTS)
# Every other seed is also run under this variant: one more degree of freedom per seed for the
# same-seed spread, pooled over seeds (``noise.summarize``), which narrows the gate's same-seed
# tolerances far more than more seeds would (docs/gate, the gate's power). None with --no-variants.
PAIRED_VARIANTS = ["onednn-off"]
# What each run records: every metric the gate may judge, so the noise model covers them all.
ROW_METRICS = (
    "accuracy", "loss", "ece", "corruption_mean", "corruption_worst", "ece_corruption_mean", "uci_accuracy",
    "series0_accuracy", "series4_accuracy",
)
# The validation sets' metrics, recorded as validation_<name> (what the champion rule reads).
VALIDATION_ROW_METRICS = ("accuracy", "corruption_mean", "corruption_worst", "loss", "ece", "ece_corruption_mean")
# Trained models are kept (not committed), so a changed test set is rescored without retraining.
MODELS_CACHE = Path("noise/models")
FIT_FILE = "fit.json"


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


def model_folder(name: str, params: Any, seed: int | None, variant: str) -> Path:
    return MODELS_CACHE / f"{name}-{params_hash(params, without_seed=True)}" / f"{seed}-{variant}"


def fit_digits(params: Any, paths: Any) -> int | None:
    """How many digits the model fits on now (None: an ensemble fits none): part of what a run measured.

    Runs recorded before the validation split lack it; they fitted on all 60,000 training digits,
    less the model's own ``validation_split`` (``recorded_fit_digits``).
    """
    from mnist_pipeline.data.preprocess import validation_start

    if hasattr(params, "members"):
        return None
    train = len(load_split(paths, "train", "labels")[1])
    held_out = getattr(params, "validation_split", 0.0)
    if not held_out:
        return train
    return validation_start(train + len(load_split(paths, "validation", "labels")[1]), held_out)


def recorded_fit_digits(row: dict[str, Any], params: Any) -> int | None:
    if "fit_digits" in row:
        return row["fit_digits"]
    if hasattr(params, "members"):
        return None
    from mnist_pipeline.constants import MNIST_TRAIN_SIZE
    from mnist_pipeline.data.preprocess import validation_start

    return validation_start(MNIST_TRAIN_SIZE, getattr(params, "validation_split", 0.0))


def validation_for(paths: Any, representation: str, targets: str) -> Any:
    from mnist_pipeline.training import Validation

    inputs, labels = load_split(paths, "validation", representation)
    return Validation(inputs, load_split(paths, "validation", targets)[0], labels)


def trained(name: str, params: Any, paths: Any, seed: int | None, variant: str, everything: Any = None) -> tuple[Any, dict[str, Any]]:
    """The model of this (seed, variant), trained in this process, or loaded if an earlier run kept it.

    An ensemble (``everything``: all of params.yaml, where its members are) is made of its members
    of the same seed and variant, each trained or kept as any model is; it keeps nothing of its own.
    """
    from mnist_pipeline.atomic import atomic_directory
    from mnist_pipeline.models import registry
    from mnist_pipeline.training import fit, targets_for

    if registry.members_of(params):
        return ensemble_of(name, params, paths, seed, variant, everything)
    folder = model_folder(name, params, seed, variant)
    adapter = registry.adapter_of(params)
    if (folder / FIT_FILE).exists():
        return adapter.load(folder, registry.of(params)), json.loads((folder / FIT_FILE).read_text(encoding="utf-8"))
    representation = registry.input_representation(params)
    x_train, _ = load_split(paths, "train", representation)
    y_train, _ = load_split(paths, "train", targets_for(params))
    model_params = params if seed is None else params.model_copy(update={"seed": seed})
    result = fit(name, model_params, x_train, y_train, validation=validation_for(paths, representation, targets_for(params)), verbose=0)
    facts = {
        "fit_seconds": round(result.fit_seconds, 2),
        "epochs": result.epochs,
        "temperature": result.temperature,
        "machine": machine_facts(),
        "versions": library_versions(),
        "environment": VARIANTS[variant],
    }
    with atomic_directory(folder) as staging:
        adapter.save(result.model, staging)
        write_json(staging / FIT_FILE, facts)
    return result.model, facts


def ensemble_of(name: str, params: Any, paths: Any, seed: int | None, variant: str, everything: Any) -> tuple[Any, dict[str, Any]]:
    """The ensemble of its members' runs of this seed, built (and its members chosen) by ``training.fit``, as the train stage builds it."""
    from mnist_pipeline.evaluation import score_validation_sets
    from mnist_pipeline.models import registry
    from mnist_pipeline.training import fit

    members, scores = {}, {}
    for member in params.members:
        member_params = everything.model(member)
        member_seed = seed if getattr(member_params, "seed", None) is not None else None  # GaussianNB has none
        model, facts = trained(member, member_params, paths, member_seed, variant)
        adapter = registry.adapter_of(member_params)
        config = {
            "name": member, "type": member_params.type, "framework": registry.of(member_params).framework,
            "input": registry.input_representation(member_params), "fit_seconds": facts["fit_seconds"],
            "parameter_counts": adapter.parameter_counts(model), "temperature": facts.get("temperature", 1.0),
        }
        members[member] = (config, model)
        if params.selection is not None:
            valsets, validation = score_validation_sets(adapter, model, config["input"], paths, everything.evaluate, config["temperature"])
            scores["labels"], scores[member] = valsets.labels, validation.proba
    pixels, labels = load_split(paths, "train", "pixels")
    result = fit(
        name, params, pixels, labels, validation=validation_for(paths, "pixels", "labels"), members=members, member_scores=scores, verbose=0,
    )
    facts = {
        "fit_seconds": round(result.fit_seconds, 2),
        "epochs": 0,
        "temperature": result.temperature,
        "machine": machine_facts(),
        "versions": library_versions(),
        "environment": VARIANTS[variant],
    }
    return result.model, facts


def run_once(name: str, params: Any, paths: Any, settings: Any, seed: int | None, variant: str, everything: Any = None) -> dict[str, Any]:
    """Train (or load) one (seed, variant) and score it on every test set and validation set, as evaluate@<name> does."""
    from mnist_pipeline.evaluation import score_all_sets, score_validation_sets
    from mnist_pipeline.models import registry

    model, facts = trained(name, params, paths, seed, variant, everything)
    adapter, representation, temperature = registry.adapter_of(params), registry.input_representation(params), facts.get("temperature", 1.0)
    _, scores = score_all_sets(adapter, model, representation, paths, settings, temperature)
    _, validation = score_validation_sets(adapter, model, representation, paths, settings, temperature)
    summary, checked = scores.summary(), validation.summary()
    return {
        "model": name,
        "type": params.type,
        "params_hash": params_hash(params, without_seed=True),
        "seed": seed,
        "variant": variant,
        **{metric: summary[metric] for metric in ROW_METRICS},
        **{f"validation_{metric}": checked[metric] for metric in VALIDATION_ROW_METRICS},
        "temperature": temperature,
        "fit_digits": fit_digits(params, paths),
        "testsets": scores.testsets_digest,
        "valsets": validation.valsets_digest,
        "fit_seconds": facts["fit_seconds"],
        "epochs": facts["epochs"],
        "machine": facts["machine"],
        "versions": facts["versions"],
    }


def run_in_child(name: str, seed: int | None, variant: str, runs_path: Path, train_only: bool) -> dict[str, Any] | None:
    """One training in a fresh process, as the pipeline runs each stage, under the variant's environment.

    Back-to-back fits in one long-lived process slow down several-fold (a CNN fit took 406 s
    after a dozen earlier fits, against about 80 s in a fresh process), and a fresh process is
    also the state a train stage starts from. TensorFlow reads the variant's settings as it starts.
    """
    before = len(read_runs(runs_path))
    command = [sys.executable, __file__, "--one", name, "none" if seed is None else str(seed), variant]
    if train_only:
        command.append("--train-only")
    environment = os.environ | VARIANTS[variant]
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment)
    # Its own row: other workers on this machine (--study) may have appended theirs meanwhile.
    rows = [row for row in read_runs(runs_path)[before:] if (row["model"], row["seed"], row.get("variant", "default")) == (name, seed, variant)]
    if result.returncode != 0 or (not train_only and not rows):
        raise PipelineError(f"{name} seed {seed} ({variant}): the training process failed ({result.returncode}):\n{result.stdout[-3000:]}")
    return None if train_only else rows[-1]


def seeds_to_measure(model: Any, default_fit_seconds: float | None, seeds_override: int | None) -> list[int]:
    """Seeds 0..N-1 under the default numerics: N = 20 where a fit takes under 30 s, else 10."""
    target = seeds_override
    if target is None:
        slow = default_fit_seconds is not None and default_fit_seconds >= FAST_FIT_SECONDS
        target = SEEDS_IF_SLOW if slow else SEEDS_IF_FAST
    return list(range(target))


def kept_fit(name: str, model: Any, everything: Any = None) -> float | None:
    """The fit time of the default seed's default-numerics model kept here, if it was trained here
    (an ensemble's: its members', if all of them were)."""
    members = getattr(model, "members", None)
    if members:
        fits = [kept_fit(member, everything.model(member)) for member in members if hasattr(everything.model(member), "seed")]
        return None if None in fits else sum(fits)
    fit = model_folder(name, model, model.seed, "default") / FIT_FILE
    return json.loads(fit.read_text(encoding="utf-8"))["fit_seconds"] if fit.exists() else None


def planned_runs(model: Any, variants_only: bool, seeds_override: int | None, default_fit: Any) -> Iterator[tuple[int | None, str]]:
    """A model's runs in order: the default seed under every variant, the other seeds (how many:
    ``default_fit()``, asked then), then each of those under the paired variants."""
    if not hasattr(model, "seed"):
        yield None, "default"  # deterministic: one run says it all
        return
    # The default seed under every numeric variant first: the same-seed spread the gate needs most.
    for variant in PLANNED_VARIANTS:
        yield model.seed, variant
    if variants_only:
        return
    others = [seed for seed in seeds_to_measure(model, default_fit(), seeds_override) if seed != model.seed]
    yield from ((seed, "default") for seed in others)
    yield from ((seed, variant) for variant in PAIRED_VARIANTS for seed in others)


def measure(names: list[str], params: Any, runs_path: Path, seeds_override: int | None, variants_only: bool, train_only: bool) -> None:
    digest = None
    if not train_only:
        from mnist_pipeline.data.testsets import manifest_digest

        digest = manifest_digest(Path(params.paths.testsets_dir))
    for name in names:
        model = params.model(name)
        model_hash = params_hash(model, without_seed=True)
        digits = fit_digits(model, params.paths)
        # A run counts once it was scored on today's test sets, fitted on today's training digits;
        # its trained model is reused otherwise.
        done = {
            (row["seed"], row.get("variant", "default")) for row in read_runs(runs_path)
            if row["model"] == name and row["params_hash"] == model_hash and row.get("testsets") == digest
            and recorded_fit_digits(row, model) == digits
        }

        def run(seed: int | None, variant: str) -> None:
            # Training only keeps models (an ensemble's members, say): a run scored earlier may have kept none here.
            if (model_folder(name, model, seed, variant) / FIT_FILE).exists() if train_only else (seed, variant) in done:
                return
            started = time.perf_counter()
            row = run_in_child(name, seed, variant, runs_path, train_only)
            wall = time.perf_counter() - started
            if row is None:
                log.info("%s seed %s (%s): trained and kept (wall %.1f s)", name, seed, variant, wall)
                return
            log.info(
                "%s seed %s (%s): accuracy %.4f, corruptions %.4f, UCI %.4f, fit %.1f s (wall %.1f s)",
                name, seed, variant, row["accuracy"], row["corruption_mean"], row["uci_accuracy"], row["fit_seconds"], wall,
            )

        # Lazily: the seeds' count follows the default run's fit time, known once it has run.
        for seed, variant in planned_runs(model, variants_only, seeds_override, functools.partial(kept_fit, name, model, params)):
            run(seed, variant)


def write_summary(params: Any, runs_path: Path, out_path: Path) -> dict[str, Any]:
    hashes = {name: params_hash(model, without_seed=True) for name, model in params.scored.items()}
    default_seeds = {name: getattr(model, "seed", None) for name, model in params.scored.items()}
    # Only runs fitted on the digits each model fits on now: a model whose training data changed is not the one measured.
    digits = {name: fit_digits(model, params.paths) for name, model in params.scored.items()}
    rows = [row for row in read_runs(runs_path) if row["model"] in digits and recorded_fit_digits(row, params.model(row["model"])) == digits[row["model"]]]
    models = noise.summarize(rows, hashes, default_seeds)
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
    log.info("noise model (percent):\n%s", noise.format_summary(models))
    if missing:
        log.warning("no runs with the current params for %s: the gate will use its default tolerance for them", missing)
    return payload


# -- a campaign spread over machines (--study): one Optuna study, each planned run a queued trial --
# A queued trial goes to one worker (a sampler such as GridSampler lets two take the same point, and never redoes a FAIL).

CAMPAIGN_STUDY = "noise-campaign"
RUN_ATTR, ROW_ATTR, PLAN_ATTR, HASHES_ATTR = "run", "row", "planned_runs", "params_hashes"  # trial, trial, study, study


def run_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return row["model"], row["params_hash"], row["seed"], row.get("variant", "default")


def local_rows(runs_path: Path, digest: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {run_key(row): row for row in read_runs(runs_path) if row.get("testsets") == digest}


def study_rows(study: Any) -> list[dict[str, Any]]:
    from optuna.trial import TrialState

    return [trial.user_attrs[ROW_ATTR] for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if ROW_ATTR in trial.user_attrs]


def requeue(study: Any, trial: Any) -> None:
    """A run that did not finish (its worker died: no heartbeat; or it failed, or was interrupted) goes back in the queue."""
    if RUN_ATTR in trial.user_attrs:
        log.warning("trial %d (%s) did not finish; its run is back in the queue", trial.number, trial.user_attrs[RUN_ATTR])
        study.enqueue_trial({}, user_attrs={RUN_ATTR: trial.user_attrs[RUN_ATTR]})


def plan_campaign(study: Any, names: list[str], params: Any, seeds_override: int | None, variants_only: bool, done: dict) -> None:
    """Queue every run in measure's order; a run this machine has done is a finished trial at once.

    Where no fit time is known here, seeds 10..19 go last, marked ``if_fast``: whoever takes one
    drops it if the default run took 30 s or more (measures it if that run is still going).
    """
    import optuna

    needed, if_fast = [], []
    for name in names:
        model = params.model(name)
        fit = kept_fit(name, model, params) if hasattr(model, "seed") else None
        for seed, variant in planned_runs(model, variants_only, seeds_override, lambda fit=fit: fit):
            run = {"model": name, "params_hash": params_hash(model, without_seed=True), "seed": seed, "variant": variant}
            conditional = seeds_override is None and fit is None and seed is not None and seed >= SEEDS_IF_SLOW
            (if_fast if conditional else needed).append(run | {"if_fast": conditional})
    for run in needed + if_fast:
        if (row := done.get(run_key(run))) is not None:
            study.add_trial(optuna.trial.create_trial(value=row["accuracy"], user_attrs={RUN_ATTR: run, ROW_ATTR: row}))
        else:
            study.enqueue_trial({}, user_attrs={RUN_ATTR: run})
    study.set_user_attr(HASHES_ATTR, {name: params_hash(params.model(name), without_seed=True) for name in names})
    study.set_user_attr(PLAN_ATTR, len(needed) + len(if_fast))


def run_trial(study: Any, trial: Any, params: Any, runs_path: Path, digest: str) -> float:
    import optuna

    from mnist_pipeline.sweep.study import WORKER_ATTR, worker_name

    if (run := trial.user_attrs.get(RUN_ATTR)) is None:
        raise optuna.TrialPruned("no run left")  # another worker took the last one as this one asked
    trial.set_user_attr(WORKER_ATTR, worker_name())
    name, seed, variant, model = run["model"], run["seed"], run["variant"], params.model(run["model"])
    if run["if_fast"]:  # the default run's fit time, from the study or this machine; not known yet: measure it
        fits = [row["fit_seconds"] for row in study_rows(study) if run_key(row) == (name, run["params_hash"], model.seed, "default")]
        if (fits[0] if fits else kept_fit(name, model, params) or 0.0) >= FAST_FIT_SECONDS:
            raise optuna.TrialPruned(f"{name}: a fit takes {FAST_FIT_SECONDS:.0f} s or more, so {SEEDS_IF_SLOW} seeds")
    if (row := local_rows(runs_path, digest).get(run_key(run))) is None:
        try:
            row = run_in_child(name, seed, variant, runs_path, False)
        except BaseException:
            requeue(study, trial)  # failed or interrupted: the next worker retries it
            raise
    trial.set_user_attr(ROW_ATTR, row)
    log.info("%s seed %s (%s): accuracy %.4f, fit %.1f s", name, seed, variant, row["accuracy"], row["fit_seconds"])
    return float(row["accuracy"])


def work(study: Any, params: Any, runs_path: Path, digest: str) -> None:
    """Take queued runs until none is queued or running (a dead worker's run comes back to the queue)."""
    import optuna
    from optuna.trial import TrialState

    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # requeue()s each
        if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            study.optimize(lambda trial: run_trial(study, trial, params, runs_path, digest), n_trials=1)  # with the heartbeat
        elif study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            time.sleep(params.sweep.heartbeat_s)  # the last runs, going elsewhere: back here if their worker dies
        else:
            return


def merge_study_rows(study: Any, runs_path: Path) -> int:
    """Append the study's rows the runs file lacks: one per (model, params, seed, variant, test sets)."""
    import fcntl

    runs_path.parent.mkdir(parents=True, exist_ok=True)
    with open(runs_path, "a", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the workers of one machine merge one at a time
        seen = {(*run_key(row), row.get("testsets")) for row in read_runs(runs_path)}
        new = {(*run_key(row), row.get("testsets")): row for row in study_rows(study)}
        for key in new.keys() - seen:
            append_run(runs_path, new[key])
    return len(new.keys() - seen)


def serialized(storage: Any) -> Any:
    """SQLite: each transaction takes the write lock first. Optuna pops a queued trial by reading, then writing RUNNING;
    PostgreSQL locks the row, but pysqlite begins only at the write, so two workers could pop the same run."""
    from sqlalchemy import event

    if storage.engine.dialect.name == "sqlite":
        event.listen(storage.engine, "connect", lambda connection, _: setattr(connection, "isolation_level", None))
        event.listen(storage.engine, "begin", lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE"))
        storage.engine.dispose()  # the connections opened so far begin the old way
    return storage


def campaign(args: argparse.Namespace, params: Any, runs_path: Path) -> None:
    """Start or join the campaign ``args.study``, run its runs until none is left, merge its rows into the runs file."""
    from mnist_pipeline.data.testsets import manifest_digest
    from mnist_pipeline.sweep import study as sweep_study
    from mnist_pipeline.sweep import storage as sweep_storage

    url = sweep_storage.storage_url(args.storage)
    settings = params.sweep.model_copy(update={"study_name": args.study})  # the sweeps' heartbeat_s and grace_s
    storage = serialized(sweep_storage.open_storage(url, settings, stale_trial_callback=requeue))
    if args.summarize_only:
        try:
            study = sweep_study.load_study(storage, url, settings)
        except sweep_storage.StudyStorageError:
            raise sweep_storage.StudyStorageError(f"{sweep_storage.describe_storage(url)} has no campaign {args.study!r}") from None
    else:
        digest = manifest_digest(Path(params.paths.testsets_dir))
        study, created = sweep_study.create_study(storage, url, settings)
        if created:
            plan_campaign(study, args.models or list(params.scored), params, args.seeds, args.variants_only, local_rows(runs_path, digest))
        elif sweep_storage.wait_for_user_attr(study, PLAN_ATTR, timeout=120) is None:
            raise PipelineError(f"campaign {args.study!r} has no plan (its creator stopped while queueing it); use another --study name")
        mine = {name: params_hash(model, without_seed=True) for name, model in params.scored.items()}
        if differ := sorted(name for name, value in study.user_attrs[HASHES_ATTR].items() if mine.get(name) != value):
            raise PipelineError(f"campaign {args.study!r} was planned with other params for {differ}; use its params.yaml, or another --study")
        log.info("joined campaign %r in %s: %s", args.study, sweep_storage.describe_storage(url), sweep_study.describe_counts(study))
        work(study, params, runs_path, digest)
    log.info("%d rows of campaign %r merged into %s", merge_study_rows(study, runs_path), args.study, runs_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None, help="default: every model in params.yaml")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per model (default: 20 if a fit < 30 s, else 10)")
    parser.add_argument("--summarize-only", action="store_true", help="only rebuild noise.json from the runs file")
    parser.add_argument("--variants-only", action="store_true", help="only the default seed under every numeric variant")
    parser.add_argument("--train-only", action="store_true", help="train and keep the models, score nothing (score later)")
    parser.add_argument("--no-variants", action="store_true", help="the default seed under the default numerics only: no same-seed spread")
    parser.add_argument("--study", nargs="?", const=CAMPAIGN_STUDY, metavar="NAME", help=f"share the campaign NAME (default {CAMPAIGN_STUDY}) with other workers")
    parser.add_argument("--storage", metavar="URL", help="the study's database (default: $MNIST_SWEEP_STORAGE, "
                        "else sqlite:///mlruns/optuna.db); a URL with a password belongs in MNIST_SWEEP_STORAGE")
    parser.add_argument("--one", nargs=3, metavar=("MODEL", "SEED", "VARIANT"), help=argparse.SUPPRESS)  # the child of run_in_child
    args = parser.parse_args(argv)
    if args.no_variants:
        PLANNED_VARIANTS[:], PAIRED_VARIANTS[:] = ["default"], []
    if args.study and args.train_only:
        parser.error("--train-only does not combine with --study")
    if args.storage and not args.study:
        parser.error("--storage needs --study")
    configure_logging()
    params = load_params()
    runs_path, out_path = Path(params.paths.noise_runs), Path(params.paths.noise_model)
    if args.one:
        name, seed_text, variant = args.one
        seed = None if seed_text == "none" else int(seed_text)
        if args.train_only:
            trained(name, params.model(name), params.paths, seed, variant, params)
        else:
            append_run(runs_path, run_once(name, params.model(name), params.paths, params.evaluate, seed, variant, params))
        return 0
    started = time.perf_counter()
    try:
        for name in args.models or []:
            params.model(name)
        if args.study:
            campaign(args, params, runs_path)
        elif not args.summarize_only:
            names = args.models or list(params.scored)
            measure(names, params, runs_path, args.seeds, args.variants_only, args.train_only)
        if args.train_only:
            log.info("trained models kept under %s (%.0f s); score them with a run without --train-only", MODELS_CACHE, time.perf_counter() - started)
            return 0
        write_summary(params, runs_path, out_path)
    except PipelineError as exc:
        log.error("%s", exc)
        return 2
    log.info("noise model written to %s (%.0f s)", out_path, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
