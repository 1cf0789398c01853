"""PostgreSQL for the team stack: Debian's server binaries, a cluster under ``.services/``, the MLflow
and Optuna databases, and errors that name the server and never the password.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
from glob import glob
from pathlib import Path

from mnist_pipeline.services.daemon import PROBE_TIMEOUT_S, START_TIMEOUT_S, port_open, wait_until
from mnist_pipeline.services.settings import ServiceError, Settings

log = logging.getLogger("mnist_pipeline.services.stack")

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
