"""Start, check and stop the team stack on this machine: PostgreSQL, SeaweedFS (S3) and ``mlflow server``.

Each service is started only if it is not already healthy (so ``make services`` is idempotent),
binds to the env file's host (127.0.0.1 by default), keeps its data, log and pid file under
``.services/``, and is waited for until a real request succeeds: a login to PostgreSQL with the
configured password, a signed request to the bucket, and a run search plus an artifact written
through the tracking server. Every failure raises ``ServiceError`` naming the service, its address
and what to do, never a secret.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import botocore.exceptions
from botocore.config import Config

from mnist_pipeline.services.daemon import PROBE_TIMEOUT_S, START_TIMEOUT_S, Daemon, port_open, wait_until
from mnist_pipeline.services.postgres import PostgreSQL
from mnist_pipeline.services.settings import ServiceError, Settings

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- SeaweedFS (S3)


class ObjectStore:
    """SeaweedFS's all-in-one `weed mini`: an S3 API with one identity, from services.env, and one bucket."""

    name = "object store"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.host = settings.host
        self.port = settings.port("MNIST_S3_PORT")
        self.bucket = settings["MNIST_S3_BUCKET"]
        self.daemon = Daemon("seaweedfs", settings.state_dir)
        self.data_dir = settings.state_dir / "seaweedfs"

    @property
    def address(self) -> str:
        return f"{self.name} (S3 at {self.settings.s3_endpoint}, bucket {self.bucket})"

    def start(self) -> str:
        if self.daemon.pid() is not None:
            with contextlib.suppress(ServiceError):
                return self.check()
            self.daemon.stop()  # ours, but not answering: start it afresh
        if port_open(self.host, self.port):
            raise ServiceError(f"{self.address}: port {self.port} is taken by another program; set MNIST_S3_PORT in services.env")
        weed = shutil.which("weed", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
        if not weed:
            raise ServiceError(f"{self.name}: `weed` not found; it comes with the services dependency group (uv sync)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.settings.state_dir / "s3-identities.json"
        config.write_text(json.dumps({"identities": [{
            "name": "mnist",
            "credentials": [{"accessKey": self.settings["AWS_ACCESS_KEY_ID"],
                             "secretKey": self.settings["AWS_SECRET_ACCESS_KEY"]}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        config.chmod(0o600)
        s = self.settings
        argv = [
            weed, "mini", f"-dir={self.data_dir}", f"-ip={self.host}", f"-ip.bind={self.host}",
            f"-master.port={s.port('MNIST_S3_MASTER_PORT')}", f"-volume.port={s.port('MNIST_S3_VOLUME_PORT')}",
            f"-filer.port={s.port('MNIST_S3_FILER_PORT')}", f"-s3.port={self.port}", f"-s3.config={config}",
            "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0", f"-bucket={self.bucket}",
        ]
        process = self.daemon.spawn(argv, os.environ.copy())
        return wait_until(self.check, self.address, START_TIMEOUT_S, self.daemon.exited(process))

    def client(self):  # noqa: ANN202 - a boto3 S3 client
        return s3_client(self.settings)

    def check(self) -> str:
        try:
            self.client().head_bucket(Bucket=self.bucket)
        except botocore.exceptions.EndpointConnectionError:
            raise ServiceError(f"{self.address} is not reachable; `make services` starts it") from None
        except botocore.exceptions.ClientError as error:
            raise ServiceError(describe_s3_error(self.address, error)) from None
        return f"{self.address}: bucket reachable with the configured credentials"

    def stop(self) -> bool:
        return self.daemon.stop()


def s3_client(settings: Settings):  # noqa: ANN201 - a boto3 S3 client
    import boto3

    return boto3.client(
        "s3", endpoint_url=settings.s3_endpoint, aws_access_key_id=settings["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=settings["AWS_SECRET_ACCESS_KEY"], region_name=settings.values.get("AWS_DEFAULT_REGION", "us-east-1"),
        config=Config(connect_timeout=PROBE_TIMEOUT_S, read_timeout=30, retries={"max_attempts": 1}),
    )


def describe_s3_error(address: str, error: Exception) -> str:
    code = getattr(error, "response", {}).get("Error", {}).get("Code", "")
    if code in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "403"):
        return f"{address} rejected the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in services.env): {code}"
    if code in ("NoSuchBucket", "404"):
        return f"{address}: the bucket does not exist (`make services` creates it)"
    return f"{address}: {error}"


# ---------------------------------------------------------------- mlflow server


# MLflow's job runner (a second process, for GenAI judges and trace roll-ups, which this project
# has none of) costs 5-8 s of every server start on 2 cores; services.env or the shell can turn it on.
SERVER_ENV_DEFAULTS = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


class TrackingServer:
    """``mlflow server``: runs in PostgreSQL, artifacts proxied into the bucket, so clients need no S3 keys."""

    name = "MLflow tracking server"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.host = settings.host
        self.port = settings.port("MNIST_MLFLOW_PORT")
        self.daemon = Daemon("mlflow", settings.state_dir)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        return f"{self.name} at {self.url}"

    def argv(self) -> list[str]:
        # The backend URI carries no password (psycopg reads PGPASSWORD from the environment),
        # so nothing secret shows in `ps` or in the server's log.
        return [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", self.settings["MNIST_MLFLOW_BACKEND_URI"],
            "--artifacts-destination", self.settings["MNIST_MLFLOW_ARTIFACTS"],
            "--serve-artifacts", "--host", self.host, "--port", str(self.port),
            "--workers", self.settings.values.get("MNIST_MLFLOW_WORKERS", "1"),
        ]

    def environ(self) -> dict[str, str]:
        return {**SERVER_ENV_DEFAULTS, **self.settings.environ()}

    def start(self) -> str:
        if self.daemon.pid() is not None:
            with contextlib.suppress(ServiceError):
                return self.check()
            self.daemon.stop()
        if port_open(self.host, self.port):
            raise ServiceError(f"{self.address}: port {self.port} is taken by another program; set MNIST_MLFLOW_PORT in services.env")
        process = self.daemon.spawn(self.argv(), self.environ())
        return wait_until(self.check, self.address, START_TIMEOUT_S, self.daemon.exited(process))

    def check(self) -> str:
        return check_tracking_server(self.url, self.settings["MNIST_MLFLOW_ARTIFACTS"])

    def stop(self) -> bool:
        return self.daemon.stop()


def check_tracking_server(url: str, artifacts: str = "its artifact store", auth: tuple[str, str] | None = None) -> str:
    """A run search (the backend store) and an artifact round trip (the object store behind the proxy)."""
    import requests

    name = f"MLflow tracking server at {url}"
    try:
        health = requests.get(f"{url}/health", timeout=PROBE_TIMEOUT_S, auth=auth)
    except requests.RequestException:
        raise ServiceError(f"{name} is not reachable; `make services` starts it") from None
    if health.status_code != 200:
        raise ServiceError(f"{name}: /health answered HTTP {health.status_code}")
    try:
        search = requests.post(f"{url}/api/2.0/mlflow/experiments/search", json={"max_results": 1}, timeout=30, auth=auth)
        if search.status_code != 200:
            raise ServiceError(f"{name} cannot read its backend store: HTTP {search.status_code} {search.text[:300]}")
        probe = f"{url}/api/2.0/mlflow-artifacts/artifacts/.health/probe-{os.getpid()}.txt"
        put = requests.put(probe, data=b"ok", timeout=60, auth=auth)
        if put.status_code != 200:
            raise ServiceError(
                f"{name} cannot write to {artifacts} (its object store): HTTP {put.status_code} {put.text[:300]}"
            )
        requests.delete(probe, timeout=30, auth=auth)
    except requests.RequestException as error:
        raise ServiceError(f"{name} stopped answering: {error}") from None
    return f"{name}: backend store and {artifacts} answer"


# ---------------------------------------------------------------- the stack


def services(settings: Settings) -> list[PostgreSQL | ObjectStore | TrackingServer]:
    """In start order: the server needs both stores."""
    return [PostgreSQL(settings), ObjectStore(settings), TrackingServer(settings)]


@contextlib.contextmanager
def _stage(what: str) -> Iterator[None]:
    started = time.monotonic()
    yield
    log.info("%s ready in %.1f s", what, time.monotonic() - started)


def start_all(settings: Settings) -> list[str]:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    reports = []
    for service in services(settings):
        with _stage(service.name):
            reports.append(service.start())
        log.info("%s", reports[-1])
    return reports


def check_all(settings: Settings) -> list[tuple[str, str | None]]:
    """(service, problem or None) for each; never raises, so every failing service is named."""
    results: list[tuple[str, str | None]] = []
    for service in services(settings):
        try:
            service.check()
            results.append((service.name, None))
        except ServiceError as error:
            results.append((service.name, str(error)))
    return results


def listening_ports(settings: Settings) -> dict[str, int]:
    """Every port the stack listens on (SeaweedFS's gRPC ports are its HTTP ports + 10000)."""
    ports = {"PostgreSQL": settings.port("MNIST_PG_PORT"), "MLflow tracking server": settings.port("MNIST_MLFLOW_PORT")}
    for key in ("MNIST_S3_PORT", "MNIST_S3_MASTER_PORT", "MNIST_S3_VOLUME_PORT", "MNIST_S3_FILER_PORT"):
        ports[f"object store ({key})"] = settings.port(key)
        ports[f"object store ({key}, gRPC)"] = settings.port(key) + 10000
    return ports


def stop_all(settings: Settings) -> list[str]:
    """Stop the three, then make sure nothing of the stack still listens; raises naming what does."""
    stopped = []
    for service in reversed(services(settings)):
        if service.stop():
            stopped.append(service.name)
            log.info("%s stopped", service.name)
    still = [f"{name} on {settings.host}:{port}" for name, port in listening_ports(settings).items()
             if port_open(settings.host, port)]
    if still:
        raise ServiceError(
            "still listening after the stop (started outside `make services`, or by another copy of the "
            f"project with the same ports?): {', '.join(still)}"
        )
    return stopped
