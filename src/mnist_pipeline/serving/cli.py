"""``mnist-predict``: classify handwritten digits in image files, folders, IDX or ``.npy`` files.

    mnist-predict PATH... [--model URI] [--format table|csv|json]

Photos and scans are made MNIST-style first (``data/images.py``: grayscale, inverted when the paper is
light, cropped to the ink, longer side scaled to 20 px, centred by centre of mass in 28x28).
A file that can't be read, or holds no ink, gets its own error line; the others are still
classified, and the exit status is 1 when any input failed (2 when nothing could run at all).
Each probability is calibrated: the model's temperature, fitted on the validation digits, makes
"0.95" right about 95% of the time on digits like MNIST's (docs: validation).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.models.store import CONFIG_FILE, MODEL_SUBDIR
from mnist_pipeline.tracking.store import resolve_tracking_target

log = logging.getLogger("mnist_pipeline.predict")

DEFAULT_MODEL = "models:/mnist@champion"
EXIT_SOME_FAILED = 1
EXIT_UNUSABLE = 2


def load_classifier(uri: str) -> Any:
    """Something with ``predict(digits) -> DataFrame``: a registered model, or a local model folder."""
    local = Path(uri)
    if local.is_dir():
        from mnist_pipeline.serving.classifier import DigitClassifier

        folder = local / MODEL_SUBDIR if (local / MODEL_SUBDIR / CONFIG_FILE).is_file() else local
        if not (folder / CONFIG_FILE).is_file():
            raise PipelineError(f"--model {uri}: a folder, but not a trained model (expected models/<name> or models/<name>/model with {CONFIG_FILE})")
        return DigitClassifier(folder).load()
    if "://" not in uri and not uri.startswith("models:/"):
        raise PipelineError(f"--model {uri}: no such folder; expected models:/<name>@<alias>, models:/<name>/<version>, runs:/... or a models/<name> folder")
    import mlflow
    from mlflow.exceptions import MlflowException

    target = resolve_tracking_target()
    mlflow.set_tracking_uri(target.tracking_uri)
    try:
        return mlflow.pyfunc.load_model(uri)
    except MlflowException as exc:
        raise PipelineError(
            f"--model {uri}: cannot load it from {target.tracking_uri} ({exc.message}); "
            "`make run` registers the models and sets the champion alias"
        ) from None
    except OSError as exc:
        raise PipelineError(f"--model {uri}: cannot load it from {target.tracking_uri} ({exc})") from None


def classify(paths: Sequence[str], classifier: Any) -> list[dict[str, Any]]:
    """One row per input digit, in input order: ``path``, ``digit``, ``probability``, ``probabilities`` or ``error``."""
    from mnist_pipeline.data.images import collect_digits

    items = collect_digits(paths)
    good = [item.pixels for item in items if item.error is None]
    # One batch for every readable input; its rows come back in the same order.
    predictions = classifier.predict(np.stack(good).astype(np.uint8)).itertuples(index=False) if good else iter(())
    rows = []
    for item in items:
        if item.error is not None:
            rows.append({"path": item.source, "digit": None, "probability": None, "error": item.error})
            continue
        row = next(predictions)
        rows.append(
            {
                "path": item.source,
                "digit": int(row.digit),
                "probability": round(float(row.probability), 6),
                "probabilities": [round(float(p), 6) for p in row.probabilities],
            }
        )
    return rows


def render(rows: list[dict[str, Any]], output_format: str) -> str:
    if output_format == "json":
        return json.dumps(rows, indent=2)
    if output_format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "digit", "probability", "error"])
        for row in rows:
            writer.writerow([row["path"], "" if row["digit"] is None else row["digit"],
                             "" if row["probability"] is None else f"{row['probability']:.6f}", row.get("error", "")])
        return buffer.getvalue().rstrip("\n")
    width = max([len("path"), *(len(row["path"]) for row in rows)])
    lines = [f"{'path':<{width}}  digit  probability (calibrated)"]
    for row in rows:
        if row["digit"] is None:
            lines.append(f"{row['path']:<{width}}  error: {row['error'].removeprefix(row['path'] + ': ')}")
        else:
            lines.append(f"{row['path']:<{width}}  {row['digit']:>5}  {row['probability']:>11.4f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mnist-predict", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files (PNG, JPEG, BMP, ...), folders of them, IDX or .npy digit files")
    parser.add_argument("--model", default=DEFAULT_MODEL, metavar="URI",
                        help=f"models:/<name>@<alias>, models:/<name>/<version> or a models/<name> folder (default {DEFAULT_MODEL})")
    parser.add_argument("--format", dest="output_format", choices=("table", "csv", "json"), default="table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="mnist-predict: %(message)s")
    try:
        classifier = load_classifier(args.model)
        rows = classify(args.paths, classifier)
    except PipelineError as exc:
        log.error("%s", exc)
        return EXIT_UNUSABLE
    sys.stdout.write(render(rows, args.output_format) + "\n")
    failed = [row for row in rows if row["digit"] is None]
    for row in failed:
        log.error("%s", row["error"])  # it names the file
    if failed:
        log.error("%d of %d inputs could not be classified", len(failed), len(rows))
        return EXIT_SOME_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
