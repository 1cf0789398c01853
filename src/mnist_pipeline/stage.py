"""What every ``pipeline/<stage>.py`` entry shares: logging set-up and turning errors into exits.

A ``PipelineError`` (bad params, corrupt data, no working mirror) is the user's to fix, so it is
logged as one clear message and the process exits with status 2, without a traceback. Anything
else is a bug and keeps its traceback.

Every command of the project (stages, ``mnist-sweep``, ``mnist-services``, ``mnist-predict``,
``python -m mnist_pipeline.recipes``) exits the same way: 0 done; 1 done, and the check it ran
said no (the gate failed, a service is unhealthy, some inputs could not be classified); 2 the
user's input or setup is wrong (the message says how); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

from mnist_pipeline.errors import ConfigError, PipelineError
from mnist_pipeline.timing import Stopwatch
from mnist_pipeline.tracking.store import describe_tracking_failure

EXIT_CHECK_FAILED = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

log = logging.getLogger("mnist_pipeline")


def configure_logging() -> None:
    level = os.environ.get("MNIST_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    # Third-party chatter that buries the stage's own progress lines.
    for noisy in ("urllib3", "matplotlib", "alembic", "mlflow.store.db.utils", "mlflow.utils.uv_utils", "h5py", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # MLflow warns that a uv venv has no pip; our pip requirements are explicit, so it's noise.
    logging.getLogger("mlflow.utils.environment").setLevel(logging.ERROR)


def interrupt_on_sigterm(signum: int, frame: object) -> None:
    # `kill`, a CI timeout or a scheduler stop: unwind like Ctrl-C, so open MLflow runs are
    # marked KILLED and temporary files are removed instead of left behind.
    raise KeyboardInterrupt(f"signal {signum}")


def user_error(exc: Exception) -> str | None:
    """The one line to show for a failure the user can fix (bad input, a tracking server that is down);
    None for anything else, which is a bug and keeps its traceback."""
    if isinstance(exc, PipelineError):
        return str(exc)

    return describe_tracking_failure(exc)


def check_stage_deps(required: dict[str, list[Path]]) -> None:
    """Under ``dvc repro``, refuse to run when this stage's dvc.yaml entry lacks a dep its params imply.

    ``required`` maps a params key to the paths it makes the stage read. DVC reruns a stage only
    for what its entry lists, and it can't template a list from params into deps
    (treeverse/dvc#7151), so such deps (an ensemble's members) are listed by hand and checked here.
    """
    stage = os.environ.get("DVC_STAGE")
    if not stage:
        return
    from dvc.repo import Repo

    with Repo() as repo:
        declared = {Path(dep.def_path) for found in repo.stage.collect(stage) for dep in found.deps}
    for key, paths in required.items():
        missing = [path.as_posix() for path in paths if path not in declared]
        if missing:
            raise ConfigError(
                f"{key} makes stage {stage!r} read {missing}, but dvc.yaml does not list them in its deps, so DVC "
                f"would not rerun it when they change: add them there (e.g. `- ${{paths.models_dir}}/<member>/model`)"
            )


_timer = Stopwatch()


def timer() -> Stopwatch:
    """This stage's stopwatch: bodies time their sections on it, and the stage reports them at the end."""
    return _timer


def _process_age() -> float:
    """Seconds since this process started: the interpreter's start-up and module imports included."""

    return time.time() - psutil.Process().create_time()


def report_timing(name: str, watch: Stopwatch, startup: float) -> None:
    """Where the stage's time went: one readable line, and one JSON line for benchmarks/bench_pipeline.py."""
    total = _process_age()
    record = {"stage": name, "total": round(total, 3), "start-up": round(startup, 3)}
    record |= {section: round(seconds, 3) for section, seconds in watch.seconds.items()}
    log.info("%s took %.1f s: start-up (interpreter, module imports) %.1f s, %s", name, total, startup, watch.describe())
    log.info("stage timing: %s", json.dumps(record))


def run_stage(name: str, body: Callable[[], None]) -> int:
    """Run one stage's body; return the process exit status."""
    startup = _process_age()
    configure_logging()
    signal.signal(signal.SIGTERM, interrupt_on_sigterm)
    stage_log = logging.getLogger(f"mnist_pipeline.{name}")
    try:
        body()
    except KeyboardInterrupt:
        stage_log.error("%s interrupted", name)
        return EXIT_INTERRUPTED
    except Exception as exc:
        message = user_error(exc)
        if message is None:
            raise  # a bug: keep the traceback
        stage_log.debug("%s failed", name, exc_info=True)
        stage_log.error("%s failed: %s", name, message)
        return EXIT_USER_ERROR
    report_timing(name, _timer, startup)
    return 0


def run_model_stage(stage: str, body: Callable[[str], None], description: str, argv: Sequence[str] | None = None) -> int:
    """The ``main()`` of a per-model stage (``train@<model>``, ``evaluate@<model>``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("model", help="a key of `models` in params.yaml")
    args = parser.parse_args(argv)
    return run_stage(f"{stage}@{args.model}", lambda: body(args.model))
