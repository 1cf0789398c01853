"""``mnist-sweep``: an Optuna study over one model's settings (params.yaml ``sweep``), joined by any number of workers.

    mnist-sweep create                       the study (if absent) and its MLflow parent run
    mnist-sweep worker [--trials N]          join the study and run N trials (default sweep.trials_per_worker)
    mnist-sweep best [--apply]               print the best params; --apply writes them into params.yaml
    mnist-sweep run [--workers N] [--trials N] [--apply]   create, N local workers, best (`make sweep`)

Options before the command: ``--params FILE`` (default params.yaml), ``--storage URL``. The study
lives in an Optuna RDB storage: ``--storage``, else ``MNIST_SWEEP_STORAGE`` (a team's
``postgresql+psycopg://user:password@host:5432/optuna``), else the SQLite file
``mlruns/optuna.db`` under the project root. Workers on other machines join by pointing at the
same storage and at the same MLflow tracking store (``MLFLOW_TRACKING_URI``). The URL is shown
only with its password masked. A bad setting, an unreachable database or a missing study is
one error line and exit status 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.atomic import write_text
from mnist_pipeline.config import load_params, parse_params
from mnist_pipeline.data.arrays import load_split
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.models import registry
from mnist_pipeline.stage import EXIT_INTERRUPTED, EXIT_USER_ERROR, configure_logging, interrupt_on_sigterm, user_error
from mnist_pipeline.sweep import params as sweep_params
from mnist_pipeline.sweep import storage as sweep_storage
from mnist_pipeline.sweep import study as sweep_study
from mnist_pipeline.sweep.params import check_space
from mnist_pipeline.sweep.storage import STORAGE_ENV, masked_url, storage_url
from mnist_pipeline.sweep.study import OBJECTIVE, PARENT_RUN_ATTR, worker_name
from mnist_pipeline.tracking.provenance import provenance_tags
from mnist_pipeline.tracking.store import configure_tracking
from mnist_pipeline.training import targets_for
from mnist_pipeline.yaml_file import parse_yaml

log = logging.getLogger("mnist_pipeline.sweep")

WORKER_LABEL_ENV = "MNIST_SWEEP_WORKER"  # how `run` names its workers in their log lines
# How long a `create` that finds the study just made waits for its maker's parent run (the maker
# imports MLflow and may migrate a new store first).
PARENT_RUN_WAIT_S = 120.0


# -- commands ------------------------------------------------------------------------------------


def _load(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """The params, the sweep's model params (its space checked against them) and the storage URL."""
    params = load_params(args.params)
    model_params = check_space(params.sweep, params.models)
    return params, model_params, storage_url(args.storage)


def create(args: argparse.Namespace) -> None:
    """Create the study if absent, and its MLflow parent run (its id a study user attr, so every worker finds it)."""
    params, _, url = _load(args)
    sweep = params.sweep
    storage = sweep_storage.open_storage(url, sweep)
    study, created = sweep_study.create_study(storage, url, sweep)
    parent = study.user_attrs.get(sweep_study.PARENT_RUN_ATTR)
    if parent is None and not created:
        # Another `create` made the study a moment ago and is making its parent run: two parent
        # runs would split the trials' nesting, so use that one.
        log.info("study %r is being created by another `mnist-sweep create`; waiting for its MLflow parent run", sweep.study_name)
        parent = sweep_storage.wait_for_user_attr(study, sweep_study.PARENT_RUN_ATTR, timeout=PARENT_RUN_WAIT_S)
        if parent is None:
            log.warning(
                "study %r still has no MLflow parent run after %.0f s: the `create` that made it stopped midway; making it here",
                sweep.study_name, PARENT_RUN_WAIT_S,
            )
    swept = study.user_attrs.get(sweep_study.MODEL_ATTR)
    if swept not in (None, sweep.model):
        raise PipelineError(
            f"study {sweep.study_name!r} sweeps models.{swept}, not models.{sweep.model}; give the sweep another study_name"
        )
    if parent is None:
        experiment_id = configure_tracking()
        parent = _create_parent_run(experiment_id, sweep, url)
        study.set_user_attr(sweep_study.MODEL_ATTR, sweep.model)
        study.set_user_attr("space", _space(sweep))
        study.set_user_attr(sweep_study.PARENT_RUN_ATTR, parent)
        log.info("created study %r in %s; MLflow parent run %s", sweep.study_name, sweep_storage.describe_storage(url), parent)
    else:
        log.info(
            "study %r already in %s (%d trials so far); MLflow parent run %s",
            sweep.study_name, sweep_storage.describe_storage(url), len(study.trials), parent,
        )


def _create_parent_run(experiment_id: str, sweep: Any, url: str) -> str:
    """The sweep's MLflow run, which every trial's run is nested under; closed at once (no worker owns it)."""
    from mlflow import MlflowClient
    from mlflow.entities import Param


    client = MlflowClient()
    tags = provenance_tags("mnist-sweep") | {
        "sweep.study": sweep.study_name,
        "sweep.model": sweep.model,
        "sweep.storage": masked_url(url),  # never the password
    }
    run = client.create_run(experiment_id, run_name=f"sweep-{sweep.study_name}", tags=tags)
    settings = {
        "model": sweep.model,
        "train_subset": "null" if sweep.train_subset is None else sweep.train_subset,
        "trials_per_worker": sweep.trials_per_worker,
        "heartbeat_s": sweep.heartbeat_s,
        "grace_s": sweep.grace_period,
        "pruner.startup_trials": sweep.pruner.startup_trials,
        "pruner.warmup_epochs": sweep.pruner.warmup_epochs,
        **{f"space.{key}": str(dimension) for key, dimension in _space(sweep).items()},
    }
    client.log_batch(run.info.run_id, params=[Param(f"sweep.{key}", str(value)) for key, value in settings.items()])
    client.set_terminated(run.info.run_id, status="FINISHED")
    return run.info.run_id


def worker(args: argparse.Namespace) -> None:
    """Join the existing study and run ``--trials`` trials (default ``sweep.trials_per_worker``)."""
    import optuna

    params, model_params, url = _load(args)
    sweep = params.sweep
    storage = sweep_storage.open_storage(url, sweep, stale_trial_callback=sweep_study.close_dead_trial_run)
    study = sweep_study.load_study(storage, url, sweep)
    swept = study.user_attrs.get(sweep_study.MODEL_ATTR, sweep.model)
    parent = study.user_attrs.get(sweep_study.PARENT_RUN_ATTR)
    if swept != sweep.model or parent is None:
        raise PipelineError(
            f"study {sweep.study_name!r} was not made by `mnist-sweep create` for models.{sweep.model} "
            f"(it sweeps {swept!r}, parent run {parent!r}); give the sweep another study_name"
        )
    if study.user_attrs.get("space", _space(sweep)) != _space(sweep):
        log.warning(
            "this worker's sweep.space differs from the one study %r was created with (%s): its trials "
            "explore another space; use the same params.yaml on every worker", sweep.study_name, study.user_attrs["space"],
        )
    experiment_id = configure_tracking()
    _check_parent_run(parent)

    representation = registry.input_representation(model_params)
    inputs, labels = load_split(params.paths, "train", representation)
    targets, _ = load_split(params.paths, "train", targets_for(model_params))
    n = inputs.shape[0] if sweep.train_subset is None else min(sweep.train_subset, inputs.shape[0])
    if sweep.train_subset is not None and n < sweep.train_subset:
        log.warning("sweep.train_subset is %d but %s holds only %d digits; using them all", sweep.train_subset, params.paths.processed_train_dir, n)
    check_space(sweep, params.models, n_examples=n)
    inputs, targets = np.asarray(inputs[:n]), np.asarray(targets[:n])

    trials = args.trials or sweep.trials_per_worker
    log.info("joined study %r in %s: %d trials of models.%s on %d digits", sweep.study_name, sweep_storage.describe_storage(url), trials, sweep.model, n)
    run_for = sweep_study.SweepRun(experiment_id, parent, sweep.study_name, sweep.model)
    objective = sweep_study.make_objective(sweep, model_params, inputs, targets, track=sweep_study.mlflow_trial_run(run_for))
    study.optimize(objective, n_trials=trials, gc_after_trial=True)
    # Optuna checks for dead workers' trials only when a trial starts; check once more at the end.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    log.info("done: %d trials; the study now has %s", trials, sweep_study.describe_counts(study))


def _space(sweep: Any) -> dict[str, Any]:
    return {key: dimension.model_dump(exclude_defaults=True) for key, dimension in sweep.space.items()}


def _check_parent_run(run_id: str) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import get_tracking_uri

    try:
        MlflowClient().get_run(run_id)
    except MlflowException:
        raise PipelineError(
            f"the sweep's MLflow parent run {run_id} is not in the tracking store {get_tracking_uri()}: "
            "workers must share the tracking store the study was created with (MLFLOW_TRACKING_URI)"
        ) from None


def best(args: argparse.Namespace) -> None:
    """Print the best trial's params (stdout); with ``--apply``, write them into the params file."""
    params, _, url = _load(args)
    sweep = params.sweep
    study = sweep_study.load_study(sweep_storage.open_storage(url, sweep), url, sweep)
    model = study.user_attrs.get(sweep_study.MODEL_ATTR, sweep.model)
    trial = sweep_study.best_trial(study)
    sys.stdout.write(sweep_study.describe_best(study, model) + "\n")
    sys.stdout.flush()
    _record_best(study, trial)
    if args.apply:
        path = Path(args.params)
        updated = sweep_params.apply_values(path.read_text(encoding="utf-8"), model, trial.params)
        parse_params(parse_yaml(updated, str(path)), source=f"{path} with the sweep's best values")
        write_text(path, updated)
        log.info("wrote trial %d's values into %s (models.%s); `dvc repro` retrains it", trial.number, path, model)


def _record_best(study: Any, trial: Any) -> None:
    """The best trial so far, on the sweep's parent run (a metric and tags: its params are fixed at creation)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException


    parent = study.user_attrs.get(PARENT_RUN_ATTR)
    if parent is None:
        return
    try:
        configure_tracking()
    except PipelineError as exc:
        log.warning("could not record the best trial on MLflow parent run %s: %s", parent, exc)
        return
    client = MlflowClient()
    try:
        client.log_metric(parent, f"best_{OBJECTIVE}", float(trial.value), step=len(study.trials))
        client.set_tag(parent, "sweep.best_trial", str(trial.number))
        for key, value in trial.params.items():
            client.set_tag(parent, f"sweep.best.{key}", repr(value))
    except MlflowException as exc:
        log.warning("could not record the best trial on MLflow parent run %s: %s", parent, exc.message)


def run(args: argparse.Namespace) -> None:
    """``create``, then ``--workers`` local worker processes, then ``best``."""
    create(args)
    # The URL reaches the workers through their environment, not their command line (ps shows that).
    env = dict(os.environ) | {STORAGE_ENV: storage_url(args.storage)}
    command = [sys.executable, "-m", "mnist_pipeline.sweep.cli", "--params", str(args.params), "worker"]
    if args.trials:
        command += ["--trials", str(args.trials)]
    workers = [subprocess.Popen(command, env=env | {WORKER_LABEL_ENV: f"worker-{index}"}) for index in range(1, args.workers + 1)]
    log.info("started %d workers (pids %s)", len(workers), ", ".join(str(process.pid) for process in workers))
    try:
        codes = [process.wait() for process in workers]
    except KeyboardInterrupt:
        for process in workers:
            if process.poll() is None:
                process.terminate()  # each marks its running trial FAIL and its MLflow run KILLED
        for process in workers:
            process.wait()
        raise
    failed = [f"worker-{index} (status {code})" for index, code in enumerate(codes, start=1) if code != 0]
    if failed:
        raise PipelineError(f"{', '.join(failed)} failed; see their log lines above. The study keeps every finished trial")
    best(args)


# -- entry ---------------------------------------------------------------------------------------


def _configure_logging(command: str) -> None:
    import optuna

    configure_logging()

    label = os.environ.get(WORKER_LABEL_ENV) or (worker_name() if command == "worker" else "")
    if label:
        formatter = logging.Formatter(f"%(asctime)s %(levelname)s [{label}] %(name)s: %(message)s", datefmt="%H:%M:%S")
        for handler in logging.getLogger().handlers:
            handler.setFormatter(formatter)
    # Optuna's trial lines through the same handler and format as ours.
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnist-sweep", description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", metavar="FILE", help="the params file (default params.yaml)")
    parser.add_argument("--storage", metavar="URL", help="the study's database (default: $MNIST_SWEEP_STORAGE, else sqlite:///mlruns/optuna.db); "
                        "a URL with a password belongs in MNIST_SWEEP_STORAGE, since other users can read command lines")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("create", help="create the study (if absent) and its MLflow parent run").set_defaults(func=create)
    joining = commands.add_parser("worker", help="join the study and run trials")
    joining.add_argument("--trials", type=int, metavar="N", help="trials this worker runs (default sweep.trials_per_worker)")
    joining.set_defaults(func=worker)
    showing = commands.add_parser("best", help="print the best trial's params")
    showing.add_argument("--apply", action="store_true", help="also write them into the params file (models.<model>)")
    showing.set_defaults(func=best)
    running = commands.add_parser("run", help="create, then local workers, then best")
    running.add_argument("--workers", type=int, default=2, metavar="N", help="worker processes on this machine (default 2)")
    running.add_argument("--trials", type=int, metavar="N", help="trials per worker (default sweep.trials_per_worker)")
    running.add_argument("--apply", action="store_true", help="write the best params into the params file")
    running.set_defaults(func=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("trials", "workers"):
        if getattr(args, name, None) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    _configure_logging(args.command)
    # `kill`, a scheduler stop: unwind like Ctrl-C, so the running trial is marked FAIL and its run KILLED.
    signal.signal(signal.SIGTERM, interrupt_on_sigterm)
    try:
        args.func(args)
    except KeyboardInterrupt:
        log.error("%s interrupted", args.command)
        return EXIT_INTERRUPTED
    except Exception as exc:
        message = user_error(exc)
        if message is None:
            raise  # a bug: keep the traceback
        log.error("%s failed: %s", args.command, message)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
