"""Downloads against a real local HTTP server and local folders, using tiny synthetic IDX files.

The server serves directories built in tmp_path (a good mirror, a truncated one, a corrupted
one, an empty one that 404s) plus a few scripted misbehaviours: 500s before success, a body cut
short, a stall past the timeout, and a slow stream used to SIGKILL a real download midway.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml

from mnist_pipeline.data.params import DataFiles, DataParams, PinnedFile
from mnist_pipeline.data.download import download_all, download_file, resolve_mirrors, verify_gz
from mnist_pipeline.errors import DownloadError
from mnist_pipeline.data.idx import encode_idx, read_idx_gz

REPO_ROOT = Path(__file__).resolve().parents[1]
BACKOFF = 0.01
FILENAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def _idx_payloads(seed: int) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    return {
        "train_images": encode_idx(rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)),
        "train_labels": encode_idx(rng.integers(0, 10, 20, dtype=np.uint8)),
        # The slow-stream test needs a file that takes many chunks: random pixels barely compress.
        "test_images": encode_idx(rng.integers(0, 256, (100, 28, 28), dtype=np.uint8)),
        "test_labels": encode_idx(rng.integers(0, 10, 100, dtype=np.uint8)),
    }


def _pin(key: str, payload: bytes) -> PinnedFile:
    return PinnedFile(filename=FILENAMES[key], sha256=hashlib.sha256(payload).hexdigest(), size=len(payload))


@dataclass
class Mirrors:
    root: Path
    base_url: str
    pins: dict[str, PinnedFile]
    payloads: dict[str, bytes]
    hits: Counter[str] = field(default_factory=Counter)

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}/"

    def dir(self, name: str) -> Path:
        return self.root / name

    def gz(self, key: str) -> bytes:
        return (self.dir("good") / FILENAMES[key]).read_bytes()

    def data_params(self, mirrors: list[str], retries: int = 0) -> DataParams:
        return DataParams(mirrors=mirrors, files=DataFiles(**self.pins), retries=retries, timeout_s=5)


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files under the server's root, plus scripted failures under special prefixes."""

    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass  # keep test output clean

    def do_GET(self) -> None:
        self.server.mirrors.hits[self.path] += 1
        prefix, _, name = self.path.strip("/").partition("/")
        good = self.server.mirrors.dir("good") / name
        if prefix == "flaky" and self.server.mirrors.hits[self.path] <= self.server.flaky_failures:
            self.send_error(500, "Internal Server Error")
        elif prefix == "flaky":
            self._send(good.read_bytes())
        elif prefix == "forbidden":
            self.send_error(403, "Forbidden")
        elif prefix == "short":
            body = good.read_bytes()
            self._send(body[: len(body) // 2], length=len(body))
            self.close_connection = True
        elif prefix == "stall":
            time.sleep(1.0)
            self._send(good.read_bytes())
        elif prefix == "slow":
            self._send_slowly(good.read_bytes())
        else:
            super().do_GET()

    def _send(self, body: bytes, length: int | None = None) -> None:
        try:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _send_slowly(self, body: bytes, chunk: int = 2048, pause_s: float = 0.02) -> None:
        try:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            for start in range(0, len(body), chunk):
                self.wfile.write(body[start : start + chunk])
                self.wfile.flush()
                time.sleep(pause_s)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client was killed, which is the point of this handler


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    mirrors: Mirrors
    flaky_failures = 2


@pytest.fixture
def mirrors(tmp_path: Path) -> Iterator[Mirrors]:
    payloads = _idx_payloads(seed=0)
    pins = {key: _pin(key, payload) for key, payload in payloads.items()}
    root = tmp_path / "www"
    wrong = _idx_payloads(seed=1)
    for key, payload in payloads.items():
        name = FILENAMES[key]
        compressed = gzip.compress(payload, mtime=0)
        for folder, content in {
            "good": compressed,
            "truncated": compressed[: len(compressed) // 2],
            # Same length, different bytes: only the checksum can tell.
            "corrupted": gzip.compress(wrong[key], mtime=0),
        }.items():
            (root / folder).mkdir(parents=True, exist_ok=True)
            (root / folder / name).write_bytes(content)
    (root / "empty").mkdir()

    def handler(*args: object, **kwargs: object) -> _Handler:
        return _Handler(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

    server = _Server(("127.0.0.1", 0), handler)
    state = Mirrors(root=root, base_url=f"http://127.0.0.1:{server.server_address[1]}", pins=pins, payloads=payloads)
    server.mirrors = state
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _fetch(mirrors: Mirrors, urls: list[str], dest: Path, key: str = "train_labels", retries: int = 0) -> Path:
    return download_file(mirrors.pins[key], urls, dest, retries=retries, timeout_s=5, backoff_s=BACKOFF)


# ---------------------------------------------------------------------------------------------
# mirror resolution


def test_resolve_mirrors_puts_env_first_dedupes_and_adds_slashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configured = ["https://a.example/mnist", "https://b.example/mnist/"]
    assert resolve_mirrors(configured, None) == ["https://a.example/mnist/", "https://b.example/mnist/"]
    assert resolve_mirrors(configured, "") == resolve_mirrors(configured, None)
    assert resolve_mirrors(configured, "https://b.example/mnist") == ["https://b.example/mnist/", "https://a.example/mnist/"]

    monkeypatch.chdir(tmp_path)
    local = tmp_path / "my mirror"
    assert resolve_mirrors(configured, "my mirror")[0] == local.as_uri() + "/"
    assert "%20" in resolve_mirrors(configured, "my mirror")[0]
    assert resolve_mirrors(configured, local.as_uri())[0] == local.as_uri() + "/"


# ---------------------------------------------------------------------------------------------
# mirror fallback and the combined error


def test_bad_mirrors_then_good_one_succeeds(mirrors: Mirrors, tmp_path: Path) -> None:
    dest = tmp_path / "raw" / FILENAMES["test_images"]
    urls = [mirrors.url(name) for name in ("empty", "truncated", "corrupted", "forbidden", "good")]
    assert _fetch(mirrors, urls, dest, key="test_images") == dest
    verify_gz(dest, mirrors.pins["test_images"])
    np.testing.assert_array_equal(
        read_idx_gz(dest, "images").tobytes(), np.frombuffer(mirrors.payloads["test_images"][16:], np.uint8).tobytes()
    )
    assert _leftovers(dest.parent) == [dest.name]
    assert dest.stat().st_mode & 0o777 == 0o666 & ~_umask()


def test_every_mirror_failing_lists_each_reason_and_leaves_nothing(mirrors: Mirrors, tmp_path: Path) -> None:
    dest = tmp_path / "raw" / FILENAMES["train_images"]
    missing_dir = tmp_path / "no-such-dir"
    pin = mirrors.pins["train_images"]
    wrong_sha = hashlib.sha256(_idx_payloads(seed=1)["train_images"]).hexdigest()
    urls = resolve_mirrors(
        [mirrors.url(name) for name in ("empty", "truncated", "corrupted", "forbidden")], str(missing_dir)
    )
    with pytest.raises(DownloadError) as caught:
        _fetch(mirrors, urls, dest, key="train_images")
    lines = str(caught.value).splitlines()
    assert lines[0] == "train-images-idx3-ubyte.gz: every mirror failed:"
    assert lines[1].startswith(f"  - {missing_dir.as_uri()}/: ") and "No such file or directory" in lines[1]
    assert lines[2] == f"  - {mirrors.url('empty')}: HTTP 404 File not found"
    assert lines[3].startswith(f"  - {mirrors.url('truncated')}: truncated gzip stream (")
    assert lines[4] == f"  - {mirrors.url('corrupted')}: sha256 mismatch: expected {pin.sha256}, got {wrong_sha}"
    assert lines[5] == f"  - {mirrors.url('forbidden')}: HTTP 403 Forbidden"
    assert "MNIST_MIRROR" in lines[6]
    assert not dest.exists()
    assert _leftovers(dest.parent) == []


def test_size_mismatch_is_reported(mirrors: Mirrors, tmp_path: Path) -> None:
    # train_labels served where test_labels (100 items) is expected: fewer decompressed bytes.
    pin = mirrors.pins["test_labels"].model_copy(update={"filename": FILENAMES["train_labels"]})
    with pytest.raises(DownloadError, match=rf"size mismatch: expected {pin.size} decompressed bytes, got 28"):
        download_file(pin, [mirrors.url("good")], tmp_path / "x.gz", retries=0, timeout_s=5, backoff_s=BACKOFF)
    bigger = mirrors.pins["train_labels"].model_copy(update={"filename": FILENAMES["test_labels"]})
    with pytest.raises(DownloadError, match=r"size mismatch: expected 28 decompressed bytes, got more than that"):
        download_file(bigger, [mirrors.url("good")], tmp_path / "x.gz", retries=0, timeout_s=5, backoff_s=BACKOFF)
    assert _leftovers(tmp_path) == ["www"]


# ---------------------------------------------------------------------------------------------
# MNIST_MIRROR: local folder or file:// URL, tried before the configured mirrors


@pytest.mark.parametrize("as_url", [False, True], ids=["plain-dir", "file-url"])
def test_env_mirror_is_tried_first_through_the_same_path(mirrors: Mirrors, tmp_path: Path, as_url: bool) -> None:
    local = shutil.copytree(mirrors.dir("good"), tmp_path / "local mirror")
    env = local.as_uri() if as_url else str(local)
    raw = tmp_path / "raw"
    paths = download_all(mirrors.data_params([mirrors.url("good")]), raw, env, backoff_s=BACKOFF)
    assert set(paths) == set(FILENAMES)
    for key, path in paths.items():
        assert path == raw / FILENAMES[key]
        verify_gz(path, mirrors.pins[key])
    assert sum(mirrors.hits.values()) == 0, "the configured HTTP mirror should not have been needed"
    assert _leftovers(raw) == sorted(FILENAMES.values())


def test_env_mirror_failure_falls_back_and_is_reported_first(mirrors: Mirrors, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    local = tmp_path / "local"
    shutil.copytree(mirrors.dir("corrupted"), local)
    download_all(mirrors.data_params([mirrors.url("good")]), raw, str(local), backoff_s=BACKOFF)
    assert _leftovers(raw) == sorted(FILENAMES.values())

    shutil.rmtree(raw)
    with pytest.raises(DownloadError) as caught:
        download_all(mirrors.data_params([mirrors.url("empty")]), raw, str(local), backoff_s=BACKOFF)
    lines = str(caught.value).splitlines()
    assert lines[1].startswith(f"  - {local.as_uri()}/: sha256 mismatch")
    assert lines[2] == f"  - {mirrors.url('empty')}: HTTP 404 File not found"
    assert _leftovers(raw) == []


# ---------------------------------------------------------------------------------------------
# retries


def test_http_500_is_retried_until_success(mirrors: Mirrors, tmp_path: Path) -> None:
    dest = tmp_path / FILENAMES["train_labels"]
    _fetch(mirrors, [mirrors.url("flaky")], dest, retries=2)
    verify_gz(dest, mirrors.pins["train_labels"])
    assert mirrors.hits[f"/flaky/{dest.name}"] == 3


def test_retries_are_bounded(mirrors: Mirrors, tmp_path: Path) -> None:
    dest = tmp_path / FILENAMES["train_labels"]
    with pytest.raises(DownloadError, match=r"flaky/: HTTP 500 Internal Server Error \(after 2 attempts\)"):
        _fetch(mirrors, [mirrors.url("flaky")], dest, retries=1)
    assert mirrors.hits[f"/flaky/{dest.name}"] == 2
    assert _leftovers(tmp_path) == ["www"]


def test_permanent_errors_are_not_retried(mirrors: Mirrors, tmp_path: Path) -> None:
    with pytest.raises(DownloadError):
        _fetch(mirrors, [mirrors.url(n) for n in ("empty", "forbidden", "corrupted")], tmp_path / "f.gz", retries=3)
    assert set(mirrors.hits.values()) == {1}
    assert len(mirrors.hits) == 3


def test_body_cut_short_is_retried_then_reported(mirrors: Mirrors, tmp_path: Path) -> None:
    size = len(mirrors.gz("train_images"))
    with pytest.raises(DownloadError, match=rf"connection closed early: got {size // 2} of {size} bytes \(after 2 attempts\)"):
        _fetch(mirrors, [mirrors.url("short")], tmp_path / "f.gz", key="train_images", retries=1)
    assert _leftovers(tmp_path) == ["www"]


def test_stalled_server_times_out(mirrors: Mirrors, tmp_path: Path) -> None:
    dest = tmp_path / FILENAMES["train_labels"]
    started = time.monotonic()
    with pytest.raises(DownloadError, match=r"stall/: timed out after 0.2 s"):
        download_file(mirrors.pins["train_labels"], [mirrors.url("stall")], dest, retries=0, timeout_s=0.2, backoff_s=BACKOFF)
    assert time.monotonic() - started < 1.0
    assert not dest.exists()


# ---------------------------------------------------------------------------------------------
# files already at the destination


def test_existing_verified_file_is_skipped(mirrors: Mirrors, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dest = tmp_path / FILENAMES["train_labels"]
    dest.write_bytes(mirrors.gz("train_labels"))
    before = dest.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="mnist_pipeline.download"):
        _fetch(mirrors, [mirrors.url("empty")], dest)
    assert sum(mirrors.hits.values()) == 0
    assert dest.stat().st_mtime_ns == before
    assert "already present and verified" in caplog.text


def test_existing_bad_file_is_replaced(mirrors: Mirrors, tmp_path: Path) -> None:
    dest = tmp_path / FILENAMES["train_labels"]
    dest.write_bytes(b"stale garbage")
    _fetch(mirrors, [mirrors.url("good")], dest)
    verify_gz(dest, mirrors.pins["train_labels"])


def test_existing_bad_file_is_removed_when_no_mirror_works(mirrors: Mirrors, tmp_path: Path) -> None:
    dest = tmp_path / FILENAMES["train_labels"]
    dest.write_bytes(gzip.compress(b"wrong content"))
    with pytest.raises(DownloadError):
        _fetch(mirrors, [mirrors.url("empty")], dest)
    assert not dest.exists()


def test_verify_gz_reports_path_and_reason(mirrors: Mirrors, tmp_path: Path) -> None:
    path = mirrors.dir("truncated") / FILENAMES["train_images"]
    with pytest.raises(DownloadError, match=rf"^{path}: truncated gzip stream"):
        verify_gz(path, mirrors.pins["train_images"])
    garbage = tmp_path / "garbage.gz"
    garbage.write_bytes(b"not gzip")
    with pytest.raises(DownloadError, match=rf"^{garbage}: not a valid gzip stream"):
        verify_gz(garbage, mirrors.pins["train_images"])


# ---------------------------------------------------------------------------------------------
# a download killed midway never leaves a file at the final path

_CHILD = """
import sys
from pathlib import Path
from mnist_pipeline.data.params import PinnedFile
from mnist_pipeline.data.download import download_file
download_file(PinnedFile.model_validate_json(sys.argv[1]), [sys.argv[2]], Path(sys.argv[3]), retries=0, timeout_s=10)
"""


def test_sigkill_midway_leaves_no_file_at_final_path(mirrors: Mirrors, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    pin = mirrors.pins["test_images"]
    dest = raw / pin.filename
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, pin.model_dump_json(), mirrors.url("slow"), str(dest)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        temps: list[Path] = []
        while time.monotonic() < deadline and child.poll() is None:
            temps = [p for p in raw.glob(f".{pin.filename}.*.tmp") if p.stat().st_size > 0] if raw.exists() else []
            if temps:
                break
            time.sleep(0.01)
        assert temps, f"the child never started writing (exit status {child.poll()})"
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=5) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=5)
    gz_size = len(mirrors.gz("test_images"))
    assert 0 < temps[0].stat().st_size < gz_size, "the kill should have landed mid-stream"
    assert not dest.exists()

    leftover = sorted(p.name for p in raw.iterdir())
    assert all(name.startswith(".") and name.endswith(".tmp") for name in leftover)
    _fetch(mirrors, [mirrors.url("good")], dest, key="test_images")
    verify_gz(dest, pin)
    # The later run adds exactly the final file and leaves the dead run's temp alone.
    assert sorted(p.name for p in raw.iterdir()) == sorted([*leftover, dest.name])


# ---------------------------------------------------------------------------------------------
# progress reporting


def test_progress_log_lines_when_not_a_tty(mirrors: Mirrors, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mnist_pipeline.data.download.PROGRESS_LOG_MIN_BYTES", 1)
    monkeypatch.setattr("mnist_pipeline.data.download.CHUNK_BYTES", 4096)
    with caplog.at_level(logging.INFO, logger="mnist_pipeline.download"):
        _fetch(mirrors, [mirrors.url("slow")], tmp_path / "f.gz", key="test_images")
    for quarter in ("25%", "50%", "75%"):
        assert f"t10k-images-idx3-ubyte.gz: {quarter}" in caplog.text
    assert f"from {mirrors.url('slow')}; verified" in caplog.text
    assert mirrors.pins["test_images"].sha256 in caplog.text


def test_tqdm_bar_on_a_tty(mirrors: Mirrors, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tqdm

    bars: list[tqdm.tqdm] = []

    class RecordingBar(tqdm.tqdm):  # type: ignore[type-arg]
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            bars.append(self)

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.setattr("mnist_pipeline.data.download.tqdm", RecordingBar)
    dest = tmp_path / "f.gz"
    _fetch(mirrors, [mirrors.url("good")], dest)
    verify_gz(dest, mirrors.pins["train_labels"])
    assert len(bars) == 1
    assert bars[0].n == bars[0].total == len(mirrors.gz("train_labels"))


# ---------------------------------------------------------------------------------------------
# the DVC stage entry


def _stage_project(tmp_path: Path, mirrors: Mirrors, configured: list[str]) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["data"]["files"] = {key: pin.model_dump() for key, pin in mirrors.pins.items()}
    params["data"]["mirrors"] = configured
    params["data"]["retries"] = 0
    (project / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    return project


def _stage_main() -> Callable[[], int]:
    # pipeline/ is a folder of scripts, not a package: load the file itself.
    spec = importlib.util.spec_from_file_location("pipeline_download_stage", REPO_ROOT / "pipeline" / "download.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_stage_main_downloads_from_env_mirror(mirrors: Mirrors, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = _stage_project(tmp_path, mirrors, [mirrors.url("empty")])
    monkeypatch.chdir(project)
    monkeypatch.setenv("MNIST_MIRROR", str(mirrors.dir("good")))
    assert _stage_main()() == 0
    raw = project / "data" / "raw"
    assert _leftovers(raw) == sorted(FILENAMES.values())
    assert sum(mirrors.hits.values()) == 0


def test_stage_main_exits_2_with_the_reasons_logged(mirrors: Mirrors, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    project = _stage_project(tmp_path, mirrors, [mirrors.url("empty")])
    monkeypatch.chdir(project)
    monkeypatch.setenv("MNIST_MIRROR", str(tmp_path / "missing"))
    with caplog.at_level(logging.INFO):
        assert _stage_main()() == 2
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert message.startswith("download failed: train-images-idx3-ubyte.gz: every mirror failed:")
    assert f"{(tmp_path / 'missing').as_uri()}/: " in message
    assert f"{mirrors.url('empty')}: HTTP 404" in message
    assert _leftovers(project / "data" / "raw") == []


# ---------------------------------------------------------------------------------------------
# the real dataset


@pytest.mark.slow
def test_offline_mirror_matches_pinned_params(tmp_path: Path) -> None:
    shared = REPO_ROOT.parent / "shared" / "datasets" / "mnist"
    if not shared.is_dir():
        pytest.skip(f"offline MNIST mirror not present at {shared}")
    from mnist_pipeline.config import load_params

    data = load_params(REPO_ROOT / "params.yaml").data
    paths = download_all(data, tmp_path, str(shared), backoff_s=BACKOFF)
    train_images = read_idx_gz(paths["train_images"], "images")
    train_labels = read_idx_gz(paths["train_labels"], "labels")
    assert train_images.shape == (60_000, 28, 28)
    assert train_labels[:4].tolist() == [5, 0, 4, 1]
    assert read_idx_gz(paths["test_labels"], "labels").shape == (10_000,)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
