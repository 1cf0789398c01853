"""What the three services' start, check and stop share: a detached process with a pid file, and waiting for it.

A service is waited for until a check passes (a real request, not an open port), and a process
that exits meanwhile fails the wait at once with the tail of its log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from glob import glob
from pathlib import Path

from mnist_pipeline.services.settings import ServiceError

log = logging.getLogger("mnist_pipeline.services.stack")

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
