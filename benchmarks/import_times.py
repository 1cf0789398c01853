"""Import-time benchmark: what importing each module the package uses costs a fresh process.

Finds every module but the package's own that src/mnist_pipeline and pipeline/ import, the standard
library's too (``importlib.metadata`` and ``urllib.request`` cost as much as pydantic); ``from X
import y`` counts X, and X.y where y is a module. Then times ``import X`` alone in a fresh interpreter,
after its start-up, ``--repeats`` times, and lists which of the others it loads. A module whose
median is at least ``--threshold-ms`` is heavy: the package may import it where used rather than
at the top of a module (docs/contributing/layout.md; tests/test_tooling.py enforces it). 8 ms is a
fifth of a light command's start-up (``--help``: 30-40 ms, 10 of them the bare interpreter's). A
module within a few ms of it (dataclasses, logging) can change sides from one run to the next: run
it on a quiet machine. Logs a table and writes benchmarks/results/import_times.json with the
machine and library versions.

Usage: python benchmarks/import_times.py [--repeats 5] [--threshold-ms 8]
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import logging
import subprocess
import sys
from pathlib import Path

from _common import REPO_ROOT, RESULTS, child_env, median, write_results

log = logging.getLogger("import_times")
SOURCES = [*sorted((REPO_ROOT / "src" / "mnist_pipeline").rglob("*.py")), *sorted((REPO_ROOT / "pipeline").glob("*.py"))]
# Times the import alone (the interpreter's own start-up is not the module's), and lists the other
# measured modules it loads: a module that imports mlflow at its top gains nothing importing pandas lazily.
# It imports nothing itself (sys and time are built in), so json, say, is timed as any other.
CHILD = """import sys, time
loaded, started = set(sys.modules), time.perf_counter()
__import__(sys.argv[1])
seconds = time.perf_counter() - started
print(seconds, *[name for name in sys.argv[2].split(",") if name in sys.modules and name not in loaded])"""


def is_module(name: str) -> bool:
    """Whether ``name`` is a module file or package on disk, found without importing it."""
    root, *rest = name.split(".")
    spec = importlib.util.find_spec(root)
    if spec is None or not rest:
        return spec is not None
    paths = [Path(location, *rest) for location in spec.submodule_search_locations or []]
    return any(path.with_suffix(".py").is_file() or (path / "__init__.py").is_file() or any(path.parent.glob(f"{path.name}.*.so")) for path in paths)


def imported_modules() -> list[str]:
    names = set()
    for source in SOURCES:
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return sorted(name for name in names if name.split(".")[0] not in {"mnist_pipeline", "__future__"} and is_module(name))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threshold-ms", type=float, default=8.0)
    parser.add_argument("--output", type=Path, default=RESULTS / "import_times.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results, names = {}, imported_modules()
    for name in names:
        runs = []
        for _ in range(args.repeats):
            child = subprocess.run([sys.executable, "-c", CHILD, name, ",".join(names)], env=child_env(), capture_output=True, text=True, check=True)
            seconds, *loads = child.stdout.splitlines()[-1].split()
            runs.append(1000 * float(seconds))
        results[name] = {"median_ms": round(median(runs), 1), "runs_ms": [round(ms, 1) for ms in runs], "loads": loads}
        log.info("%-32s %8.1f ms%s", name, median(runs), "   heavy" if median(runs) >= args.threshold_ms else "")
    heavy = sorted(name for name, result in results.items() if result["median_ms"] >= args.threshold_ms)
    for result in results.values():
        result["loads"] = [name for name in result["loads"] if name in heavy]  # the heavy ones: what the test needs
    write_results(args.output, "import_times", {
        "repeats": args.repeats,
        "threshold_ms": args.threshold_ms,
        "heavy": heavy,
        "modules": results,
        "python": sys.version.split()[0],
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
