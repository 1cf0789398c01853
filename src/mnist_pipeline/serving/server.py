"""``mnist-serve`` (`make serve`): the registered champion over HTTP, `mlflow models serve` with one worker per core.

``running_server`` runs the same command as a managed subprocess, for the serving tests and
``benchmarks/bench_serving.py``.

    mnist-serve [--model models:/mnist@champion] [--port 5001] [--workers N]

Workers default to one per CPU core: each is a process with its own copy of the model, so
concurrent requests no longer queue behind one Python interpreter (docs/using/serving.md has the
figures, from ``make bench-serving``); the price is one model's memory per worker.
"""

from __future__ import annotations

import argparse
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
from mnist_pipeline.serving.cli import DEFAULT_MODEL, EXIT_UNUSABLE  # mnist-predict's: the same champion, the same exit

log = logging.getLogger(__name__)

DEFAULT_PORT = 5001


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_command(model_uri: str, port: int, workers: int | None = None) -> list[str]:
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    return [mlflow, "models", "serve", "-m", model_uri, "--env-manager", "local", "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers or default_workers())]


def serve_env(**extra: str) -> dict[str, str]:
    # mlflow models serve execs `uvicorn` by name: the environment's bin folder must be on PATH.
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, **extra, "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")])}


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


def wait_until_answering(url: str, process: subprocess.Popen, what: str, timeout: float, log_file: Path | None = None) -> float:
    """Seconds until ``url`` answers 200; an error naming ``what`` if the process exits or time runs out."""
    started = time.perf_counter()
    while True:
        if process.poll() is not None:
            raise PipelineError(f"{what} exited with {process.returncode} before answering" + (f"; see {log_file}" if log_file else ""))
        with contextlib.suppress(urllib.error.URLError, ConnectionError, TimeoutError):
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            raise PipelineError(f"{what} did not answer {url} within {timeout:.0f} s")
        time.sleep(0.2)


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM the server and its workers, SIGKILL after 20 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def running_server(model_uri: str, tracking_uri: str, port: int | None = None, timeout: float = 240, log_file: Path | None = None,
                   workers: int | None = None) -> Iterator[Server]:
    """Start `mlflow models serve` for ``model_uri`` on 127.0.0.1 as `make serve` does, wait for /ping, stop it afterwards."""
    port = port or free_port()
    output = open(log_file, "wb") if log_file else subprocess.DEVNULL
    started = time.perf_counter()
    process = subprocess.Popen(serve_command(model_uri, port, workers), env=serve_env(MLFLOW_TRACKING_URI=tracking_uri),
                               stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(f"{url}/ping", process, f"mlflow models serve {model_uri}", timeout, log_file)
        server = Server(url, process, time.perf_counter() - started)
        log.info("serving %s at %s (ready after %.1f s)", model_uri, url, server.started_seconds)
        yield server
    finally:
        stop_process_group(process)
        if log_file:
            output.close()


def model_problem(model_uri: str) -> str:
    """Why ``model_uri`` can't be served, or "": a missing champion is one line here, not the server's traceback."""
    from mlflow.exceptions import MlflowException
    from mlflow.models import get_model_info

    try:
        get_model_info(model_uri)
    except (MlflowException, OSError) as exc:
        return (f"cannot serve {model_uri}: {exc}. `make run` registers a champion; --model (SERVE_MODEL) names "
                "another model, and MLFLOW_TRACKING_URI the store it is in")
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mnist-serve", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"model URI (default: {DEFAULT_MODEL})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--workers", type=int, default=None, help=f"server processes (default: one per core, {default_workers()} here)")
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    logging.basicConfig(level=logging.INFO, format="mnist-serve: %(message)s")
    if problem := model_problem(args.model):
        log.error("%s", problem)
        return EXIT_UNUSABLE
    command = serve_command(args.model, args.port, args.workers)
    log.info("serving %s on http://127.0.0.1:%d/invocations with %s worker(s)", args.model, args.port, command[-1])
    os.execvpe(command[0], command, serve_env())
    return 0  # not reached: exec replaces this process


if __name__ == "__main__":
    sys.exit(main())
