"""Integration: the download and preprocess stages run through `dvc repro` in a copy of the project."""

from __future__ import annotations

import json

import numpy as np

from conftest import dvc, edit_params, subprocess_env


def test_download_and_preprocess_through_dvc_then_noop_then_selective_rerun(project, synthetic_mirror):
    env = subprocess_env(MNIST_MIRROR=str(synthetic_mirror))
    dvc(project, "repro", "preprocess", env=env)

    train_flat = np.load(project / "data/processed/train/flat.npy", mmap_mode="r")
    assert train_flat.shape == (270, 784) and train_flat.dtype == np.float32  # the last 30 of 300 are the validation split
    assert np.load(project / "data/processed/test/image.npy").shape == (120, 28, 28, 1)
    assert sorted(p.name for p in (project / "data/raw").iterdir()) == sorted(
        ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    )

    # Nothing changed: a second repro runs nothing.
    again = dvc(project, "repro", "preprocess", env=env)
    assert "didn't change, skipping" in again.stdout and "Running stage" not in again.stdout

    # A preprocess-only key reruns preprocess, not download.
    edit_params(project, lambda p: p["preprocess"].__setitem__("train_limit", 200))
    status = json.loads(dvc(project, "status", "--json", "preprocess", env=env).stdout)
    assert set(status) == {"preprocess"}, status
    rerun = dvc(project, "repro", "preprocess", env=env)
    assert "Running stage 'preprocess'" in rerun.stdout and "Running stage 'download'" not in rerun.stdout
    assert np.load(project / "data/processed/train/labels.npy").shape == (180,)  # and 20 validation digits
    assert np.load(project / "data/processed/validation/labels.npy").shape == (20,)


def test_bad_params_fail_before_any_work_and_name_the_key(project, synthetic_mirror):
    env = subprocess_env(MNIST_MIRROR=str(synthetic_mirror))
    edit_params(project, lambda p: p["data"].__setitem__("retries", -1))
    result = dvc(project, "repro", "download", env=env, check=False)
    assert result.returncode != 0
    assert "data.retries" in result.stderr + result.stdout
    assert not (project / "data/raw").exists() or not any((project / "data/raw").iterdir())


def test_corrupt_mirror_fails_with_checksum_message_and_leaves_no_files(project, synthetic_mirror):
    victim = synthetic_mirror / "train-labels-idx1-ubyte.gz"
    import gzip

    victim.write_bytes(gzip.compress(gzip.decompress(victim.read_bytes())[:-1] + b"\x07"))
    result = dvc(project, "repro", "download", env=subprocess_env(MNIST_MIRROR=str(synthetic_mirror)), check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "train-labels-idx1-ubyte.gz" in output and "sha256" in output.lower()
    assert not (project / "data/raw/train-labels-idx1-ubyte.gz").exists()
