"""Serving figures, side by side in one run: the champion in process (pyfunc ``predict``) and over HTTP
(`mlflow models serve`, the `make serve` command).

Prints: single-digit latency p50/p99, throughput for batches of 1, 32 and 1,000 digits, the ratios
the goals are stated in (HTTP p50 <= 3x in process; HTTP throughput at 1,000 >= 0.8x in process),
Keras ``predict()`` against the direct one-batch call the classifier uses, and the server's start-up
time and peak memory; writes them, with the machine and library versions, to
benchmarks/results/serving.json. Run after `make run` (it serves the registered champion):

    python benchmarks/bench_serving.py [--model models:/mnist@champion] [--requests 200] [--output benchmarks/results/serving.json]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import logging
import statistics
import sys
from pathlib import Path

import numpy as np
from _common import RESULTS, figure, ratio, time_calls, write_results

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))

from mnist_pipeline.data.arrays import load_array  # noqa: E402
from mnist_pipeline.serving.server import running_server  # noqa: E402

log = logging.getLogger("bench_serving")
BATCHES = (1, 32, 1000)
ENCODINGS = ("json", "base64")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def peak_memory_mib(pid: int) -> float:
    """Peak resident memory (VmHWM) of the server and its workers together."""
    import psutil

    total = 0
    for process in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        try:
            for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models:/mnist@champion")
    parser.add_argument("--requests", type=int, default=200, help="single-digit calls timed per path")
    parser.add_argument("--output", type=Path, default=RESULTS / "serving.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import mlflow

    tracking_uri = f"sqlite:///{REPO_ROOT / 'mlruns' / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking_uri)
    pixels = np.asarray(load_array(REPO_ROOT / "data/processed/test/pixels.npy")).reshape(-1, 28, 28)

    model = mlflow.pyfunc.load_model(args.model)
    classifier = model.unwrap_python_model().classifier_
    rows: list[tuple[str, str, str]] = []

    in_process = time_calls(lambda: model.predict(pixels[:1]), args.requests)
    keras_path, keras_runs = {}, {}
    if classifier.config_["framework"] == "keras":
        one = pixels[:1].astype(np.float32).reshape(1, 28, 28, 1) / 255
        one = one if classifier.config_["input"] == "image" else one.reshape(1, 784)
        keras_runs["predict()"] = time_calls(lambda: classifier.model_.predict(one, verbose=0), 50)
        keras_runs["predict_on_batch (used)"] = time_calls(lambda: classifier.model_.predict_on_batch(one), 50)
        keras_path = {label: statistics.median(runs) for label, runs in keras_runs.items()}
    batch_in = {n: time_calls(lambda n=n: model.predict(pixels[:n]), 20 if n < 1000 else 10) for n in BATCHES}
    throughput_in = {n: n / statistics.median(seconds) for n, seconds in batch_in.items()}

    with running_server(args.model, tracking_uri, log_file=Path("/tmp/bench_serving_server.log")) as server:
        host, port = server.url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=120)

        def post(n: int, encoding: str) -> None:
            # What a client does per request, encoding included: JSON integer rows, or base64 strings.
            if encoding == "json":
                inputs = pixels[:n].tolist()
            else:
                inputs = [base64.b64encode(digit.tobytes()).decode() for digit in pixels[:n]]
            connection.request("POST", "/invocations", body=json.dumps({"inputs": inputs}),
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {body[:300]!r}")

        over_http = {enc: time_calls(lambda enc=enc: post(1, enc), args.requests) for enc in ENCODINGS}
        batch_http = {enc: {n: time_calls(lambda n=n, enc=enc: post(n, enc), 20 if n < 1000 else 10) for n in BATCHES} for enc in ENCODINGS}
        throughput_http = {enc: {n: n / statistics.median(seconds) for n, seconds in batch_http[enc].items()} for enc in ENCODINGS}
        memory = peak_memory_mib(server.process.pid)
        startup = server.started_seconds

    ms = lambda seconds: f"{1000 * seconds:.2f} ms"  # noqa: E731
    rows.append(("single digit p50", ms(percentile(in_process, 50)), *(ms(percentile(over_http[e], 50)) for e in ENCODINGS)))
    rows.append(("single digit p99", ms(percentile(in_process, 99)), *(ms(percentile(over_http[e], 99)) for e in ENCODINGS)))
    for n in BATCHES:
        rows.append((f"throughput, batches of {n}", f"{throughput_in[n]:,.0f} digits/s", *(f"{throughput_http[e][n]:,.0f} digits/s" for e in ENCODINGS)))
    print(f"\nserving {args.model} ({classifier.name}, {classifier.config_['type']}); medians, {args.requests} single-digit calls\n")
    print(f"| {'':28} | {'in process':>18} | {'HTTP, JSON rows':>18} | {'HTTP, base64':>18} |")
    print(f"| {'-' * 28} | {'-' * 18}:| {'-' * 18}:| {'-' * 18}:|")
    for label, *cells in rows:
        print(f"| {label:28} | " + " | ".join(f"{cell:>18}" for cell in cells) + " |")
    for encoding in ENCODINGS:
        p50_ratio = percentile(over_http[encoding], 50) / percentile(in_process, 50)
        throughput_ratio = throughput_http[encoding][1000] / throughput_in[1000]
        print(f"\nHTTP ({encoding}) p50 / in-process p50: {p50_ratio:.2f}x (goal <= 3x) {'ok' if p50_ratio <= 3 else 'MISSED'}")
        print(f"HTTP ({encoding}) / in-process throughput at 1,000 digits: {throughput_ratio:.2f}x (goal >= 0.8x) {'ok' if throughput_ratio >= 0.8 else 'MISSED'}")
    for label, seconds in keras_path.items():
        print(f"Keras one digit, {label}: {ms(seconds)}")
    print(f"server start-up (launch to first /ping answer): {startup:.1f} s; peak memory (server and workers): {memory:,.0f} MiB")

    def path(single: list[float], batches: dict[int, list[float]]) -> dict:
        # Single digits: percentiles of the calls (too many to list); batches: every call's seconds.
        return {
            "single_digit_ms": {f"p{q}": round(1000 * percentile(single, q), 3) for q in (50, 90, 99)}
            | {"min": round(1000 * min(single), 3), "max": round(1000 * max(single), 3)},
            "batches": {str(n): {"seconds": figure(seconds, 5), "digits_per_s": round(n / statistics.median(seconds))} for n, seconds in batches.items()},
        }

    write_results(args.output, "serving", {
        "model": args.model,
        "classifier": {"name": classifier.name, "type": classifier.config_["type"], "framework": classifier.config_["framework"]},
        "requests": args.requests,
        "in_process": path(in_process, batch_in),
        "http": {encoding: path(over_http[encoding], batch_http[encoding]) for encoding in ENCODINGS},
        "ratios": {encoding: {
            "p50_http_over_in_process": ratio(percentile(over_http[encoding], 50) / percentile(in_process, 50), goal_max=3.0),
            "throughput_1000_http_over_in_process": ratio(throughput_http[encoding][1000] / throughput_in[1000], goal_min=0.8),
        } for encoding in ENCODINGS},
        "keras_one_digit_ms": {label: figure([1000 * s for s in runs], 3) for label, runs in keras_runs.items()},
        "server": {"startup_s": round(startup, 2), "peak_memory_mib": round(memory)},
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
