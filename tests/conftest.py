"""Shared fixtures: tiny synthetic MNIST-shaped data and throwaway copies of the project."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

# "ci" derandomizes, so a clean-clone check predicts CI's run exactly. To hunt for bugs before a change lands,
# run the property tests under a few --hypothesis-seed values; a bug found gets an @example.
# Its timing checks are off: on a 2-core CI machine running other work beside the tests, they measure the load, not the code.
hypothesis_settings.register_profile(
    "ci", derandomize=True, print_blob=True, deadline=None, suppress_health_check=[HealthCheck.too_slow],
)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_MIRROR = REPO_ROOT.parent / "shared" / "datasets" / "mnist"
PROJECT_FILES = ("pipeline", "src", "noise", "params.yaml", "dvc.yaml", ".dvcignore", ".dvc/config", ".dvc/plots", ".gitignore", "pyproject.toml")
MNIST_FILENAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def synthetic_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Digit-like images: each class lights a different block, plus noise, so models can learn it."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(count) % 10).astype(np.uint8)
    rng.shuffle(labels)
    images = rng.integers(0, 40, size=(count, 28, 28), dtype=np.uint8)
    for digit in range(10):
        row, col = divmod(digit, 4)
        images[labels == digit, 2 + row * 8 : 8 + row * 8, 2 + col * 6 : 8 + col * 6] = 230
    return images, labels


def write_mirror(directory: Path, n_train: int = 300, n_test: int = 120, seed: int = 0) -> dict[str, dict]:
    """Write the four gzip IDX files of a synthetic MNIST and its writer labels; return their pins
    (``data.files``' four, and ``writers`` for ``testsets.writers.file``)."""
    from mnist_pipeline.data.idx import encode_idx

    train_images, train_labels = synthetic_digits(n_train, seed)
    test_images, test_labels = synthetic_digits(n_test, seed + 1)
    arrays = {
        "train_images": train_images,
        "train_labels": train_labels,
        "test_images": test_images,
        "test_labels": test_labels,
    }
    directory.mkdir(parents=True, exist_ok=True)
    pins = {}
    for key, array in arrays.items():
        raw = encode_idx(array)
        (directory / MNIST_FILENAMES[key]).write_bytes(gzip.compress(raw))
        pins[key] = {"filename": MNIST_FILENAMES[key], "sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw)}
    pins["writers"] = write_writers(directory, test_labels)
    return pins


QMNIST_FILENAME = "qmnist-test-labels.tsv.gz"


def write_writers(directory: Path, test_labels: np.ndarray, rows: int = 10_000) -> dict:
    """A synthetic QMNIST extended-labels file whose first rows label ``test_labels``; returns its pin.

    Like the real one: the first half of the test digits from series 4, the rest from series 0,
    each writer writing ten digits in a row.
    """
    classes = np.resize(np.asarray(test_labels, dtype=np.int64), rows)
    classes[: len(test_labels)] = test_labels
    index = np.arange(rows)
    series = np.where(index < len(test_labels) // 2, 4, 0)
    writer = np.where(series == 4, 2100, 0) + index // 10
    table = np.column_stack([classes, series, writer, index % 10, 30 + classes, index, np.zeros((rows, 2), dtype=np.int64)])
    raw = "".join("\t".join(map(str, row)) + "\n" for row in table).encode()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / QMNIST_FILENAME).write_bytes(gzip.compress(raw))
    return {"filename": QMNIST_FILENAME, "sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw)}


def make_testsets(root: Path, test_labels: np.ndarray, corruptions: list[str] | None = None) -> None:
    """Run the real ``testsets`` stage in ``root`` (cwd, with params.yaml and the processed test
    split), its writer labels served from a synthetic file beside it."""
    pin = write_writers(root / "qmnist-mirror", test_labels)

    def use_synthetic_writers(params: dict) -> None:
        params["testsets"]["writers"] |= {"file": pin, "mirrors": [(root / "qmnist-mirror").as_uri()], "retries": 0}
        if corruptions is not None:
            params["testsets"]["corruptions"] = corruptions

    edit_params(root, use_synthetic_writers)
    (root / "reports").mkdir(exist_ok=True)
    assert load_entry("testsets").main() == 0


def make_valsets(root: Path, corruptions: list[str] | None = None) -> None:
    """Run the real ``valsets`` stage in ``root`` (cwd, with params.yaml and the processed validation split)."""
    if corruptions is not None:
        edit_params(root, lambda params: params["valsets"].update(corruptions=corruptions))
    (root / "reports").mkdir(exist_ok=True)
    assert load_entry("valsets").main() == 0


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: this venv's python first on PATH (models/quiet_keras.py quiets TensorFlow)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("QMNIST_MIRROR", None)  # a project made here names its own writer labels in params.yaml
    env.update(extra)
    return env


def run_cmd(args: list[str], cwd: Path, env: dict[str, str] | None = None, check: bool = True, timeout: float = 600):
    result = subprocess.run(args, cwd=cwd, env=env or subprocess_env(), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def dvc(project: Path, *args: str, env: dict[str, str] | None = None, check: bool = True):
    return run_cmd([sys.executable, "-m", "dvc", *args], cwd=project, env=env, check=check)


def load_entry(stage: str):
    """``pipeline/<stage>.py`` as a module, so a test can call its ``main()`` in-process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{stage}_entry", REPO_ROOT / "pipeline" / f"{stage}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def keep_models(params: dict, models: dict, ensembles: dict | None = None) -> None:
    """Replace ``params["models"]`` (and ``ensembles``: by default those whose members all remain),
    and drop gate entries for models no longer there (the params validator rejects gate settings
    and ensemble members that name unknown models)."""
    params["models"] = models
    if ensembles is None:
        ensembles = {name: entry for name, entry in params.get("ensembles", {}).items() if set(entry["members"]) <= set(models)}
    params["ensembles"] = ensembles
    scored = set(models) | set(ensembles)
    params["gate"]["floors"] = {name: value for name, value in params["gate"].get("floors", {}).items() if name in scored}


def sync_ensemble_stages(project: Path) -> None:
    """What a user does after changing ``ensembles`` in params.yaml: list each ensemble's members
    as its stage's deps in dvc.yaml, and drop the stage of an ensemble that is gone."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    ensembles = params.get("ensembles") or {}
    path = project / "dvc.yaml"
    pipeline = yaml.safe_load(path.read_text())
    stages = pipeline["stages"]
    for name in [name for name, stage in stages.items() if isinstance(stage.get("cmd"), list) and f"python pipeline/train.py {name}" in stage["cmd"]]:
        if name not in ensembles:
            del stages[name]
            continue
        def is_member_dep(dep: str) -> bool:
            return (dep.startswith("${paths.models_dir}/") and dep.endswith("/model")) or (
                dep.startswith("${paths.predictions_dir}/") and dep.endswith(".validation.npz")
            )

        members = ensembles[name]["members"]
        scores = [f"${{paths.predictions_dir}}/{member}.validation.npz" for member in members] if ensembles[name].get("selection") else []
        others = [dep for dep in stages[name]["deps"] if not is_member_dep(dep)]
        stages[name]["deps"] = others + [f"${{paths.models_dir}}/{member}/model" for member in members] + scores
    path.write_text(yaml.safe_dump(pipeline, sort_keys=False))


def edit_params(project: Path, edit) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    edit(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    if (project / "dvc.yaml").exists():
        sync_ensemble_stages(project)


# ---------------------------------------------------------------------------------------------
# a pre-migrated MLflow store: creating an SQLite store's schema takes seconds, copying it milliseconds

_MIGRATED_DB: Path | None = None
_MIGRATING = threading.Lock()  # the smoke build's thread may ask at the same time as a test


def migrated_db(tmp_root: Path) -> Path:
    """An MLflow SQLite database whose schema is created once per test session."""
    global _MIGRATED_DB
    with _MIGRATING:
        if _MIGRATED_DB is None:
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

            folder = tmp_root / "migrated-mlflow-store"
            folder.mkdir(parents=True, exist_ok=True)
            SqlAlchemyStore(f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri())
            _MIGRATED_DB = folder / "mlflow.db"
        return _MIGRATED_DB


def seed_store(root: Path, tmp_root: Path) -> None:
    """Put a copy of the migrated store where the project's default store lives (``mlruns/mlflow.db``)."""
    (root / "mlruns").mkdir(exist_ok=True)
    shutil.copy(migrated_db(tmp_root), root / "mlruns" / "mlflow.db")


@pytest.fixture
def tracking_store(tmp_path: Path, tmp_path_factory) -> Path:
    """``tmp_path`` holding a ready MLflow store at ``mlruns/mlflow.db``."""
    seed_store(tmp_path, tmp_path_factory.getbasetemp())
    return tmp_path


def make_project(tmp_path: Path, env: dict[str, str] | None = None) -> Path:
    """A git + DVC copy of the project in ``tmp_path/project`` whose download stage serves a
    tiny synthetic MNIST from ``tmp_path/mirror``, with a ready (empty) MLflow store. ``env``:
    the environment of its git calls (default: this process's, as it is now)."""
    root = tmp_path / "project"
    root.mkdir()
    for name in PROJECT_FILES:
        source = REPO_ROOT / name
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    pins = write_mirror(tmp_path / "mirror")
    writers = pins.pop("writers")

    def use_synthetic(params: dict) -> None:
        params["data"]["files"] = pins
        params["data"]["mirrors"] = ["http://127.0.0.1:9/unreachable/"]
        params["data"]["retries"] = 0
        # The writer labels come straight from the mirror folder (the download code reads file:// URLs too).
        params["testsets"]["writers"] |= {"file": writers, "mirrors": [(tmp_path / "mirror").as_uri()], "retries": 0}

    edit_params(root, use_synthetic)
    run_cmd(["git", "init", "-q", "-b", "main"], cwd=root, env=env)
    run_cmd(["git", "add", "-A"], cwd=root, env=env)
    run_cmd(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "copy"], cwd=root, env=env)
    seed_store(root, tmp_path.parent)
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path)


@pytest.fixture
def synthetic_mirror(project: Path) -> Path:
    return project.parent / "mirror"


# ---------------------------------------------------------------------------------------------
# one full smoke run of the pipeline (synthetic data, shrunk models), shared by the session


def smoke_models(params: dict) -> None:
    keep_models(
        params,
        {"mlp": params["models"]["mlp"] | {"epochs": 3, "batch_size": 32, "validation_split": 0.1}, "gaussian_nb": params["models"]["gaussian_nb"]},
        {"ensemble": {"type": "ensemble", "members": ["mlp", "gaussian_nb"], "selection": {"rounds": 3}}},
    )
    params["gate"]["floors"] = {"mlp": {"accuracy": 0.5}, "gaussian_nb": {"accuracy": 0.5}}


# Loaded by every Python process of the smoke run: records whether it imported TensorFlow.
MODULE_PROBE = """
import atexit, json, os, sys

def _record():
    with open(os.path.join(os.environ["MODULE_PROBE_DIR"], f"{os.getpid()}.json"), "w") as handle:
        json.dump({"argv": sys.argv, "tensorflow": "tensorflow" in sys.modules}, handle)

atexit.register(_record)
"""


SMOKE_FIXTURES = frozenset({"smoke_run", "smoke_project", "smoke_module_records"})
SMOKE_WAIT_SECONDS = 1200
_smoke_builder: threading.Thread | None = None


def _smoke_base(tmp_path_factory, worker_id: str) -> Path:
    """Where the session's smoke run lives: a folder both pytest-xdist workers see."""
    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    return shared / "smoke"


def _build_smoke(base: Path, env: dict[str, str]) -> None:
    """Run the smoke project's `dvc repro`; write ``repro.out`` (done) or ``repro.failed`` last.

    ``env`` was taken when the build started: tests running meanwhile in this process may patch
    ``os.environ`` (a PATH without git, say), and the build must not see that.
    """
    from mnist_pipeline.atomic import write_text

    try:
        project = make_project(base, env)
        edit_params(project, smoke_models)
        probe = base / "probe"
        (probe / "records").mkdir(parents=True)
        (probe / "sitecustomize.py").write_text(MODULE_PROBE)
        probed = env | {"MNIST_MIRROR": str(base / "mirror"), "PYTHONPATH": str(probe), "MODULE_PROBE_DIR": str(probe / "records")}
        result = run_cmd([sys.executable, "-m", "dvc", "repro"], cwd=project, env=probed, timeout=SMOKE_WAIT_SECONDS)
        shutil.move(probe / "records", base / "module_records")
        marker, text = base / "repro.out", result.stdout
    except Exception as error:  # noqa: BLE001 - every failure must reach the tests that wait for it
        marker, text = base / "repro.failed", f"{type(error).__name__}: {error}"
    write_text(marker, text)  # whole or not at all: the waiting tests read it as soon as it exists


def _start_smoke_build(base: Path) -> None:
    """Start the build in a thread of this process, unless a worker has claimed it already (the
    claim holds the builder's pid, so a worker that waits can tell when the builder has died)."""
    global _smoke_builder
    base.parent.mkdir(parents=True, exist_ok=True)
    try:
        claim = os.open(base.parent / "smoke.claimed", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(claim, str(os.getpid()).encode())
    os.close(claim)
    base.mkdir()
    # The thread needs the migrated store, and so MLflow; made here, first, so that no test imports
    # MLflow beside it: two threads importing MLflow's circular modules at once deadlock (_DeadlockError)
    # or see it half-initialised ("partially initialized module 'mlflow'").
    migrated_db(base.parent)
    _smoke_builder = threading.Thread(target=_build_smoke, args=(base, subprocess_env()), name="smoke-build", daemon=True)
    _smoke_builder.start()


def _builder_is_gone(base: Path) -> bool:
    try:
        pid = int((base.parent / "smoke.claimed").read_text())
    except (OSError, ValueError):
        return False  # being written
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    return False


def pytest_collection_modifyitems(items):
    """Tests that read the smoke run go last, so the build started with the session (below) has
    had time to finish. (pytest-xdist's loadfile hands out the files with the most tests first, so
    the two smoke files, with few tests, come late there anyway; its reordering beat this order
    alone, 200 s against 237 s.) Both workers sort alike, as xdist requires."""
    items.sort(key=lambda item: bool(SMOKE_FIXTURES.intersection(item.fixturenames)))


@pytest.fixture(scope="session", autouse=True)
def _smoke_build_starts_with_the_session(request, tmp_path_factory, worker_id):
    """Start the smoke run as the session starts, when any selected test needs it.

    Its `dvc repro` (a minute of stage processes) then runs beside the first tests instead of
    holding up the first test that needs it while the other worker waits idle. The process that
    started it waits for it at the end, so the other worker never waits for a build that died.
    """
    if any(SMOKE_FIXTURES.intersection(item.fixturenames) for item in request.session.items):
        _start_smoke_build(_smoke_base(tmp_path_factory, worker_id))
    yield
    if _smoke_builder is not None:
        _smoke_builder.join()


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, worker_id):
    """One full `dvc repro` of the smoke project per test session, shared by the pytest-xdist workers.

    Built once, in the background from the start of the session (above); tests read it, or work
    on copies (with its DVC cache). Every process of that repro records whether it imported
    TensorFlow (``smoke_module_records``).
    """
    import time
    import types

    base = _smoke_base(tmp_path_factory, worker_id)
    _start_smoke_build(base)  # a no-op unless the session fixture did not see this test coming
    finished, failed = base / "repro.out", base / "repro.failed"
    deadline = time.monotonic() + SMOKE_WAIT_SECONDS
    while not finished.exists():
        if failed.exists():
            pytest.fail(f"the session's smoke run failed: {failed.read_text()}")
        # Re-checked: the builder may have written its marker and exited since the checks above.
        if _builder_is_gone(base) and not (finished.exists() or failed.exists()):
            pytest.fail("the test process building the session's smoke run died before it finished")
        if time.monotonic() > deadline:
            pytest.fail(f"the session's smoke run did not finish in {SMOKE_WAIT_SECONDS} s")
        time.sleep(0.2)
    env = subprocess_env(MNIST_MIRROR=str(base / "mirror"))
    return base / "project", env, types.SimpleNamespace(stdout=finished.read_text())


@pytest.fixture(scope="session")
def smoke_module_records(smoke_run) -> list[dict]:
    import json

    project, _, _ = smoke_run
    return [json.loads(path.read_text()) for path in (project.parent / "module_records").glob("*.json")]


@pytest.fixture
def smoke_project(smoke_run, tmp_path):
    project, env, result = smoke_run
    copy = tmp_path / "project"
    shutil.copytree(project, copy, symlinks=True)
    return copy, env, result


def wait_for_first_epoch(client, experiment_name: str, process, exclude=frozenset(), timeout: float = 120.0):
    """Poll until a run of ``experiment_name`` (not in ``exclude``) has logged an epoch; returns the
    experiment. Fails if ``process``, the training, exits first or the time runs out."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        experiment = client.get_experiment_by_name(experiment_name)
        runs = [run for run in client.search_runs([experiment.experiment_id]) if run.info.run_id not in exclude] if experiment else []
        if runs and client.get_metric_history(runs[0].info.run_id, "val_accuracy"):
            return experiment
        assert process.poll() is None, process.communicate()[0]
        time.sleep(0.5)
    pytest.fail("training never logged an epoch")


def commit_all(project: Path, message: str) -> None:
    run_cmd(["git", "add", "-A"], cwd=project)
    run_cmd(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], cwd=project)
