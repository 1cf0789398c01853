"""Team-stack figures, side by side in one run, against the stack `make services` runs (PostgreSQL,
SeaweedFS S3, `mlflow server`; settings in services.env):

1. MLflow logging per run, tracking server against the embedded SQLite store (goal: server ≤ 1.5×
   embedded). A run shaped like a training stage's: ``start_run`` with tags, 15 params, 10 epochs ×
   5 metrics logged per epoch, a ~50 KB PNG-sized artifact, a text artifact, and a small logged
   model (a scikit-learn model logged as the train stage logs its models: explicit pip pins,
   signature, input example, no serving check), whose time is also shown on its own. The embedded
   store is a fresh SQLite file in a temp dir (schema created before timing); the server gets an
   experiment ``bench-<id>``, soft-deleted afterwards. One untimed warm-up run per store, then the
   two stores alternate; medians. The pipeline's request bounds (MLFLOW_HTTP_REQUEST_*) apply.
2. `dvc push` / `dvc pull` (and `dvc fetch`, pull without the checkout) of every output dvc.lock
   names, against a plain copy of the same files to the same bucket with the same client, s3fs
   (goal: DVC ≥ 0.5× the plain copy's throughput). DVC runs in scratch git+DVC repos holding this
   checkout's dvc.yaml, dvc.lock and params.yaml whose remote ``storage`` points at a fresh prefix
   s3://<bucket>/bench/<id>/...: pushes read this checkout's cache (``cache.dir``, read only),
   pulls and fetches start from an empty cache. This checkout's config is never touched. The
   plain copy puts and gets exactly the objects DVC pushed. Also shown: a no-op push (everything
   already there: DVC's fixed cost) and, unless --quick, a push and a fetch with ``--jobs 64``
   (DVC's default is 4 × CPUs; s3fs moves up to 128 files at once). The bench prefixes are
   deleted afterwards.
3. `mnist-sweep run` wall time with 2 workers against the same trials run by 1 worker (goal: ≤ 0.6×
   on 2 cores). A copy of params.yaml whose sweep has a fixed-cost space (only the CNN's learning
   rate varies; fixed epochs, batch size and train_subset; the pruner never starts, so no trial is
   pruned); each variant a fresh study on the stack's PostgreSQL, runs on the tracking server
   (experiment ``bench-<id>-sweep``). From the studies' trial timestamps: the start-up before the
   first trial (create, interpreter, TensorFlow import, data load) and the mean trial time, which
   shows the CPU contention between workers. Unless --quick, 2 workers again with
   TF_NUM_INTRAOP_THREADS=1 / TF_NUM_INTEROP_THREADS=1 each (environment only; the CLI has no
   thread option). The bench studies are deleted and the experiment soft-deleted afterwards.

Speed goals are printed as met or not, never asserted. The figures are noisy on a shared machine.
They are also written, with the machine and library versions, to benchmarks/results/team.json
(the parts run this time; a skipped part is absent).

Usage: python benchmarks/bench_team.py [--quick] [--skip-mlflow] [--skip-dvc] [--skip-sweep]
       [--mlflow-repeats 9] [--dvc-repeats 3] [--sweep-trials 4] [--output benchmarks/results/team.json]
(`make bench-team` runs it with services.env loaded.)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import logging
import os
import platform
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _common import REPO_ROOT, RESULTS, child_env, figure, median, ratio, timed, write_results

sys.path.insert(0, str(REPO_ROOT / "src"))

from mnist_pipeline.services.settings import ServiceError, load_settings  # noqa: E402
from mnist_pipeline.services.stack import check_all  # noqa: E402
from mnist_pipeline.tracking.store import bound_server_requests  # noqa: E402

PYTHON = sys.executable
BIN = Path(PYTHON).parent


def goal(met: bool) -> str:
    return "goal met" if met else "goal NOT met"


def table(header: list[str], rows: list[list[str]]) -> None:
    print(" | ".join(header))
    print(" | ".join(["---"] * len(header)))
    for row in rows:
        print(" | ".join(row))


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average now {one:.2f}, 5 min {five:.2f}"


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


# ---------------------------------------------------------------- 1. MLflow logging


TAGS = {"mlflow.source.name": "pipeline/train.py", "git.commit": "0" * 40, "dvc.stage": "train@bench",
        "model.type": "bench", "bench": "team"}
PARAMS = {f"param_{index:02d}": value for index, value in enumerate(
    ["keras_cnn", 0, "relu", "rmsprop", 0.001, 10, 64, 0.1, "[32, 64, 64]", "[128]", "float32", 60000, 10000, "null", "md5"])}
EPOCHS = 10
METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "seconds")


class MlflowBench:
    def __init__(self, scratch: Path) -> None:
        import numpy as np
        from sklearn.linear_model import LogisticRegression

        self.png = scratch / "training_curves.png"
        self.png.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(50_000))
        self.summary = "Model: bench\n" + "\n".join(f"layer_{index}  (None, 128)  {index * 1000}" for index in range(40))
        rng = np.random.default_rng(0)
        self.inputs = rng.random((200, 64), dtype=np.float32)
        self.model = LogisticRegression(max_iter=200).fit(self.inputs, rng.integers(0, 10, 200))

    def run(self, experiment_id: str) -> tuple[float, float]:
        """One run; (seconds without the model, seconds logging the model)."""
        import mlflow
        from mlflow.models import Model, infer_signature

        from mnist_pipeline.serving.pyfunc import without_serving_check

        started = time.perf_counter()
        with mlflow.start_run(experiment_id=experiment_id, run_name="bench", tags=TAGS):
            mlflow.log_params(PARAMS)
            for epoch in range(EPOCHS):
                mlflow.log_metrics({name: 1.0 / (epoch + 1 + index) for index, name in enumerate(METRICS)}, step=epoch)
            mlflow.log_artifact(str(self.png))
            mlflow.log_text(self.summary, "model_summary.txt")
            model_started = time.perf_counter()
            example = self.inputs[:2]
            Model.log(
                artifact_path=None, name="model", flavor=without_serving_check(mlflow.sklearn), sk_model=self.model,
                signature=infer_signature(example, self.model.predict(example)), input_example=example,
                pip_requirements=["mlflow", "scikit-learn", "numpy"], step=EPOCHS, validate_serving_input=False,
            )
            model_ended = time.perf_counter()
        ended = time.perf_counter()
        return (model_started - started) + (ended - model_ended), model_ended - model_started


def server_requests(uri: str, run: Any, experiment_id: str) -> tuple[int, float, float, float, float]:
    """(HTTP requests one run makes, their seconds, a small request's median, /health's median on a
    kept-alive connection and on a new one each time)."""
    import requests
    from mlflow import MlflowClient

    calls: list[float] = []
    original = requests.Session.request

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            calls.append(time.perf_counter() - started)

    requests.Session.request = counted  # type: ignore[method-assign]
    try:
        run()
    finally:
        requests.Session.request = original  # type: ignore[method-assign]
    client = MlflowClient(uri)
    small = [timed_call(lambda: client.get_experiment(experiment_id)) for _ in range(21)]
    with requests.Session() as session:
        kept = [timed_call(lambda: session.get(f"{uri}/health", timeout=10)) for _ in range(21)]
    fresh = [timed_call(lambda: requests.get(f"{uri}/health", timeout=10, headers={"Connection": "close"})) for _ in range(21)]
    return len(calls), sum(calls), median(small), median(kept), median(fresh)


def bench_mlflow(settings: Any, bench_id: str, repeats: int) -> tuple[list[str], dict[str, Any]]:
    import mlflow
    from mlflow import MlflowClient

    bound_server_requests()
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    logging.getLogger("mlflow").setLevel(logging.ERROR)  # per-model notes (uv project, pip version) would bury the tables
    scratch = Path(tempfile.mkdtemp(prefix="mnist-bench-mlflow-"))
    experiment = f"bench-{bench_id}"
    stores = {
        "embedded (SQLite)": (f"sqlite:///{scratch / 'mlflow.db'}", (scratch / "artifacts").as_uri()),
        "server": (settings.tracking_uri, None),
    }
    experiment_ids: dict[str, str] = {}
    bench = MlflowBench(scratch)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in stores}
    diagnosis = None
    try:
        for name, (uri, artifact_location) in stores.items():
            # The first SqlAlchemyStore on a new file creates (migrates) the schema: before timing.
            experiment_ids[name] = MlflowClient(uri).create_experiment(experiment, artifact_location=artifact_location)
            mlflow.set_tracking_uri(uri)
            bench.run(experiment_ids[name])  # warm-up: imports, connection pool, first-run caches
        names = list(stores)
        for repeat in range(repeats):
            for name in names if repeat % 2 == 0 else names[::-1]:
                mlflow.set_tracking_uri(stores[name][0])
                results[name].append(bench.run(experiment_ids[name]))
        mlflow.set_tracking_uri(settings.tracking_uri)
        diagnosis = server_requests(settings.tracking_uri, lambda: bench.run(experiment_ids["server"]), experiment_ids["server"])
    finally:
        mlflow.set_tracking_uri(settings.tracking_uri)
        if "server" in experiment_ids:
            with contextlib.suppress(Exception):
                MlflowClient(settings.tracking_uri).delete_experiment(experiment_ids["server"])
        shutil.rmtree(scratch, ignore_errors=True)

    load_now = os.getloadavg()
    print(f"\n## 1. MLflow logging per run ({repeats} alternating runs per store, medians in seconds; {load()})")
    print(f"run: {len(TAGS)} tags, {len(PARAMS)} params, {EPOCHS} epochs x {len(METRICS)} metrics, "
          "a 50 KB PNG-sized file, a text file, a logged scikit-learn model")
    summary: dict[str, tuple[float, float, float]] = {}
    rows = []
    stores_out: dict[str, Any] = {}
    for name, runs in results.items():
        base, model = [r[0] for r in runs], [r[1] for r in runs]
        total = [a + b for a, b in runs]
        summary[name] = (median(base), median(model), median(total))
        stores_out[name] = {"run_without_model_s": figure(base, 3), "log_model_s": figure(model, 3), "whole_run_s": figure(total, 3)}
        rows.append([name, f"{median(base):.3f}", f"{median(model):.3f}", f"{median(total):.3f}", spread(total)])
    table(["store", "run without model", "log_model", "whole run", "whole run min-max"], rows)
    embedded, server = summary["embedded (SQLite)"], summary["server"]
    ratios = [server[i] / embedded[i] for i in range(3)]
    print(f"server / embedded: run without model {ratios[0]:.2f}x, log_model {ratios[1]:.2f}x, whole run {ratios[2]:.2f}x")
    out: dict[str, Any] = {
        "repeats": repeats,
        "run": {"tags": len(TAGS), "params": len(PARAMS), "epochs": EPOCHS, "metrics_per_epoch": len(METRICS),
                "files": 2, "logged_model": "scikit-learn"},
        "stores": stores_out,
        "server_over_embedded": {"run_without_model": ratio(ratios[0]), "log_model": ratio(ratios[1]),
                                 "whole_run": ratio(ratios[2], goal_max=1.5)},
        "load_average": [round(value, 2) for value in load_now],
    }
    if diagnosis:
        count, request_seconds, small, kept, fresh = diagnosis
        out["server_requests"] = {"per_run": count, "seconds_per_run": round(request_seconds, 3), "small_request_ms": round(small * 1000, 1),
                                  "health_kept_alive_ms": round(kept * 1000, 1), "health_new_connection_ms": round(fresh * 1000, 1)}
        print(f"where the server's time goes: a run makes {count} HTTP requests ({request_seconds:.2f} s of the run); a small "
              f"request (get_experiment) takes {small * 1000:.0f} ms median; /health {kept * 1000:.0f} ms on a kept-alive "
              f"connection (as MLflow's client sends), {fresh * 1000:.0f} ms on a new connection each time")
        if kept - fresh > 0.03:
            print("  every kept-alive request waits ~40 ms: the response body is held by Nagle's algorithm until the client's "
                  "delayed ACK (no TCP_NODELAY on the server's sockets: uvicorn with --workers > 1, Kludex/uvicorn#3149)")
    return [f"MLflow: server / embedded per run {ratios[2]:.2f}x (goal ≤ 1.5x): {goal(ratios[2] <= 1.5)}"], out


# ---------------------------------------------------------------- 2. DVC push / pull


def s3fs_client(settings: Any) -> Any:
    import s3fs

    # A new instance each time: no listing cache carried from one transfer to the next.
    return s3fs.S3FileSystem(endpoint_url=settings.s3_endpoint, key=settings["AWS_ACCESS_KEY_ID"],
                             secret=settings["AWS_SECRET_ACCESS_KEY"], skip_instance_cache=True)


def scratch_repo(env: dict[str, str], remote_url: str, cache_dir: Path | None = None) -> Path:
    """A git+DVC repo with this checkout's pipeline files, its remote `storage` at ``remote_url``."""
    root = Path(tempfile.mkdtemp(prefix="mnist-bench-dvc-"))
    for name in ("dvc.yaml", "dvc.lock", "params.yaml"):
        shutil.copy2(REPO_ROOT / name, root / name)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=root, check=True, env=env)
    cache = f"[cache]\n    dir = {cache_dir}\n" if cache_dir else ""
    (root / ".dvc" / "config").write_text(
        "[core]\n    analytics = false\n    autostage = false\n    remote = storage\n"
        f"{cache}['remote \"storage\"']\n    url = {remote_url}\n"
    )
    return root


def run_dvc(args: list[str], root: Path, env: dict[str, str]) -> float:
    return timed([str(BIN / "dvc"), *args], root, env).seconds


def timed_call(call: Any) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def bench_dvc(settings: Any, bench_id: str, repeats: int, extra: bool) -> tuple[list[str], dict[str, Any]]:
    env = settings.environ(child_env(DVC_NO_ANALYTICS="1"))
    bucket = settings["MNIST_S3_BUCKET"]
    prefix = f"{bucket}/bench/{bench_id}"
    cache = REPO_ROOT / ".dvc" / "cache"
    scratches: list[Path] = []

    def scratch(url: str, cache_dir: Path | None = None) -> Path:
        scratches.append(scratch_repo(env, url, cache_dir))
        return scratches[-1]

    def drop(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    times: dict[str, list[float]] = {key: [] for key in ("dvc push", "s3fs put", "dvc pull", "dvc fetch", "s3fs get")}
    extras: list[tuple[str, float]] = []
    objects: list[str] = []
    size = 0
    try:
        for repeat in range(repeats):
            # Push: DVC first on even repeats (the first push also tells which objects the plain copy moves).
            def dvc_push() -> None:
                times["dvc push"].append(run_dvc(["push", "-r", "storage"], scratch(f"s3://{prefix}/dvc-{repeat}", cache), env))

            def plain_put() -> None:
                rel = objects
                fs = s3fs_client(settings)
                times["s3fs put"].append(timed_call(lambda: fs.put([str(cache / key) for key in rel],
                                                                   [f"{prefix}/plain-{repeat}/{key}" for key in rel])))

            for step in (dvc_push, plain_put) if repeat % 2 == 0 else (plain_put, dvc_push):
                step()
                if not objects:
                    found = s3fs_client(settings).find(f"{prefix}/dvc-0", detail=True)
                    objects = sorted(key[len(f"{prefix}/dvc-0/"):] for key in found)
                    size = sum(info["size"] for info in found.values())
                    if not objects:
                        raise SystemExit("`dvc push` pushed nothing: does dvc.lock name any cached output?")

            # Pull from the first push's prefix into an empty cache; the plain get of the first plain copy.
            def dvc_pull() -> None:
                root = scratch(f"s3://{prefix}/dvc-0")
                times["dvc pull"].append(run_dvc(["pull", "-r", "storage"], root, env))
                drop(root)

            def dvc_fetch() -> None:
                root = scratch(f"s3://{prefix}/dvc-0")
                times["dvc fetch"].append(run_dvc(["fetch", "-r", "storage"], root, env))
                drop(root)

            def plain_get() -> None:
                target = Path(tempfile.mkdtemp(prefix="mnist-bench-get-"))
                scratches.append(target)
                fs = s3fs_client(settings)
                times["s3fs get"].append(timed_call(lambda: fs.get(f"{prefix}/plain-0/", f"{target}/", recursive=True)))
                drop(target)

            steps = [dvc_pull, dvc_fetch, plain_get]
            for step in steps if repeat % 2 == 0 else steps[::-1]:
                step()
            for path in scratches:  # push scratches hold only pointers to this checkout's cache
                drop(path)

        # Fixed costs and concurrency, once each.
        root = scratch(f"s3://{prefix}/dvc-0", cache)
        extras.append(("no-op `dvc push` (all objects already there)", run_dvc(["push", "-r", "storage"], root, env)))
        if extra:
            extras.append(("`dvc push --jobs 64`", run_dvc(["push", "-r", "storage", "--jobs", "64"],
                                                           scratch(f"s3://{prefix}/dvc-jobs64", cache), env)))
            root = scratch(f"s3://{prefix}/dvc-0")
            extras.append(("`dvc fetch --jobs 64`", run_dvc(["fetch", "-r", "storage", "--jobs", "64"], root, env)))
    finally:
        for path in scratches:
            drop(path)
        with contextlib.suppress(FileNotFoundError):
            s3fs_client(settings).rm(prefix, recursive=True)

    mb = size / 1e6
    load_now = os.getloadavg()
    print(f"\n## 2. DVC against a plain s3fs copy ({len(objects)} objects, {mb:.1f} MB; {repeats} repeats, medians; {load()})")
    rows = [[what, f"{median(seconds):.2f}", f"{mb / median(seconds):.1f}", spread(seconds)] for what, seconds in times.items()]
    table(["transfer", "seconds", "MB/s", "seconds min-max"], rows)
    for what, seconds in extras:
        rate = "" if what.startswith("no-op") else f" ({mb / seconds:.1f} MB/s)"
        print(f"{what}: {seconds:.2f} s{rate}")
    push = median(times["s3fs put"]) / median(times["dvc push"])
    pull = median(times["s3fs get"]) / median(times["dvc pull"])
    fetch = median(times["s3fs get"]) / median(times["dvc fetch"])
    print(f"DVC / plain throughput: push {push:.2f}x, pull {pull:.2f}x (fetch + checkout), fetch alone {fetch:.2f}x")
    out = {
        "repeats": repeats,
        "objects": len(objects),
        "megabytes": round(mb, 1),
        "transfers": {what: figure(seconds) | {"mb_per_s": round(mb / median(seconds), 1)} for what, seconds in times.items()},
        "once": {what: {"seconds": round(seconds, 2)} | ({} if what.startswith("no-op") else {"mb_per_s": round(mb / seconds, 1)})
                 for what, seconds in extras},
        "dvc_over_plain_throughput": {"push": ratio(push, goal_min=0.5), "pull": ratio(pull, goal_min=0.5), "fetch": ratio(fetch)},
        "load_average": [round(value, 2) for value in load_now],
    }
    return [
        f"DVC push / plain put throughput {push:.2f}x (goal ≥ 0.5x): {goal(push >= 0.5)}",
        f"DVC pull / plain get throughput {pull:.2f}x (goal ≥ 0.5x): {goal(pull >= 0.5)} (fetch alone {fetch:.2f}x)",
    ], out


# ---------------------------------------------------------------- 3. sweep workers


def sweep_params(path: Path, study: str, trials_total: int, subset: int, epochs: int) -> None:
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["models"]["cnn"].update(epochs=epochs, batch_size=64)
    params["sweep"] = {
        "model": "cnn", "study_name": study, "train_subset": subset, "trials_per_worker": trials_total,
        "heartbeat_s": 10, "grace_s": 30,
        "pruner": {"startup_trials": 1000, "warmup_epochs": epochs},  # no trial is ever pruned
        "space": {"optimizer.learning_rate": {"low": 1.0e-4, "high": 1.0e-2, "log": True}},
    }
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def bench_sweep(settings: Any, bench_id: str, trials: int, subset: int, epochs: int, threads_variant: bool) -> tuple[list[str], dict[str, Any]]:
    import optuna

    os.environ["PGPASSWORD"] = settings["PGPASSWORD"]
    storage = settings["MNIST_SWEEP_STORAGE"]
    experiment = f"bench-{bench_id}-sweep"
    base_env = settings.environ(child_env(MLFLOW_EXPERIMENT_NAME=experiment, MLFLOW_TRACKING_URI=settings.tracking_uri,
                                          MNIST_SWEEP_STORAGE=storage))
    one_thread = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
    variants = [("1 worker", 1, {}), ("2 workers", 2, {})]
    if threads_variant:
        variants.append(("2 workers, 1 TF thread each", 2, one_thread))
    scratch = Path(tempfile.mkdtemp(prefix="mnist-bench-sweep-"))
    studies: list[str] = []
    rows, walls, trial_medians, spans, variants_out = [], {}, {}, {}, {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        for label, workers, extra_env in variants:
            study = f"bench-{bench_id}-{workers}w{'-1t' if extra_env else ''}"
            studies.append(study)
            params = scratch / f"{study}.yaml"
            sweep_params(params, study, trials, subset, epochs)
            started_at = dt.datetime.now()
            cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            command = [str(BIN / "mnist-sweep"), "--params", str(params), "run", "--workers", str(workers),
                       "--trials", str(trials // workers)]
            proc = subprocess.run(command, cwd=REPO_ROOT, env=base_env | extra_env, capture_output=True, text=True)
            wall = time.perf_counter() - started
            cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)  # every descendant, workers included
            cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
            if proc.returncode != 0:
                output = (proc.stdout + proc.stderr)[-4000:]
                raise SystemExit(f"`mnist-sweep run --workers {workers}` failed ({proc.returncode}):\n{output}")
            done = optuna.load_study(study_name=study, storage=storage).trials
            states = {trial.state.name for trial in done}
            if states != {"COMPLETE"} or len(done) != trials:
                raise SystemExit(f"study {study}: expected {trials} complete trials, got {[t.state.name for t in done]}")
            done = sorted(done, key=lambda t: t.datetime_start)
            durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in done]
            trial_medians[label] = median(durations)
            first = min(t.datetime_start for t in done)
            last = max(t.datetime_complete for t in done)
            walls[label] = wall
            spans[label] = (last - first).total_seconds()
            variants_out[label] = {
                "workers": workers, "trials_per_worker": trials // workers, "wall_s": round(wall, 1),
                "startup_before_first_trial_s": round((first - started_at).total_seconds(), 1),
                "trial_s": figure(durations, 1), "first_start_to_last_end_s": round((last - first).total_seconds(), 1),
                "after_last_trial_s": round(wall - (last - started_at).total_seconds(), 1), "cpu_s": round(cpu), "environment": extra_env,
            }
            rows.append([label, f"{trials // workers}", f"{wall:.1f}", f"{(first - started_at).total_seconds():.1f}",
                         " ".join(f"{d:.1f}" for d in durations), f"{(last - first).total_seconds():.1f}",
                         f"{wall - (last - started_at).total_seconds():.1f}", f"{cpu:.0f} ({cpu / wall:.2f})"])
    finally:
        for study in studies:
            with contextlib.suppress(Exception):
                optuna.delete_study(study_name=study, storage=storage)
        with contextlib.suppress(Exception):
            from mlflow import MlflowClient

            client = MlflowClient(settings.tracking_uri)
            found = client.get_experiment_by_name(experiment)
            if found is not None:
                client.delete_experiment(found.experiment_id)
        shutil.rmtree(scratch, ignore_errors=True)

    load_now = os.getloadavg()
    print(f"\n## 3. `mnist-sweep run`: {trials} trials of the CNN ({epochs} epochs on {subset} digits, only the learning rate "
          f"varies, nothing pruned), seconds; {load()}")
    table(["variant", "trials per worker", "wall", "start-up before 1st trial", "each trial, by start", "1st trial start to last end",
           "after last trial (best, exit)", "CPU s (cores busy)"], rows)
    wall_ratio = walls["2 workers"] / walls["1 worker"]
    print(f"2 workers / 1 worker wall time: {wall_ratio:.2f}x (ideal 0.5x); a trial takes "
          f"{trial_medians['2 workers'] / trial_medians['1 worker']:.1f}x as long with 2 workers (medians)")
    serial = walls["1 worker"] - spans["1 worker"]
    print(f"serial part of 1 worker's wall (start-up, best, exit): {serial:.1f} s; with the trials perfectly split over 2 "
          f"workers the ratio would be {(serial + spans['1 worker'] / 2) / walls['1 worker']:.2f}x")
    lines = [f"sweep: 2 workers / 1 worker wall time {wall_ratio:.2f}x (goal ≤ 0.6x on {os.cpu_count()} CPUs): {goal(wall_ratio <= 0.6)}"]
    out = {
        "trials": trials, "train_subset": subset, "epochs": epochs, "variants": variants_out,
        "two_over_one_worker_wall": ratio(wall_ratio, goal_max=0.6),
        "perfect_split_wall": ratio((serial + spans["1 worker"] / 2) / walls["1 worker"]),
        "load_average": [round(value, 2) for value in load_now],
    }
    if threads_variant:
        limited = walls["2 workers, 1 TF thread each"] / walls["1 worker"]
        print(f"2 workers with 1 TF thread each / 1 worker: {limited:.2f}x")
        lines.append(f"  (2 workers with 1 TF thread each: {limited:.2f}x)")
        out["two_workers_one_thread_over_one_worker_wall"] = ratio(limited)
    return lines, out


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, a smaller sweep, no extra variants")
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--skip-dvc", action="store_true")
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--mlflow-repeats", type=int, help="timed runs per store (default 9; --quick 3)")
    parser.add_argument("--dvc-repeats", type=int, help="transfers of each kind (default 3; --quick 1)")
    parser.add_argument("--sweep-trials", type=int, help="trials in all, an even number (default 4; --quick 2)")
    parser.add_argument("--output", type=Path, default=RESULTS / "team.json")
    args = parser.parse_args()
    mlflow_repeats = args.mlflow_repeats or (3 if args.quick else 9)
    dvc_repeats = args.dvc_repeats or (1 if args.quick else 3)
    trials = args.sweep_trials or (2 if args.quick else 4)
    if trials < 2 or trials % 2:
        parser.error("--sweep-trials must be an even number ≥ 2 (1 worker x N against 2 workers x N/2)")

    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), "
          f"{platform.platform()}, Python {platform.python_version()}; load average {os.getloadavg()[0]:.2f}")
    try:
        settings = load_settings(REPO_ROOT)
        down = [(name, problem) for name, problem in check_all(settings) if problem]
    except ServiceError as error:
        print(f"the team stack is not configured: {error}", file=sys.stderr)
        return 1
    if down:
        for name, problem in down:
            print(f"{name} is down: {problem}", file=sys.stderr)
        print("start the stack with `make services`, then rerun", file=sys.stderr)
        return 1
    print(f"stack: MLflow {settings.tracking_uri}, S3 {settings.s3_endpoint} (bucket {settings['MNIST_S3_BUCKET']}), "
          "PostgreSQL for the sweeps: all healthy")
    bench_id = f"{dt.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"

    verdicts: list[str] = []
    results: dict[str, Any] = {}
    if not args.skip_mlflow:
        lines, results["mlflow"] = bench_mlflow(settings, bench_id, mlflow_repeats)
        verdicts += lines
    if not args.skip_dvc:
        lines, results["dvc"] = bench_dvc(settings, bench_id, dvc_repeats, extra=not args.quick)
        verdicts += lines
    if not args.skip_sweep:
        subset, epochs = (1000, 1) if args.quick else (3000, 2)
        lines, results["sweep"] = bench_sweep(settings, bench_id, trials, subset, epochs, threads_variant=not args.quick)
        verdicts += lines
    print("\n## goals")
    for line in verdicts:
        print(line)
    # The services run on this machine, sharing its cores with the benchmark.
    write_results(args.output, "team", {"quick": args.quick, "services": "on this machine", **results},
                  libraries=("s3fs", "optuna", "psycopg"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
