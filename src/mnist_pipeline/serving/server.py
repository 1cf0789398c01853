"""`mlflow models serve` as a managed subprocess, for the serving tests and benchmark (`make serve` runs it directly)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_pipeline.errors import PipelineError

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_command(model_uri: str, port: int, workers: int = 1) -> list[str]:
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    return [mlflow, "models", "serve", "-m", model_uri, "--env-manager", "local", "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers)]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    started_seconds: float  # from launch to the first answer of /ping

    def invocations(self, payload: Any, timeout: float = 60) -> tuple[int, Any]:
        """POST ``payload`` as JSON to /invocations; the HTTP status and the decoded answer."""
        request = urllib.request.Request(
            f"{self.url}/invocations", data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            body = error.read().decode(errors="replace")
            try:
                return error.code, json.loads(body)
            except json.JSONDecodeError:
                return error.code, body


@contextlib.contextmanager
def running_server(model_uri: str, tracking_uri: str, port: int | None = None, timeout: float = 240, log_file: Path | None = None) -> Iterator[Server]:
    """Start `mlflow models serve` for ``model_uri`` on 127.0.0.1, wait for /ping, stop it (and its workers) afterwards."""
    port = port or free_port()
    # mlflow models serve execs `uvicorn` by name: the environment's bin folder must be on PATH.
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}
    output = open(log_file, "wb") if log_file else subprocess.DEVNULL
    started = time.perf_counter()
    process = subprocess.Popen(serve_command(model_uri, port), env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if process.poll() is not None:
                raise PipelineError(f"mlflow models serve {model_uri} exited with {process.returncode} before answering" + (f"; see {log_file}" if log_file else ""))
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.perf_counter() - started > timeout:
                raise PipelineError(f"mlflow models serve {model_uri} did not answer /ping within {timeout:.0f} s")
            time.sleep(0.2)
        server = Server(url, process, time.perf_counter() - started)
        log.info("serving %s at %s (ready after %.1f s)", model_uri, url, server.started_seconds)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if log_file:
            output.close()
