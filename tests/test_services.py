"""The team stack's settings and error messages, without the stack (tests/test_team_stack.py runs it)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from conftest import REPO_ROOT
from mnist_pipeline.services.settings import (
    GENERATE,
    SECRET_KEYS,
    TEMPLATE_FILE,
    ServiceError,
    Settings,
    ensure_env_file,
    read_env_file,
)


@pytest.fixture
def root(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.delenv("MNIST_SERVICES_ENV", raising=False)
    (tmp_path / TEMPLATE_FILE).write_text((REPO_ROOT / TEMPLATE_FILE).read_text())
    return tmp_path


def test_the_env_file_is_made_once_from_the_template_with_fresh_private_secrets(root):
    path = ensure_env_file(root)
    values = read_env_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert GENERATE not in values.values()
    for key in SECRET_KEYS:
        assert len(values[key]) >= 16, key
    # A second call keeps the file (and its secrets); another project gets other secrets.
    assert read_env_file(ensure_env_file(root)) == values
    other = root / "other"
    other.mkdir()
    (other / TEMPLATE_FILE).write_text((root / TEMPLATE_FILE).read_text())
    assert read_env_file(ensure_env_file(other))["PGPASSWORD"] != values["PGPASSWORD"]


def test_uris_are_built_from_the_ports_and_carry_no_secret(root):
    settings = Settings(read_env_file(ensure_env_file(root)), root)
    assert settings.tracking_uri == f"http://127.0.0.1:{settings['MNIST_MLFLOW_PORT']}"
    assert settings["MNIST_SWEEP_STORAGE"] == f"postgresql+psycopg://mnist@127.0.0.1:{settings['MNIST_PG_PORT']}/optuna"
    assert settings.s3_endpoint == settings["MLFLOW_S3_ENDPOINT_URL"] == f"http://127.0.0.1:{settings['MNIST_S3_PORT']}"
    secrets = [settings[key] for key in SECRET_KEYS]
    for key, value in settings.values.items():
        if key not in SECRET_KEYS:
            assert not any(secret in value for secret in secrets), key
    assert all(settings.masked()[key] == "***" for key in SECRET_KEYS)


def test_the_template_binds_everything_to_loopback():
    values = read_env_file_allowing_generate(REPO_ROOT / TEMPLATE_FILE)
    assert values["MNIST_SERVICES_HOST"] == "127.0.0.1"


def read_env_file_allowing_generate(path: Path) -> dict[str, str]:
    from dotenv import dotenv_values

    return dict(dotenv_values(path))


def test_a_missing_env_file_or_an_ungenerated_secret_is_named(root):
    with pytest.raises(ServiceError, match="no services env file; `make services` creates it"):
        read_env_file(root / "services.env")
    (root / "services.env").write_text("PGPASSWORD=generate\nAWS_ACCESS_KEY_ID=x\n")
    with pytest.raises(ServiceError, match="PGPASSWORD still say 'generate'"):
        read_env_file(root / "services.env")


@given(st.text(max_size=8))
@example("²")  # a digit to str.isdigit(), not to int(): hypothesis found it in CI
def test_a_port_is_a_number_from_1_to_65535_or_a_named_error(value):
    settings = Settings({"MNIST_PG_PORT": value}, Path("."))
    try:
        port = settings.port("MNIST_PG_PORT")
    except ServiceError as error:
        assert "MNIST_PG_PORT" in str(error) and "not a port number" in str(error)
        assert not (value.isascii() and value.isdigit() and 0 < int(value) < 65536)
    else:
        assert 0 < port < 65536 and str(port) == value.lstrip("0") or value.strip("0") == ""


def test_a_missing_key_is_named():
    with pytest.raises(ServiceError, match="MNIST_S3_PORT is not set"):
        Settings({}, Path(".")).port("MNIST_S3_PORT")


def test_postgres_errors_name_the_service_and_never_the_password():
    from mnist_pipeline.services.postgres import describe_postgres_error

    address = "PostgreSQL at 127.0.0.1:5433"
    refused = describe_postgres_error(address, "mnist", "mlflow", Exception('connection failed: password authentication failed for user "mnist"'))
    assert refused == f"{address} rejected the password of user mnist (PGPASSWORD in services.env)"
    down = describe_postgres_error(address, "mnist", "mlflow", Exception("connection failed: Connection refused"))
    assert down.startswith(f"{address} is not reachable") and "make services" in down


def test_a_stopped_stack_is_named_service_by_service(root):
    """Nothing listens on these ports: each check fails with the service's name and address."""
    from mnist_pipeline.serving.server import free_port
    from mnist_pipeline.services.stack import check_all

    values = read_env_file(ensure_env_file(root))
    ports = {key: str(free_port()) for key in ("MNIST_PG_PORT", "MNIST_S3_PORT", "MNIST_MLFLOW_PORT")}
    values |= ports
    values["AWS_ENDPOINT_URL_S3"] = f"http://127.0.0.1:{ports['MNIST_S3_PORT']}"
    values["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{ports['MNIST_MLFLOW_PORT']}"
    problems = dict(check_all(Settings(values, root)))
    assert problems["PostgreSQL"].startswith(f"PostgreSQL at 127.0.0.1:{ports['MNIST_PG_PORT']} is not reachable")
    assert problems["object store"] == (
        f"object store (S3 at http://127.0.0.1:{ports['MNIST_S3_PORT']}, bucket mnist) is not reachable; `make services` starts it")
    assert problems["MLflow tracking server"] == (
        f"MLflow tracking server at http://127.0.0.1:{ports['MNIST_MLFLOW_PORT']} is not reachable; `make services` starts it")


def test_a_stage_names_a_tracking_server_that_is_not_there(monkeypatch):
    """The error a stage reports when its server is gone: one line with the server's address, quickly."""
    import time

    import mlflow

    from mnist_pipeline.serving.server import free_port
    from mnist_pipeline.tracking.store import bound_server_requests, describe_tracking_failure

    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)
    bound_server_requests()
    uri = f"http://127.0.0.1:{free_port()}"
    mlflow.set_tracking_uri(uri)
    started = time.monotonic()
    try:
        with pytest.raises(Exception) as raised:
            mlflow.MlflowClient().search_experiments()
        message = describe_tracking_failure(raised.value)
    finally:
        mlflow.set_tracking_uri(None)
    assert message == f"the MLflow tracking server at {uri} stopped answering (is it running? `make services` starts it)"
    assert time.monotonic() - started < 30
    assert describe_tracking_failure(ValueError("a bug")) is None
