"""DVC stage `download`: fetch the four MNIST files into raw_dir, verified against params.yaml.

``MNIST_MIRROR`` (a URL or a local folder) is tried before the configured mirrors, e.g.
``MNIST_MIRROR=/path/to/mnist python pipeline/download.py`` for an offline machine.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mnist_pipeline.config import load_params
from mnist_pipeline.data.download import download_all
from mnist_pipeline.stage import run_stage


def body() -> None:
    params = load_params()
    download_all(params.data, Path(params.paths.raw_dir), os.environ.get("MNIST_MIRROR"))


def main(argv: list[str] | None = None) -> int:
    return run_stage("download", body)


if __name__ == "__main__":
    sys.exit(main())
