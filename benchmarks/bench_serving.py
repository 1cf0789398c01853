"""Serving figures, side by side in one run: the champion in process (pyfunc ``predict``), behind
`mlflow models serve` as `make serve` runs it (one worker per core), and behind MLServer with
adaptive batching (in its own environment: its pins clash with MLflow's server's).

Measures, per setup: one digit's latency (p50/p99), throughput on 1,000-digit batches in each payload
form the setup takes, and throughput and latency with 1, 4 and 16 concurrent clients sending one digit
each (in process: as many threads calling ``predict``). Then a soak of ``make serve``: 10,000 requests
from 4 clients, good and bad inputs mixed, every answer checked (each good one against the in-process
digits, each bad one a 400 naming the problem) and the server's resident memory sampled throughout.
Writes benchmarks/results/serving.json with the goals (docs/benchmarks.md). Run after `make run`:

    python benchmarks/bench_serving.py [--model models:/mnist@champion] [--mlserver-env .venv-mlserver] [--no-mlserver]

``--mlserver-env``: where MLServer's environment lives; built there (with ``uv``) if missing, with
the pins the registered model lists in its requirements.txt.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import logging
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from _common import RESULTS, figure, goal, ratio, time_calls, write_results

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))

from mnist_pipeline.data.arrays import load_array  # noqa: E402
from mnist_pipeline.serving.server import (  # noqa: E402
    default_workers,
    free_port,
    model_problem,
    running_server,
    stop_process_group,
    wait_until_answering,
)

log = logging.getLogger("bench_serving")
CLIENTS = (1, 4, 16)
LOAD_SECONDS = 6.0
SOAK_REQUESTS = 10_000
SOAK_CLIENTS = 4
MLSERVER_PINS = ("mlserver==1.7.1", "mlserver-mlflow==1.7.1")
# MLServer's adaptive batching: up to 32 digits' requests wait at most 2 ms to be scored together.
MLSERVER_BATCHING = {"max_batch_size": 32, "max_batch_time": 0.002}
GOALS = {"one_digit_p50": 1.5, "batch_base64": 0.8, "batch_numbers": 0.5, "concurrent": 0.8, "soak_memory_growth_mib": 50}


def base64_body(digits: np.ndarray) -> bytes:
    return json.dumps({"inputs": [base64.b64encode(digit.tobytes()).decode() for digit in digits]}).encode()


def rows_body(digits: np.ndarray) -> bytes:
    # One row of 784 integers per digit: fewer lists for MLflow's server to parse than 28x28 nested ones.
    return json.dumps({"inputs": digits.reshape(len(digits), -1).tolist()}).encode()


def v2_body(digits: np.ndarray) -> bytes:
    """The V2 inference protocol's tensor: shape, datatype and the pixels flat."""
    return json.dumps({"inputs": [{"name": "digits", "shape": list(digits.shape), "datatype": "UINT8", "data": digits.ravel().tolist()}]}).encode()


class Client:
    """One keep-alive HTTP connection, as one client (a browser, a service) holds it."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=120)

    def post(self, path: str, body: bytes, content_type: str = "application/json") -> tuple[int, bytes]:
        self.connection.request("POST", path, body=body, headers={"Content-Type": content_type})
        response = self.connection.getresponse()
        return response.status, response.read()


def checked(client: Client, path: str, body: bytes) -> Callable[[], None]:
    def call() -> None:
        status, answer = client.post(path, body)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {answer[:300]!r}")
    return call


def percentile(seconds: list[float], q: float) -> float:
    return round(1000 * float(np.percentile(np.asarray(seconds), q)), 3)


def latency(seconds: list[float]) -> dict[str, float]:
    return {f"p{q}": percentile(seconds, q) for q in (50, 90, 99)}


def batch_figure(seconds: list[float], size: int) -> dict[str, Any]:
    return {"seconds": figure(seconds, 5), "digits_per_s": round(size / float(np.median(seconds)))}


def under_load(make_call: Callable[[int], Callable[[], None]], clients: int, seconds: float = LOAD_SECONDS) -> dict[str, Any]:
    """``clients`` threads calling their own ``make_call(i)()`` for ``seconds``: requests per second and latency."""
    calls = [make_call(index) for index in range(clients)]
    for call in calls:
        call()  # warm-up: each connection reaches its worker, each thread its first call
    times: list[float] = []
    lock, start = threading.Lock(), threading.Barrier(clients + 1)

    def run(call: Callable[[], None]) -> None:
        mine: list[float] = []
        start.wait()
        stop = time.perf_counter() + seconds
        while time.perf_counter() < stop:
            began = time.perf_counter()
            call()
            mine.append(time.perf_counter() - began)
        with lock:
            times.extend(mine)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return {"clients": clients, "requests": len(times), "requests_per_s": round(len(times) / (time.perf_counter() - began), 1), "latency_ms": latency(times)}


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a server and all its workers."""
    total = 0
    root = psutil.Process(pid)
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += process.memory_info().rss
    return total / 2**20


# Bad inputs a web form or a buggy client sends, and what the 400's message must say.
BAD_INPUTS: dict[str, tuple[bytes, str]] = {
    "wrong shape": (json.dumps({"inputs": [[1, 2, 3]]}).encode(), "expected digits shaped"),
    "float pixels 0-255": (json.dumps({"inputs": [[200.5] * 784]}).encode(), "raw 0-255 pixels must be sent as integers"),
    "negative pixels": (json.dumps({"inputs": [[-1] * 784]}).encode(), "integer pixels must be 0-255"),
    "NaN": (json.dumps({"inputs": [[float("nan")] * 784]}).encode(), "found NaN or infinity"),
    "not base64": (json.dumps({"inputs": ["not base64!"]}).encode(), "is not valid base64"),
    "short base64": (json.dumps({"inputs": [base64.b64encode(bytes(10)).decode()]}).encode(), "decodes to 10 bytes, expected 784"),
    "text pixels": (json.dumps({"inputs": [["a"] * 784]}).encode(), "expected integer pixels 0-255 or float pixels"),
    "ragged rows": (json.dumps({"inputs": [[0] * 784, [0] * 3]}).encode(), "rows of unequal length"),
    "truncated JSON": (b'{"inputs": [[0, 0', "valid JSON"),
    "no inputs key": (json.dumps({"digits": [[0] * 784]}).encode(), "exactly one of the input fields"),
}


def soak(server_url: str, pid: int, pixels: np.ndarray, expected: np.ndarray, requests: int, clients: int) -> dict[str, Any]:
    """``requests`` requests from ``clients`` threads, one in five bad; every answer checked, memory sampled."""
    rng = random.Random(0)
    plan: list[tuple[str, bytes, Any]] = []
    for _ in range(requests):
        if rng.random() < 0.2:
            kind = rng.choice(sorted(BAD_INPUTS))
            plan.append((kind, *BAD_INPUTS[kind]))
        else:
            start, size = rng.randrange(len(pixels) - 32), rng.choice((1, 1, 1, 8, 32))
            body = (base64_body if rng.random() < 0.7 else rows_body)(pixels[start:start + size])
            plan.append(("good", body, expected[start:start + size].tolist()))
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    memory: list[tuple[int, float]] = []
    done, lock = [0], threading.Lock()

    def run(share: list[tuple[str, bytes, Any]]) -> None:
        client = Client(server_url)
        for kind, body, check in share:
            try:
                status, answer = client.post("/invocations", body)
            except (OSError, http.client.HTTPException) as exc:
                outcome, problem = "a dropped connection", f"{kind}: {exc!r}"
                client = Client(server_url)
            else:
                text = answer.decode(errors="replace")
                if kind == "good":
                    ok = status == 200 and [row["digit"] for row in json.loads(answer)["predictions"]] == check
                    outcome, problem = ("200 with the in-process digits" if ok else f"{status} to a good input"), f"good input: {status} {text[:200]}"
                else:
                    ok = status == 400 and check in text
                    outcome, problem = ("400 naming the problem" if ok else f"{status} to a bad input"), f"{kind}: {status} {text[:300]}"
            with lock:
                outcomes[outcome] += 1
                if outcome not in ("200 with the in-process digits", "400 naming the problem") and len(failures) < 20:
                    failures.append(problem)
                done[0] += 1

    shares = [plan[index::clients] for index in range(clients)]
    threads = [threading.Thread(target=run, args=(share,)) for share in shares]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        memory.append((done[0], round(tree_rss_mib(pid), 1)))
        time.sleep(0.5)
    seconds = time.perf_counter() - began
    memory.append((done[0], round(tree_rss_mib(pid), 1)))
    # Growth after the first tenth (warm-up: each worker's first batches allocate what it keeps).
    settled = next(mib for count, mib in memory if count >= requests // 10)
    growth = memory[-1][1] - settled
    server_errors = sum(count for outcome, count in outcomes.items() if outcome[:1] == "5")
    return {
        "requests": requests, "clients": clients, "seconds": round(seconds, 1), "requests_per_s": round(requests / seconds, 1),
        "bad_share": round(sum(1 for kind, *_ in plan if kind != "good") / requests, 3),
        "bad_kinds": sorted(BAD_INPUTS),
        "outcomes": dict(outcomes), "failures": failures, "server_errors": server_errors,
        "all_answered_as_expected": not failures and sum(outcomes.values()) == requests,
        "memory_mib": {"after_warm_up": settled, "end": memory[-1][1], "max": max(mib for _, mib in memory),
                       "growth": round(growth, 1)} | goal(growth, goal_max=GOALS["soak_memory_growth_mib"]),
        "memory_samples": memory[::max(1, len(memory) // 40)],
    }


def uv_command() -> list[str] | None:
    if os.environ.get("UV"):
        return shlex.split(os.environ["UV"])
    if shutil.which("uv"):
        return ["uv"]
    return None


def mlserver_environment(env_dir: Path, requirements: Path) -> Path | None:
    """MLServer's own environment: built with uv from MLServer's pins and the model's own; its bin folder."""
    bin_dir = env_dir / "bin"
    if (bin_dir / "mlserver").exists():
        return bin_dir
    uv = uv_command()
    if uv is None:
        log.warning("no uv to build %s: skipping MLServer (make bench-serving passes it)", env_dir)
        return None
    log.info("building MLServer's environment in %s (once)", env_dir)
    subprocess.run([*uv, "venv", "--quiet", "--python", sys.executable, str(env_dir)], check=True)
    subprocess.run([*uv, "pip", "install", "--quiet", "--python", str(bin_dir / "python"), *MLSERVER_PINS, "-r", str(requirements)], check=True)
    return bin_dir


@contextlib.contextmanager
def running_mlserver(bin_dir: Path, model_dir: Path, workdir: Path) -> Iterator[tuple[str, subprocess.Popen, float]]:
    """``mlserver start`` for a downloaded MLflow model with adaptive batching; its URL, process and start-up seconds."""
    port = free_port()
    (workdir / "settings.json").write_text(json.dumps({"host": "127.0.0.1", "http_port": port, "grpc_port": free_port(),
                                                       "metrics_port": free_port(), "parallel_workers": 0}))
    (workdir / "model-settings.json").write_text(json.dumps({"name": "mnist", "implementation": "mlserver_mlflow.MLflowRuntime",
                                                             "parameters": {"uri": str(model_dir)}, **MLSERVER_BATCHING}))
    env = {**os.environ, "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])}
    with open(workdir / "mlserver.log", "wb") as output:
        started = time.perf_counter()
        process = subprocess.Popen([str(bin_dir / "mlserver"), "start", str(workdir)], env=env, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_answering(f"{url}/v2/models/mnist/ready", process, "mlserver start", 240, workdir / "mlserver.log")
            yield url, process, time.perf_counter() - started
        finally:
            stop_process_group(process)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models:/mnist@champion")
    parser.add_argument("--requests", type=int, default=200, help="one-digit calls timed per path")
    parser.add_argument("--soak", type=int, default=SOAK_REQUESTS, help="requests in the soak")
    parser.add_argument("--mlserver-env", type=Path, default=REPO_ROOT / ".venv-mlserver")
    parser.add_argument("--no-mlserver", action="store_true", help="skip MLServer")
    parser.add_argument("--output", type=Path, default=RESULTS / "serving.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import mlflow

    tracking_uri = f"sqlite:///{REPO_ROOT / 'mlruns' / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking_uri)
    if problem := model_problem(args.model):
        raise SystemExit(problem)
    pixels = np.asarray(load_array(REPO_ROOT / "data/processed/test/pixels.npy")).reshape(-1, 28, 28)
    model = mlflow.pyfunc.load_model(args.model)
    classifier = model.unwrap_python_model().classifier_
    one, thousand = pixels[:1], pixels[:1000]
    expected = np.concatenate([model.predict(pixels[start:start + 1000])["digit"].to_numpy() for start in range(0, len(pixels), 1000)])
    setups: dict[str, dict[str, Any]] = {}

    log.info("in process: %s (%s)", classifier.name, classifier.config_["type"])
    setups["in process"] = {
        "one_digit_ms": latency(time_calls(lambda: model.predict(one), args.requests)),
        "batch_1000": {"numpy": batch_figure(time_calls(lambda: model.predict(thousand), 10), 1000)},
        "concurrent": [under_load(lambda index: (lambda: model.predict(pixels[index:index + 1])), clients) for clients in CLIENTS],
    }

    workers = default_workers()
    with running_server(args.model, tracking_uri, workers=workers, log_file=Path(tempfile.gettempdir()) / "bench_serving_server.log") as server:
        log.info("mlflow models serve, %d workers", workers)
        client = Client(server.url)
        setups["mlflow models serve"] = {
            "workers": workers,
            "startup_s": round(server.started_seconds, 2),
            "one_digit_ms": latency(time_calls(checked(client, "/invocations", base64_body(one)), args.requests)),
            "one_digit_rows_ms": latency(time_calls(checked(client, "/invocations", rows_body(one)), args.requests)),
            "batch_1000": {form: batch_figure(time_calls(checked(client, "/invocations", body(thousand)), 10), 1000)
                           for form, body in (("base64", base64_body), ("JSON rows", rows_body))},
            "concurrent": [under_load(lambda index: checked(Client(server.url), "/invocations", base64_body(pixels[index:index + 1])), clients)
                           for clients in CLIENTS],
            "memory_mib": round(tree_rss_mib(server.process.pid)),
        }
        log.info("soak: %d requests from %d clients", args.soak, SOAK_CLIENTS)
        soaked = soak(server.url, server.process.pid, pixels, expected, args.soak, SOAK_CLIENTS)

    if not args.no_mlserver:
        workdir = Path(tempfile.mkdtemp(prefix="bench-mlserver-"))
        model_dir = Path(mlflow.artifacts.download_artifacts(args.model, dst_path=str(workdir / "model")))
        bin_dir = mlserver_environment(args.mlserver_env, model_dir / "requirements.txt")
        if bin_dir is not None:
            with running_mlserver(bin_dir, model_dir, workdir) as (url, process, startup):
                log.info("MLServer, adaptive batching %s", MLSERVER_BATCHING)
                client, infer = Client(url), "/v2/models/mnist/infer"
                setups["MLServer"] = {
                    "adaptive_batching": MLSERVER_BATCHING,
                    "startup_s": round(startup, 2),
                    "one_digit_ms": latency(time_calls(checked(client, infer, v2_body(one)), args.requests)),
                    "batch_1000": {"V2 tensor": batch_figure(time_calls(checked(client, infer, v2_body(thousand)), 10), 1000)},
                    "concurrent": [under_load(lambda index: checked(Client(url), infer, v2_body(pixels[index:index + 1])), clients)
                                   for clients in CLIENTS],
                    "memory_mib": round(tree_rss_mib(process.pid)),
                    "version": subprocess.run([str(bin_dir / "mlserver"), "--version"], capture_output=True, text=True).stdout.strip(),
                }
        shutil.rmtree(workdir, ignore_errors=True)

    goals = goals_of(setups, soaked)
    report(args.model, classifier, setups, soaked, goals)
    write_results(args.output, "serving", {
        "model": args.model,
        "classifier": {"name": classifier.name, "type": classifier.config_["type"], "framework": classifier.config_["framework"]},
        "requests": args.requests,
        "load_seconds": LOAD_SECONDS,
        "setups": setups,
        "soak": soaked,
        "goals": goals,
    })
    return 0


def goals_of(setups: dict[str, dict[str, Any]], soaked: dict[str, Any]) -> dict[str, Any]:
    """Each served setup over in process, as the goals are stated; the soak's verdicts."""
    local = setups["in process"]
    found: dict[str, Any] = {}
    for name, setup in setups.items():
        if name == "in process":
            continue
        batches = {form: entry["digits_per_s"] / local["batch_1000"]["numpy"]["digits_per_s"] for form, entry in setup["batch_1000"].items()}
        found[name] = {
            "one_digit_p50_over_in_process": ratio(setup["one_digit_ms"]["p50"] / local["one_digit_ms"]["p50"], goal_max=GOALS["one_digit_p50"]),
            "batch_1000_over_in_process": {
                form: ratio(value, goal_min=GOALS["batch_base64"] if form == "base64" else GOALS["batch_numbers"]) for form, value in batches.items()
            },
            "concurrent_over_in_process": {
                str(served["clients"]): ratio(served["requests_per_s"] / reference["requests_per_s"], goal_min=GOALS["concurrent"])
                for served, reference in zip(setup["concurrent"], local["concurrent"]) if served["clients"] > 1
            },
        }
    found["soak"] = {"no_server_errors": soaked["server_errors"] == 0, "every_answer_as_expected": soaked["all_answered_as_expected"],
                     "memory_growth_mib": soaked["memory_mib"]["growth"], "memory_met": soaked["memory_mib"]["met"]}
    return found


def report(model: str, classifier: Any, setups: dict[str, dict[str, Any]], soaked: dict[str, Any], goals: dict[str, Any]) -> None:
    print(f"\nserving {model} ({classifier.name}, {classifier.config_['type']}); medians\n")
    for name, setup in setups.items():
        batches = ", ".join(f"{form} {entry['digits_per_s']:,}/s" for form, entry in setup["batch_1000"].items())
        load = ", ".join(f"{entry['clients']} clients {entry['requests_per_s']:.0f}/s (p99 {entry['latency_ms']['p99']:.0f} ms)" for entry in setup["concurrent"])
        print(f"{name:20} one digit p50 {setup['one_digit_ms']['p50']:.2f} ms; 1,000-digit batches: {batches}; one-digit requests: {load}")
    for name, verdicts in goals.items():
        if name == "soak":
            continue
        p50 = verdicts["one_digit_p50_over_in_process"]
        lines = [f"one digit p50 {p50['value']:.2f}x (goal <= {GOALS['one_digit_p50']}x)" + ("" if p50["met"] else " MISSED")]
        lines += [f"1,000 digits, {form}: {entry['value']:.2f}x (goal >= {entry['goal_min']}x)" + ("" if entry["met"] else " MISSED")
                  for form, entry in verdicts["batch_1000_over_in_process"].items()]
        lines += [f"{clients} clients: {entry['value']:.2f}x (goal >= {entry['goal_min']}x)" + ("" if entry["met"] else " MISSED")
                  for clients, entry in verdicts["concurrent_over_in_process"].items()]
        print(f"\n{name} over in process: " + "; ".join(lines))
    memory = soaked["memory_mib"]
    print(f"\nsoak: {soaked['requests']:,} requests ({soaked['bad_share']:.0%} bad) from {soaked['clients']} clients in {soaked['seconds']:.0f} s: "
          f"{soaked['outcomes']}; server errors {soaked['server_errors']}; memory {memory['after_warm_up']:.0f} -> {memory['end']:.0f} MiB "
          f"(growth {memory['growth']:+.0f} MiB, goal <= {GOALS['soak_memory_growth_mib']})")
    for failure in soaked["failures"]:
        print(f"  unexpected: {failure}")


if __name__ == "__main__":
    sys.exit(main())
