"""A sweep's logic: a trial's params from the space, the objective on loaded arrays, its MLflow run, the best params.

The objective is a function of arrays that are already loaded (``make_objective``): it samples
the trial's values, validates them through the model type's own schema, fits with the
project's ``training.fit``, reports each epoch's ``val_accuracy`` to Optuna (which may prune the
trial) and returns the last epoch's ``val_accuracy``.

Each trial is an MLflow run (``mlflow_trial_run``), nested under the sweep's parent run, named
``trial-<number>``: params are the sampled values, metrics the per-epoch curve (and
``objective``, the value Optuna got, for complete trials), tags the study, the trial number and
Optuna's final state (``optuna.state``: COMPLETE, PRUNED or FAIL). The run's id is the trial's
user attr ``mlflow_run_id``, so when a worker dies mid-trial, the worker that marks the trial
FAIL (Optuna's heartbeat) also closes its run (``close_dead_trial_run``): no run stays RUNNING.

This does what optuna-integration's ``MLflowCallback`` + ``track_in_mlflow`` would, without
their two problems here: the callback is deprecated (Optuna 4.9, to be removed in 6.0), and it
nests a trial under the *active* run, so every worker, on every machine, would have to reopen
the parent run and would mark it finished when it stops, while the others still run.
MLflow's ``start_run(parent_run_id=...)`` nests without reopening anything.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from mnist_pipeline import training
from mnist_pipeline.errors import PipelineError
from mnist_pipeline.models.base import EpochObserver
from mnist_pipeline.sweep.params import Dimension, PrunerParams, SweepParams, with_values
from mnist_pipeline.sweep.storage import StudyStorageError, describe_storage
from mnist_pipeline.tracking.runs import close_as_killed, process_tags

log = logging.getLogger(__name__)

OBJECTIVE = "val_accuracy"  # maximised; the last epoch's, so it scores the model the settings give
DIRECTION = "maximize"
RUN_ID_ATTR = "mlflow_run_id"  # trial user attr: the trial's MLflow run
PARENT_RUN_ATTR = "mlflow_parent_run_id"  # study user attr: the sweep's parent run, for every worker
MODEL_ATTR = "model"  # study user attr: which model the study sweeps (a study is one model's)
WORKER_ATTR = "worker"  # trial user attr: host:pid of the worker that runs it
STATE_TAG = "optuna.state"


# -- the study ------------------------------------------------------------------------------------

def load_study(storage: Any, url: str, sweep: SweepParams) -> Any:
    """The existing study ``sweep.study_name``; ``StudyStorageError`` when there is none (create it first)."""
    import optuna

    try:
        return optuna.load_study(study_name=sweep.study_name, storage=storage, sampler=make_sampler(), pruner=make_pruner(sweep.pruner))
    except KeyError:
        names = sorted(optuna.get_all_study_names(storage))
        raise StudyStorageError(
            f"the sweep's study storage ({describe_storage(url)}) has no study {sweep.study_name!r} "
            f"(it has {names or 'none'}); create it first: mnist-sweep create"
        ) from None


def create_study(storage: Any, url: str, sweep: SweepParams) -> tuple[Any, bool]:
    """The study ``sweep.study_name``, and whether this call created it.

    Creating is the claim on what comes with a new study (its MLflow parent run): the storage
    keeps study names unique, so of two ``mnist-sweep create`` racing, exactly one creates it.
    """
    import optuna

    try:
        study = optuna.create_study(
            study_name=sweep.study_name, storage=storage, direction=DIRECTION, load_if_exists=False,
            sampler=make_sampler(), pruner=make_pruner(sweep.pruner),
        )
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        return load_study(storage, url, sweep), False


# -- sampling ------------------------------------------------------------------------------------


def suggest(trial: Any, space: dict[str, Dimension]) -> dict[str, Any]:
    """One value per swept key, asked of the trial (so Optuna records them as the trial's params)."""
    values: dict[str, Any] = {}
    for key, dimension in space.items():
        if dimension.kind == "categorical":
            values[key] = trial.suggest_categorical(key, dimension.choices)
        elif dimension.kind == "int":
            values[key] = trial.suggest_int(key, dimension.low, dimension.high, log=dimension.log)
        else:
            values[key] = trial.suggest_float(key, float(dimension.low), float(dimension.high), log=dimension.log)
    return values


def make_sampler() -> Any:
    """TPE; ``constant_liar`` keeps workers that ask at the same time from sampling the same point."""
    import optuna

    return optuna.samplers.TPESampler(constant_liar=True)


def make_pruner(params: PrunerParams) -> Any:
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=params.startup_trials, n_warmup_steps=params.warmup_epochs)


# -- the objective -------------------------------------------------------------------------------


def pruning_observer(trial: Any) -> EpochObserver:
    """Report each epoch's val_accuracy (step = epoch) and stop the fit when the pruner says so."""

    def observe(epoch: int, row: dict[str, float]) -> None:
        import optuna

        value = row.get(OBJECTIVE)
        if value is None:
            raise PipelineError(f"trial {trial.number}: the fit reported no {OBJECTIVE} (is validation_split 0?)")
        log.info("trial %d, epoch %d: %s %.4f", trial.number, epoch + 1, OBJECTIVE, value)
        trial.report(float(value), epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"{OBJECTIVE} {value:.4f} after epoch {epoch + 1} is below the median of earlier trials")

    return observe


class TrialRecorder:
    """What a trial records besides Optuna's own: nothing by default; MLflow in ``mlflow_trial_run``."""

    def epoch(self, epoch: int, row: dict[str, float]) -> None:
        pass

    def result(self, value: float, fit_result: Any) -> None:
        pass


TrackTrial = Callable[[Any, dict[str, Any]], contextlib.AbstractContextManager[TrialRecorder]]


@contextlib.contextmanager
def untracked(trial: Any, values: dict[str, Any]) -> Iterator[TrialRecorder]:
    yield TrialRecorder()


def make_objective(
    sweep: SweepParams,
    model_params: Any,
    inputs: np.ndarray,
    targets: np.ndarray,
    *,
    track: TrackTrial = untracked,
    fit: Callable[..., Any] | None = None,
    verbose: int = 0,
) -> Callable[[Any], float]:
    """The study's objective: ``trial -> last epoch's val_accuracy`` of ``sweep.model`` with the trial's values."""
    fit = fit or training.fit

    def objective(trial: Any) -> float:
        values = suggest(trial, sweep.space)
        params = with_values(sweep.model, model_params, values, source=f"trial {trial.number}")
        trial.set_user_attr(WORKER_ATTR, worker_name())
        log.info("trial %d: %s", trial.number, ", ".join(f"{key}={value!r}" for key, value in values.items()))
        with track(trial, values) as recorder:
            result = fit(sweep.model, params, inputs, targets, observers=[recorder.epoch, pruning_observer(trial)], verbose=verbose)
            value = final_value(trial, result)
            recorder.result(value, result)
        return value

    return objective


def worker_name() -> str:
    return f"{platform.node()}:{os.getpid()}"


def final_value(trial: Any, result: Any) -> float:
    scores = [row[OBJECTIVE] for row in result.history if OBJECTIVE in row]
    if not scores or not math.isfinite(scores[-1]):
        raise PipelineError(f"trial {trial.number}: no finite {OBJECTIVE} at the last epoch ({scores[-1:] or 'none'})")
    return float(scores[-1])


# -- MLflow: the trial runs ----------------------------------------------------------------------


@dataclass(frozen=True)
class SweepRun:
    """Where a worker's trial runs go: the experiment, and the sweep's parent run."""

    experiment_id: str
    parent_run_id: str
    study_name: str
    model: str


class MlflowRecorder(TrialRecorder):
    def epoch(self, epoch: int, row: dict[str, float]) -> None:
        import mlflow

        mlflow.log_metrics(row, step=epoch)

    def result(self, value: float, fit_result: Any) -> None:
        import mlflow

        mlflow.log_metrics({"objective": value, "fit_seconds": fit_result.fit_seconds, "epochs_run": float(fit_result.epochs)})


def mlflow_trial_run(sweep_run: SweepRun) -> TrackTrial:
    """``track`` for ``make_objective``: each trial a run nested under the parent, always left in a terminal state."""

    @contextlib.contextmanager
    def track(trial: Any, values: dict[str, Any]) -> Iterator[TrialRecorder]:
        import mlflow
        import optuna

        tags = process_tags() | {
            "sweep.study": sweep_run.study_name,
            "sweep.model": sweep_run.model,
            "sweep.trial": str(trial.number),
            STATE_TAG: "RUNNING",
        }
        run = mlflow.start_run(
            run_name=f"trial-{trial.number}", experiment_id=sweep_run.experiment_id,
            parent_run_id=sweep_run.parent_run_id, tags=tags,
        )
        state, status = "FAIL", "FAILED"
        try:
            # Whoever finds this trial's worker dead closes this run (close_dead_trial_run).
            trial.set_user_attr(RUN_ID_ATTR, run.info.run_id)
            mlflow.log_params({key: "null" if value is None else value for key, value in values.items()})
            yield MlflowRecorder()
            state, status = "COMPLETE", "FINISHED"
        except optuna.TrialPruned:
            state, status = "PRUNED", "FINISHED"
            raise
        except (KeyboardInterrupt, SystemExit):
            status = "KILLED"
            raise
        finally:
            try:
                mlflow.set_tag(STATE_TAG, state)
            finally:
                mlflow.end_run(status=status)

    return track


def close_dead_trial_run(study: Any, trial: Any) -> None:
    """Optuna's stale-trial callback: the trial's worker stopped sending heartbeats, so close its MLflow run.

    Runs in the worker that noticed (Optuna marked the trial FAIL just before); MLflow must
    already point at the store the trial's run is in.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    run_id = trial.user_attrs.get(RUN_ID_ATTR)
    log.warning(
        "trial %d: its worker sent no heartbeat within the grace period (killed, or its machine is gone); "
        "marked FAIL%s", trial.number, f", closing its MLflow run {run_id} as KILLED" if run_id else "",
    )
    if not run_id:
        return
    client = MlflowClient()
    try:
        if client.get_run(run_id).info.status != "RUNNING":
            return
        client.set_tag(run_id, STATE_TAG, "FAIL")
        close_as_killed(client, run_id, "its sweep worker stopped sending heartbeats; closed by another worker")
    except MlflowException as exc:
        log.warning("trial %d: could not close MLflow run %s: %s", trial.number, run_id, exc.message)


# -- the result ----------------------------------------------------------------------------------


def trial_counts(study: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def describe_counts(study: Any) -> str:
    """``"3 complete, 2 pruned"``: the study's trials by state."""
    return ", ".join(f"{count} {state.lower()}" for state, count in sorted(trial_counts(study).items())) or "no trials"


def best_trial(study: Any) -> Any:
    """The complete trial with the highest value; ``PipelineError`` when none has completed."""
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise PipelineError(
            f"study {study.study_name!r} has no complete trial yet ({describe_counts(study)}); run `mnist-sweep worker`"
        )
    return study.best_trial


def describe_best(study: Any, model: str) -> str:
    """The best trial as lines of ``models.<model>.<key>: <value>``, with its score and the study's trial counts."""
    trial = best_trial(study)
    lines = [f"# study {study.study_name}: best trial {trial.number}, {OBJECTIVE} {trial.value:.4f} ({describe_counts(study)})"]
    lines += [f"models.{model}.{key}: {value!r}" for key, value in trial.params.items()]
    return "\n".join(lines)
