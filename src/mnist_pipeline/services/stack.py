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
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from glob import glob
from pathlib import Path

from mnist_pipeline.services.settings import ServiceError, Settings

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
PROBE_TIMEOUT_S = 5.0


# ---------------------------------------------------------------- helpers


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def wait_until(check: Callable[[], str], what: str, timeout: float, alive: Callable[[], str | None]) -> str:
    """Call ``check`` until it returns; re-raise its last error after ``timeout`` or when the process dies."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except ServiceError as error:
            died = alive()
            if died is not None:
                raise ServiceError(f"{what} exited while starting: {died}") from None
            if time.monotonic() > deadline:
                raise ServiceError(f"{what} not healthy after {timeout:.0f} s: {error}") from None
        time.sleep(0.5)


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n    ".join(["last lines of " + str(path) + ":", *text[-lines:]])


def _proc_stat(pid: int) -> tuple[str, int]:
    """(state, process group) of ``pid`` from /proc; ("", -1) when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()
        return fields[0], int(fields[2])
    except (OSError, IndexError, ValueError):
        return "", -1


class Daemon:
    """A process we start detached (its own session), with a pid file and a log under ``.services/``."""

    def __init__(self, name: str, state_dir: Path) -> None:
        self.name = name
        self.pid_file = state_dir / f"{name}.pid"
        self.log_file = state_dir / "logs" / f"{name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        # A zombie (a child of this very process that exited) is not running.
        return None if _proc_stat(pid)[0] == "Z" else pid

    def spawn(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log_stream:
            process = subprocess.Popen(
                argv, env=env, stdout=log_stream, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the shell that ran `make services`; stopped as a group
            )
        self.pid_file.write_text(f"{process.pid}\n")
        return process

    def exited(self, process: subprocess.Popen[bytes]) -> Callable[[], str | None]:
        def check() -> str | None:
            code = process.poll()
            return None if code is None else f"exit status {code}\n    {log_tail(self.log_file)}"

        return check

    def stop(self) -> bool:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and self._group_alive(pid):
                time.sleep(0.2)
            if not self._group_alive(pid):
                break
        self.pid_file.unlink(missing_ok=True)
        return True

    @staticmethod
    def _group_alive(pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        # Only zombies left (children of this process, not yet reaped) count as gone.
        for stat in glob("/proc/[0-9]*/stat"):
            state, group = _proc_stat(int(stat.split("/")[2]))
            if group == pgid and state != "Z":
                return True
        return False


# ---------------------------------------------------------------- PostgreSQL


class PostgreSQL:
    """Debian's PostgreSQL server in ``.services/postgres``, run by an unprivileged user when we are root."""

    name = "PostgreSQL"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.host = settings.host
        self.port = settings.port("MNIST_PG_PORT")
        self.user = settings["MNIST_PG_USER"]
        self.data_dir = settings.state_dir / "postgres"
        self.log_file = settings.state_dir / "logs" / "postgres.log"

    @property
    def address(self) -> str:
        return f"{self.name} at {self.host}:{self.port}"

    def _binary(self, program: str) -> str:
        found = shutil.which(program) or next(iter(sorted(glob(f"/usr/lib/postgresql/*/bin/{program}"), reverse=True)), None)
        if not found:
            raise ServiceError(
                f"{self.name}: `{program}` not found; install Debian's server package (apt-get install postgresql)"
            )
        return found

    def _as_owner(self) -> list[str]:
        """PostgreSQL refuses to run as root; as root, run it as the package's `postgres` user."""
        if os.geteuid() != 0:
            return []
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise ServiceError(
                f"{self.name}: running as root needs the unprivileged `postgres` user, which Debian's "
                "postgresql package creates (apt-get install postgresql)"
            ) from None
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        return [runuser, "-u", "postgres", "--"]

    def _run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*self._as_owner(), *argv], capture_output=True, text=True)
        if check and result.returncode != 0:
            raise ServiceError(f"{self.name}: `{' '.join(argv[:2])}` failed: {(result.stderr or result.stdout).strip()}")
        return result

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def running(self) -> bool:
        if not (self.data_dir / "PG_VERSION").exists():
            return False
        return self._run([self._binary("pg_ctl"), "-D", str(self.data_dir), "status"], check=False).returncode == 0

    def start(self) -> str:
        if self.running():
            return self.check()
        if port_open(self.host, self.port):
            raise ServiceError(f"{self.address}: the port is taken by another program; set MNIST_PG_PORT in services.env")
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self.log_file.touch()
        self._chown(self.log_file)
        options = f"-c listen_addresses={self.host} -p {self.port} -c unix_socket_directories=''"
        self._run([self._binary("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
                   "-w", "-t", "60", "-o", options, "start"])
        wait_until(self._login, self.address, START_TIMEOUT_S, lambda: None)
        self._create_databases()
        return self.check()

    def _initdb(self) -> None:
        log.info("%s: creating a database cluster in %s", self.name, self.data_dir)
        if os.geteuid() == 0 and subprocess.run([*self._as_owner(), "test", "-x", str(self.settings.state_dir)]).returncode != 0:
            raise ServiceError(
                f"{self.name}: the unprivileged `postgres` user cannot enter {self.settings.state_dir}; every folder "
                "above the project must let others in (chmod o+x), or clone the project somewhere that does"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self._chown(self.data_dir)
        password_file = self.settings.state_dir / ".pgpass-init"
        password_file.write_text(self.settings["PGPASSWORD"] + "\n")
        password_file.chmod(0o600)
        self._chown(password_file)
        try:
            result = self._run(
                [self._binary("initdb"), "-D", str(self.data_dir), "-U", self.user, f"--pwfile={password_file}",
                 "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8", "--locale=C"],
                check=False,
            )
        finally:
            password_file.unlink(missing_ok=True)
        if result.returncode != 0:
            message = (result.stderr or result.stdout).strip()
            if "Permission denied" in message:
                message += (f"\n  the `postgres` user must be able to enter every folder above {self.data_dir}; "
                            "clone the project where others may read (chmod o+x on its parents)")
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise ServiceError(f"{self.name}: initdb failed: {message}")

    def _connect(self, dbname: str):  # noqa: ANN202 - psycopg's Connection
        import psycopg

        try:
            return psycopg.connect(
                host=self.host, port=self.port, user=self.user, password=self.settings["PGPASSWORD"],
                dbname=dbname, connect_timeout=int(PROBE_TIMEOUT_S), autocommit=True,
            )
        except psycopg.OperationalError as error:
            raise ServiceError(describe_postgres_error(self.address, self.user, dbname, error)) from None

    def _login(self) -> str:
        with self._connect("postgres"):
            return "accepting logins"

    def _create_databases(self) -> None:
        with self._connect("postgres") as connection:
            for key in ("MNIST_PG_TRACKING_DB", "MNIST_PG_SWEEP_DB"):
                name = self.settings[key]
                exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
                if not exists:
                    from psycopg import sql

                    connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                    log.info("%s: created database %s", self.name, name)

    def check(self) -> str:
        for key in ("MNIST_PG_TRACKING_DB", "MNIST_PG_SWEEP_DB"):
            with self._connect(self.settings[key]):
                pass
        return f"{self.address}: user {self.user}, databases {self.settings['MNIST_PG_TRACKING_DB']} and {self.settings['MNIST_PG_SWEEP_DB']}"

    def stop(self) -> bool:
        if not self.running():
            return False
        self._run([self._binary("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop"])
        return True


def describe_postgres_error(address: str, user: str, dbname: str, error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if "password authentication failed" in text:
        return f"{address} rejected the password of user {user} (PGPASSWORD in services.env)"
    if "does not exist" in text and "database" in text:
        return f"{address}: database {dbname} does not exist (`make services` creates it)"
    if "Connection refused" in text or "could not connect" in text or "timeout" in text.lower():
        return f"{address} is not reachable ({text}); `make services` starts it"
    return f"{address}: {text}"


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
        import botocore.exceptions

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
    from botocore.config import Config

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
