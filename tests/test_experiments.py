"""DVC experiments on the smoke project: worse results are kept, and every run stays tracked.

`dvc exp run` in the workspace, `--temp`, and queued experiments run by `dvc queue start -j 2`
(stages in throwaway copies under .dvc/tmp/exps/, two at a time against one SQLite store).
Marked slow: each experiment retrains a model and reruns the report and the gate.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import commit_all, dvc, run_cmd

pytestmark = pytest.mark.slow


def _client(project: Path):
    from mlflow import MlflowClient

    from mnist_pipeline.tracking.store import resolve_tracking_target

    return MlflowClient(tracking_uri=resolve_tracking_target({}, project).tracking_uri)


def _runs(project: Path, filter_string: str = "") -> list:
    client = _client(project)
    experiment = client.get_experiment_by_name("mnist")
    return client.search_runs([experiment.experiment_id], filter_string=filter_string, max_results=1000)


def _experiments(project: Path, env) -> dict[str, dict]:
    """Experiment name -> its metrics files, from `dvc exp show --json`."""
    shown = json.loads(dvc(project, "exp", "show", "--json", env=env).stdout)
    found = {}
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            for revision in experiment.get("revs") or []:
                data = revision.get("data") or {}
                found[revision.get("name") or experiment.get("name")] = data.get("metrics", {})
    return found


def test_a_worse_experiment_is_recorded_with_its_verdict(smoke_project):
    project, env, _ = smoke_project
    commit_all(project, "baseline")
    result = dvc(
        project, "exp", "run", "-n", "mlp1ep", "-S", "models.mlp.epochs=1", "-S", "models.mlp.optimizer.learning_rate=1e-6",
        env=env, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    experiments = _experiments(project, env)
    assert "mlp1ep" in experiments, experiments
    verdict = experiments["mlp1ep"]["reports/gate.json"]["data"]
    assert verdict["passed"] is False and verdict["verdict"]["mlp"] == "fail: regression"
    # Its runs are tracked and say which experiment they belong to.
    (training,) = _runs(project, "tags.`dvc.experiment` = 'mlp1ep' and tags.`model.name` = 'mlp' and attributes.run_name = 'mlp'")
    assert training.info.status == "FINISHED" and training.data.tags["dvc.experiment_baseline"]
    # The experiment's results are in the workspace: what `make run` enforces fails, naming mlp.
    enforced = run_cmd([sys.executable, "pipeline/gate.py", "--enforce"], cwd=project, env=env, check=False)
    assert enforced.returncode == 1 and "gate FAILED: mlp accuracy" in enforced.stderr


def _queue_diagnostics(project: Path, env, names: list[str]) -> str:
    """What a stuck or failed queue leaves behind: its status, each experiment's log, the workers' logs."""
    parts = [dvc(project, "queue", "status", env=env, check=False).stdout]
    for name in names:
        parts.append(f"--- dvc queue logs {name}\n" + dvc(project, "queue", "logs", name, env=env, check=False).stdout[-3000:])
    for log_file in sorted((project / ".dvc" / "tmp" / "exps" / "celery").glob("*.out")):
        parts.append(f"--- {log_file.relative_to(project)}\n" + log_file.read_text(errors="replace")[-3000:])
    return "\n".join(parts)


def _wait_for_queue(project: Path, env, names: list[str], timeout: float = 1200) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = dvc(project, "queue", "status", env=env).stdout
        done = sum(line.split()[-1] in ("Success", "Failed") for line in status.splitlines() if line[:1].isalnum() and "Status" not in line)
        if done >= len(names) and "Running" not in status and "Queued" not in status:
            return status
        # Each `dvc queue status` is a process start and DVC's imports: polled often, it would
        # take a good share of the two cores from the experiments it waits for.
        time.sleep(10)
    pytest.fail(f"the queue did not finish in {timeout} s:\n{_queue_diagnostics(project, env, names)}")


def test_queued_experiments_run_two_at_a_time_keep_every_run_in_the_main_store(smoke_project):
    project, env, _ = smoke_project
    commit_all(project, "baseline")
    before = {run.info.run_id for run in _runs(project)}
    names = [f"nb{index}" for index in range(4)]
    for name, smoothing in zip(names, ("0.1", "0.01", "0.001", "0.0001")):
        dvc(project, "exp", "run", "--queue", "-n", name, "-S", f"models.gaussian_nb.var_smoothing={smoothing}", env=env)
    try:
        # The workers DVC starts keep the standard output they inherit open until the queue is
        # empty, so `queue start` writes to a file: through a pipe, the call would last as long
        # as the whole queue.
        with open(project.parent / "queue-start.log", "w") as start_log:
            started = subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "-j", "2"], cwd=project, env=env,
                                     stdout=start_log, stderr=subprocess.STDOUT, timeout=120)
        assert started.returncode == 0, (project.parent / "queue-start.log").read_text()
        status = _wait_for_queue(project, env, names)
    finally:
        dvc(project, "queue", "stop", "--kill", env=env, check=False)
    assert "Failed" not in status, _queue_diagnostics(project, env, names)
    logs = "".join(dvc(project, "queue", "logs", name, env=env, check=False).stdout for name in names)
    assert "database is locked" not in logs

    # Every experiment's training and evaluation landed in the main repository's store, none lost
    # with the throwaway workspace it ran in.
    new = [run for run in _runs(project) if run.info.run_id not in before]
    for name in names:
        mine = [run for run in new if run.data.tags.get("dvc.experiment") == name]
        by_name = {run.info.run_name: run for run in mine}
        # gaussian_nb is a member of the smoke ensemble: it is rebuilt and scored again too.
        assert set(by_name) == {"gaussian_nb", "gaussian_nb-evaluation", "ensemble", "ensemble-evaluation", "report"}, (name, sorted(by_name))
        assert all(run.info.status == "FINISHED" for run in mine)
        assert by_name["gaussian_nb-evaluation"].data.tags["mlflow.parentRunId"] == by_name["gaussian_nb"].info.run_id
        assert "test_accuracy" in by_name["gaussian_nb-evaluation"].data.metrics
    assert set(_experiments(project, env)) >= set(names)


def test_a_temp_experiment_is_tracked_in_the_main_store(smoke_project):
    project, env, _ = smoke_project
    commit_all(project, "baseline")
    dvc(project, "exp", "run", "--temp", "-n", "tempnb", "-S", "models.gaussian_nb.var_smoothing=0.5", env=env)
    mine = _runs(project, "tags.`dvc.experiment` = 'tempnb'")
    assert {run.info.run_name for run in mine} == {"gaussian_nb", "gaussian_nb-evaluation", "ensemble", "ensemble-evaluation", "report"}
    assert all(run.info.status == "FINISHED" for run in mine)


def test_the_best_recipe_trains_as_an_experiment_through_every_stage(smoke_project):
    """`make best`, on the smoke project's slice for one epoch: the recipe becomes models.best in a DVC experiment."""
    project, env, _ = smoke_project
    commit_all(project, "baseline")
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert "python -m mnist_pipeline.recipes best --seed $(SEED)" in makefile and 'dvc exp run --name best-seed$(SEED) -S "$$override"' in makefile
    override = run_cmd([sys.executable, "-m", "mnist_pipeline.recipes", "best", "--seed", "0", "--set", "epochs=1"], cwd=project, env=env).stdout.strip()
    result = dvc(project, "exp", "run", "--name", "best-seed0", "-S", override, env=env, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    ran = {line.split("'")[1] for line in result.stdout.splitlines() if line.startswith("Running stage")}
    assert {"train@best", "evaluate@best", "report", "gate", "register"} <= ran and not {"train@mlp", "ensemble"} & ran, ran
    config = json.loads((project / "models/best/model/config.json").read_text())
    assert config["type"] == "keras_convnet" and config["epochs"] == 1 and config["parameter_counts"]["total"] > 300_000
    assert config["params"]["schedule"] == {"name": "exponential", "warmup_fraction": 0.25, "final_fraction": 0.01, "decay_per_epoch": 0.95}
    best = _experiments(project, env)["best-seed0"]
    assert 0 <= best["metrics/best.json"]["data"]["accuracy"] <= 1
    assert "best" in {row["model"] for row in json.loads((project / "reports/summary.json").read_text())["models"]}
