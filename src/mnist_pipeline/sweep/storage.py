"""Where a sweep's Optuna study lives: the storage URL, opening it (with the heartbeat that lets a
worker mark a dead worker's trial FAIL), and creating or loading the study, with errors that name
the database and hide its password.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.sweep.params import SweepParams
from mnist_pipeline.tracking.store import project_root

log = logging.getLogger("mnist_pipeline.sweep.study")

STORAGE_ENV = "MNIST_SWEEP_STORAGE"
LOCAL_STORAGE = Path("mlruns") / "optuna.db"
SCHEMA_RACE_ATTEMPTS = 3  # opening a new study database: tries when another process is creating its schema


class StudyStorageError(PipelineError):
    """The study's database cannot be reached, refuses the login, or holds no such study."""


def storage_url(option: str | None = None, environ: dict[str, str] | None = None, root: Path | None = None) -> str:
    """``--storage``, else ``MNIST_SWEEP_STORAGE``, else the SQLite file ``mlruns/optuna.db`` under the project root."""
    environ = dict(os.environ if environ is None else environ)
    url = (option or "").strip() or environ.get(STORAGE_ENV, "").strip()
    if url:
        return url
    return f"sqlite:///{(root or project_root(environ)).resolve() / LOCAL_STORAGE}"


def masked_url(url: str) -> str:
    """The URL with its password replaced by ``***``: the only form of it that may be logged or recorded."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<not a database URL>"  # it may still hold a password: never echo it


def describe_storage(url: str) -> str:
    """``PostgreSQL at 127.0.0.1:5433, password hidden``, ``SQLite file /x/mlruns/optuna.db``: for messages."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return "a storage URL that is not a database URL (expected e.g. postgresql+psycopg://user:password@host:5432/db or sqlite:///path)"
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return f"SQLite file {parsed.database or ':memory:'}"
    name = {"postgresql": "PostgreSQL", "mysql": "MySQL", "mariadb": "MariaDB"}.get(backend, backend)
    where = f"{parsed.host or 'localhost'}{f':{parsed.port}' if parsed.port else ''}"
    return f"{name} at {where}{', password hidden' if parsed.password else ''}"


def _reason(exc: BaseException, url: str) -> str:
    """The first line of the driver's complaint, with the password (should a driver echo it) blanked."""
    from sqlalchemy.engine import make_url

    text = str(getattr(exc, "orig", None) or exc).strip()
    text = text.splitlines()[0] if text else type(exc).__name__
    try:
        password = make_url(url).password
    except Exception:  # noqa: BLE001 - an unparseable URL: nothing to blank but the URL itself
        password = None
    if password:
        text = text.replace(str(password), "***")
    return text.replace(url, masked_url(url))


def open_storage(url: str, sweep: SweepParams, *, stale_trial_callback: Callable[[Any, Any], None] | None = None) -> Any:
    """Optuna's RDBStorage with the sweep's heartbeat; ``StudyStorageError`` naming the service when it can't be used.

    Every worker's running trial writes a heartbeat each ``heartbeat_s``; a worker that starts a
    trial first marks FAIL every running trial silent for ``grace_s`` and calls
    ``stale_trial_callback`` on it.
    """
    import optuna
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    service = describe_storage(url)
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise StudyStorageError(f"the sweep's study storage: {service}; set --storage or {STORAGE_ENV}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # Workers share one file: wait for another's write lock instead of failing at once.
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
        if backend == "postgresql":
            engine_kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        for attempt in range(1, SCHEMA_RACE_ATTEMPTS + 1):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
                    return optuna.storages.RDBStorage(
                        url,
                        engine_kwargs=engine_kwargs,
                        heartbeat_interval=sweep.heartbeat_s,
                        grace_period=sweep.grace_period,
                        heartbeat_stale_trial_callback=stale_trial_callback,
                    )
            except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.IntegrityError) as exc:
                # Optuna creates the schema of a new database without a lock: of two processes
                # opening it at once, one finds a table the other just made. The schema is there
                # now, and the next attempt uses it.
                if attempt == SCHEMA_RACE_ATTEMPTS or not _lost_schema_race(exc):
                    raise
                log.debug("the study storage's schema was being created by another process; opening it again")
                time.sleep(0.2 * attempt)
    except ImportError as exc:
        raise StudyStorageError(f"the sweep's study storage ({service}) needs a database driver that is not installed: {_reason(exc, url)}") from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise StudyStorageError(
            f"the sweep's study storage ({service}) is not usable: {_reason(exc, url)}; "
            f"check the URL ({masked_url(url)}), the password and that the database is up"
        ) from None


def _lost_schema_race(error: Exception) -> bool:
    text = str(error).lower()
    return "already exists" in text or "unique constraint" in text or "duplicate key" in text


def wait_for_user_attr(study: Any, key: str, timeout: float, poll: float = 0.5) -> Any:
    """The study's user attr ``key`` once another process has set it; None if it is still unset after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = study.user_attrs.get(key)  # read from the storage each time
        if value is not None or time.monotonic() >= deadline:
            return value
        time.sleep(poll)
