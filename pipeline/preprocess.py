"""DVC stage `preprocess`: raw IDX files -> flat, image, one-hot and label arrays (.npy)."""

from __future__ import annotations

import logging
import sys

from mnist_pipeline.data.arrays import save_split
from mnist_pipeline.config import load_params
from mnist_pipeline.data.idx import check_same_count, read_idx_gz
from mnist_pipeline.data.preprocess import preprocess
from mnist_pipeline.stage import run_stage

log = logging.getLogger("mnist_pipeline.preprocess")


def body() -> None:
    params = load_params()
    files, paths = params.data.files, params.paths

    def read_pair(images_file, labels_file):
        images = read_idx_gz(paths.raw(images_file.filename), "images")
        labels = read_idx_gz(paths.raw(labels_file.filename), "labels")
        check_same_count(images, labels, f"{images_file.filename} / {labels_file.filename}")
        return images, labels

    train = read_pair(files.train_images, files.train_labels)
    test = read_pair(files.test_images, files.test_labels)
    for split, arrays in preprocess(train, test, params.preprocess).items():
        save_split(paths, split, arrays)
        log.info("%s: wrote %s to %s (%d digits)", split, ", ".join(arrays), paths.processed_dir(split), arrays["labels"].shape[0])


def main() -> int:
    return run_stage("preprocess", body)


if __name__ == "__main__":
    sys.exit(main())
