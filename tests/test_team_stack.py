"""The team stack for real (marker ``services``): PostgreSQL, the S3 bucket and the MLflow server that
``make services`` runs. ``.ci/run`` starts them, runs these, and stops them.

Each test keeps to its own MLflow experiment, registered-model names and bucket prefix, so it can
run beside ``make run`` on the same server without touching the team's runs or champion.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import (
    REPO_ROOT, commit_all, dvc, edit_params, keep_models, make_project, run_cmd, smoke_models, subprocess_env,
    wait_for_first_epoch,
)

pytestmark = pytest.mark.services


@pytest.fixture(scope="session")
def stack():
    """The running stack's settings; every service must answer (a failure names the service)."""
    from mnist_pipeline.services.settings import load_settings
    from mnist_pipeline.services.stack import check_all

    settings = load_settings(REPO_ROOT)
    problems = [problem for _, problem in check_all(settings) if problem]
    if problems:
        pytest.fail("the team stack is not healthy (`make services` starts it):\n  " + "\n  ".join(problems))
    return settings


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def isolate(params: dict, tag: str) -> None:
    """This test's own registered models, so the team's `mnist` champion is never touched."""
    params["registry"]["model_prefix"] = f"{tag}-"
    params["registry"]["registered_model"] = f"{tag}-mnist"


def client_env(stack, experiment: str, **extra: str) -> dict[str, str]:
    """A pipeline process's environment: the server's URI and nothing else of services.env.

    Artifacts are proxied, so clients need no S3 or database credentials, and get none here.
    """
    return subprocess_env(MLFLOW_TRACKING_URI=stack.tracking_uri, MLFLOW_EXPERIMENT_NAME=experiment, **extra)


def bucket_keys(stack, prefix: str) -> list[str]:
    from mnist_pipeline.services.stack import s3_client

    paginator = s3_client(stack).get_paginator("list_objects_v2")
    return [item["Key"] for page in paginator.paginate(Bucket=stack["MNIST_S3_BUCKET"], Prefix=prefix)
            for item in page.get("Contents", [])]


# ---------------------------------------------------------------------------------------------
# the pipeline against the server


def test_the_pipeline_tracks_into_postgres_and_the_bucket_and_models_load_back(stack, tmp_path):
    import mlflow
    import numpy as np
    import psycopg
    from mlflow import MlflowClient

    from conftest import synthetic_digits
    from mnist_pipeline.tracking.evaluation import RUN_SUFFIX

    tag = unique("t-pipeline")
    project = make_project(tmp_path)
    edit_params(project, smoke_models)
    # One scikit-learn model: the stack's part is the same for every framework, and it spares
    # two TensorFlow imports (the fault test below trains a Keras model through a server).
    edit_params(project, lambda params: keep_models(params, {"gaussian_nb": params["models"]["gaussian_nb"]}))
    edit_params(project, lambda params: isolate(params, tag))
    dvc(project, "repro", env=client_env(stack, tag, MNIST_MIRROR=str(tmp_path / "mirror")))

    client = MlflowClient(tracking_uri=stack.tracking_uri)
    experiment = client.get_experiment_by_name(tag)
    runs = client.search_runs([experiment.experiment_id])
    names = {run.info.run_name for run in runs}
    assert {"gaussian_nb", f"gaussian_nb{RUN_SUFFIX}", "report"} <= names, names
    assert {run.info.status for run in runs} == {"FINISHED"}

    # Every run is a row in the server's PostgreSQL database ...
    with psycopg.connect(host=stack.host, port=stack.port("MNIST_PG_PORT"), user=stack["MNIST_PG_USER"],
                         password=stack["PGPASSWORD"], dbname=stack["MNIST_PG_TRACKING_DB"]) as connection:
        stored = {row[0] for row in connection.execute(
            "SELECT run_uuid FROM runs WHERE experiment_id = %s", (int(experiment.experiment_id),))}
    assert stored == {run.info.run_id for run in runs}

    # ... and every artifact an object in the bucket, under the experiment's own prefix.
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    artifacts_prefix = stack["MNIST_MLFLOW_ARTIFACTS"].removeprefix(f"s3://{stack['MNIST_S3_BUCKET']}/")
    keys = bucket_keys(stack, f"{artifacts_prefix}/{experiment.experiment_id}/")
    assert any(key.endswith("MLmodel") for key in keys), keys[:20]
    assert any(key.endswith(".png") for key in keys), "plots go to the bucket too"
    for run in runs:
        assert any(f"/{run.info.run_id}/" in key for key in keys), f"run {run.info.run_name} has no artifact in the bucket"

    # The registry and aliases work on the server, and the champion loads back through it.
    champion = client.get_model_version_by_alias(f"{tag}-mnist", "champion")
    assert champion.tags["pipeline_model"] == "gaussian_nb"
    mlflow.set_tracking_uri(stack.tracking_uri)
    try:
        model = mlflow.pyfunc.load_model(f"models:/{tag}-mnist@champion")
    finally:
        mlflow.set_tracking_uri(None)
    images, labels = synthetic_digits(60, seed=11)
    predicted = model.predict(images)
    assert np.mean(predicted["digit"].to_numpy() == labels) > 0.5

    # No credential of the stack ever reaches a run's params or tags.
    secrets = {stack[key] for key in ("PGPASSWORD", "AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID")}
    for run in runs:
        recorded = " ".join([*run.data.params.values(), *run.data.tags.values()])
        assert not [secret for secret in secrets if secret in recorded], run.info.run_name


# ---------------------------------------------------------------------------------------------
# the DVC remote


def test_dvc_push_then_a_fresh_clone_pulls_and_reproduces_nothing(stack, tmp_path):
    """The data stages' outputs through the remote `storage` (.ci/run does the same with the whole pipeline)."""
    project = make_project(tmp_path)
    env = subprocess_env(MNIST_MIRROR=str(tmp_path / "mirror"))
    dvc(project, "repro", "preprocess", env=env)
    prefix = f"tests/{unique('dvc')}"
    # The same remote as .dvc/config, pointed at a prefix of its own in the bucket.
    dvc(project, "remote", "modify", "storage", "url", f"s3://{stack['MNIST_S3_BUCKET']}/{prefix}", env=env)
    commit_all(project, "the data, to share")
    remote_env = {**env, **{key: stack[key] for key in ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}}
    pushed = dvc(project, "push", env=remote_env).stdout
    count = re.search(r"(\d+) files? pushed", pushed)
    assert count and int(count.group(1)) > 0, pushed
    assert len(bucket_keys(stack, prefix + "/")) == int(count.group(1))

    clone = tmp_path / "clone"
    run_cmd(["git", "clone", "-q", str(project), str(clone)], cwd=tmp_path)
    assert not (clone / "data").exists()
    # No mirror at all for the clone: everything must come from the remote.
    clone_env = {**remote_env, "MNIST_MIRROR": str(tmp_path / "nowhere")}
    # (Only the data stages ran here: the models' stages have nothing to pull.)
    pulled = dvc(clone, "pull", "--with-deps", "preprocess", env=clone_env).stdout
    assert "data/processed/train" in pulled and "data/raw" in pulled, pulled
    status = json.loads(dvc(clone, "status", "--json", "--with-deps", "preprocess", env=clone_env).stdout)
    assert status == {}, status
    repro = dvc(clone, "repro", "preprocess", env=clone_env).stdout
    assert "Running stage" not in repro, repro


# ---------------------------------------------------------------------------------------------
# faults


@pytest.fixture
def spare_server(stack, tmp_path):
    """A second tracking server on the same PostgreSQL and bucket, on its own port: one a test may stop."""
    from mnist_pipeline.serving.server import free_port
    from mnist_pipeline.services.settings import Settings
    from mnist_pipeline.services.stack import TrackingServer

    values = dict(stack.values, MNIST_MLFLOW_PORT=str(free_port()), MNIST_MLFLOW_WORKERS="1")
    server = TrackingServer(Settings(values, tmp_path))
    (tmp_path / ".services").mkdir()
    yield server
    server.stop()


def test_a_server_stopped_mid_training_fails_the_stage_naming_it_then_repro_recovers(stack, spare_server, tmp_path):
    from mlflow import MlflowClient

    spare_server.start()
    tag = unique("t-fault")
    project = make_project(tmp_path)
    edit_params(project, smoke_models)
    edit_params(project, lambda params: isolate(params, tag))
    edit_params(project, lambda params: keep_models(params, {"mlp": params["models"]["mlp"] | {"epochs": 500, "batch_size": 16}}))
    env = subprocess_env(MLFLOW_TRACKING_URI=spare_server.url, MLFLOW_EXPERIMENT_NAME=tag,
                         MNIST_MIRROR=str(tmp_path / "mirror"))
    dvc(project, "repro", "preprocess", env=env)
    repro = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "train@mlp"], cwd=project, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    client = MlflowClient(tracking_uri=stack.tracking_uri)  # the same database, through the team's server
    try:
        experiment = wait_for_first_epoch(client, tag, repro, timeout=180)
        spare_server.stop()
        stopped = time.monotonic()
        output, _ = repro.communicate(timeout=120)
        waited = time.monotonic() - stopped
    finally:
        if repro.poll() is None:
            os.killpg(repro.pid, signal.SIGKILL)
    assert repro.returncode != 0, output
    assert waited < 60, f"the stage took {waited:.0f} s to give up"
    assert f"the MLflow tracking server at {spare_server.url} stopped answering" in output, output
    # Nothing was recorded as a success: no model, and DVC still sees the stage as to-do.
    assert not (project / "models" / "mlp" / "model").exists()
    assert "train@mlp" in json.loads(dvc(project, "status", "--json", env=env).stdout)
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "RUNNING"  # the server was gone when the stage tried to close it

    spare_server.start()
    edit_params(project, lambda params: params["models"]["mlp"].update({"epochs": 1, "batch_size": 32}))
    dvc(project, "repro", env=env)
    statuses = {found.info.run_id: found.info.status for found in client.search_runs([experiment.experiment_id])}
    assert "RUNNING" not in statuses.values(), statuses
    assert statuses[run.info.run_id] == "KILLED"


def _status_with(stack, tmp_path, **changes: str) -> subprocess.CompletedProcess:
    from dotenv import dotenv_values

    source = REPO_ROOT / "services.env"
    values = {**dotenv_values(source, interpolate=False), **changes}
    env_file = tmp_path / "services.env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return run_cmd([str(Path(sys.executable).with_name("mnist-services")), "status"], cwd=REPO_ROOT,
                   env=subprocess_env(MNIST_SERVICES_ENV=str(env_file)), check=False)


def test_a_wrong_database_password_names_postgresql(stack, tmp_path):
    result = _status_with(stack, tmp_path, PGPASSWORD="not-the-password")
    assert result.returncode == 1
    assert f"PostgreSQL at {stack.host}:{stack['MNIST_PG_PORT']} rejected the password of user {stack['MNIST_PG_USER']}" in result.stderr
    assert "not-the-password" not in result.stderr and stack["PGPASSWORD"] not in result.stderr
    assert "object store: healthy" in result.stderr


def test_an_unreachable_object_store_is_named(stack, tmp_path):
    from mnist_pipeline.serving.server import free_port

    port = free_port()
    result = _status_with(stack, tmp_path, MNIST_S3_PORT=str(port))
    assert result.returncode == 1
    assert f"object store (S3 at http://{stack.host}:{port}, bucket {stack['MNIST_S3_BUCKET']}) is not reachable" in result.stderr
    assert "PostgreSQL: healthy" in result.stderr


def test_a_server_whose_object_store_is_down_names_it(stack, spare_server, monkeypatch):
    """The stack's health check says the object store failed, and so does a client's artifact upload."""
    import mlflow

    from mnist_pipeline.serving.server import free_port
    from mnist_pipeline.services.settings import ServiceError
    from mnist_pipeline.services.daemon import wait_until
    from mnist_pipeline.services.stack import check_tracking_server
    from mnist_pipeline.tracking.store import describe_tracking_failure

    dead = f"http://{stack.host}:{free_port()}"
    # AWS_MAX_ATTEMPTS=1: the server gives up on the dead store at once instead of backing off.
    spare_server.settings.values.update(MLFLOW_S3_ENDPOINT_URL=dead, AWS_ENDPOINT_URL_S3=dead, AWS_MAX_ATTEMPTS="1")
    process = spare_server.daemon.spawn(spare_server.argv(), spare_server.environ())
    wait_until(lambda: requests_ok(f"{spare_server.url}/health"), spare_server.address, 120, spare_server.daemon.exited(process))
    with pytest.raises(ServiceError) as unhealthy:
        check_tracking_server(spare_server.url, stack["MNIST_MLFLOW_ARTIFACTS"])
    assert f"cannot write to {stack['MNIST_MLFLOW_ARTIFACTS']} (its object store)" in str(unhealthy.value)

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    mlflow.set_tracking_uri(spare_server.url)
    try:
        experiment = mlflow.set_experiment(unique("t-s3down"))
        with mlflow.start_run(experiment_id=experiment.experiment_id):
            with pytest.raises(Exception) as raised:
                mlflow.log_text("x", "probe.txt")
        message = describe_tracking_failure(raised.value)
    finally:
        mlflow.set_tracking_uri(None)
    assert message and spare_server.url in message and "artifact store" in message, (message, raised.value)


def requests_ok(url: str, method: str = "GET", **kwargs) -> str:
    """A ``wait_until`` check: the request answers HTTP 200."""
    import requests

    from mnist_pipeline.services.settings import ServiceError

    try:
        status = requests.request(method, url, timeout=5, **kwargs).status_code
    except requests.RequestException as error:
        raise ServiceError(f"{url} not answering yet: {error}") from None
    if status != 200:
        raise ServiceError(f"{url} answered HTTP {status}")
    return "ok"


# ---------------------------------------------------------------------------------------------
# security


def test_basic_auth_turns_away_a_wrong_password(tmp_path):
    """The README's way to expose a server: `--app-name basic-auth`; a wrong password gets 401."""
    import requests

    from mnist_pipeline.serving.server import free_port
    from mnist_pipeline.services.daemon import Daemon, wait_until
    from mnist_pipeline.services.stack import SERVER_ENV_DEFAULTS

    port = free_port()
    auth_config = tmp_path / "auth.ini"
    auth_config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path / 'auth.db'}\n"
        "admin_username = admin\nadmin_password = a-long-admin-password-1\nauthorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    daemon = Daemon("basic-auth", tmp_path)
    process = daemon.spawn(
        [sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--workers", "1",
         "--allowed-hosts", f"127.0.0.1:{port},localhost:{port}"],
        # The key that signs the UI's CSRF tokens; every replica of a server shares one.
        subprocess_env(MLFLOW_AUTH_CONFIG_PATH=str(auth_config), MLFLOW_FLASK_SERVER_SECRET_KEY=uuid.uuid4().hex,
                       **SERVER_ENV_DEFAULTS),
    )
    url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search"
    try:
        wait_until(lambda: requests_ok(url, "POST", json={"max_results": 1}, auth=("admin", "a-long-admin-password-1")),
                   "the basic-auth server", 120, daemon.exited(process))
        assert requests.post(url, json={"max_results": 1}, auth=("admin", "wrong"), timeout=5).status_code == 401
        assert requests.post(url, json={"max_results": 1}, timeout=5).status_code == 401
        # --allowed-hosts: a request naming another host is refused (DNS-rebinding protection).
        spoofed = requests.post(url, json={"max_results": 1}, auth=("admin", "a-long-admin-password-1"),
                                headers={"Host": "evil.example:80"}, timeout=5)
        assert spoofed.status_code in (400, 403), spoofed.status_code
    finally:
        daemon.stop()
