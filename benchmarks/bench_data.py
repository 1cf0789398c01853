"""Data-stage benchmark: download + verify + preprocess from the local mirror, a no-op
`dvc repro`, and preprocess's peak memory. Goals: ≤ 10 s, ≤ 2 s and ≤ 1.5 GiB. Prints them and
writes them, with the machine and library versions, to benchmarks/results/data.json.

Usage: python benchmarks/bench_data.py [--repeats 3] [--output benchmarks/results/data.json]
(MNIST_MIRROR defaults to ../shared)
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from _common import RESULTS, figure, median, project_copy, timed, write_results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=RESULTS / "data.json")
    args = parser.parse_args()
    project = project_copy()
    python = sys.executable
    stage_seconds, peak_mib, repro_seconds, noop_seconds = [], [], [], []
    for _ in range(args.repeats):
        shutil.rmtree(project / "data", ignore_errors=True)
        download = timed([python, "pipeline/download.py"], project)
        preprocess = timed([python, "pipeline/preprocess.py"], project)
        stage_seconds.append(download.seconds + preprocess.seconds)
        peak_mib.append(preprocess.peak_rss_mib)
        shutil.rmtree(project / "data", ignore_errors=True)
        # --force: otherwise DVC checks the outputs it cached last round out instead of running.
        repro_seconds.append(timed([python, "-m", "dvc", "repro", "--force", "preprocess"], project).seconds)
        noop_seconds.append(timed([python, "-m", "dvc", "repro", "preprocess"], project).seconds)
    print(f"repeats: {args.repeats}; project copy: {project}")
    print(f"download + verify + preprocess (two stage processes): median {median(stage_seconds):.2f} s  (goal ≤ 10 s)  runs {[round(s, 2) for s in stage_seconds]}")
    print(f"the same through `dvc repro` (adds DVC hashing + cache): median {median(repro_seconds):.2f} s  runs {[round(s, 2) for s in repro_seconds]}")
    print(f"no-op `dvc repro preprocess`: median {median(noop_seconds):.2f} s  (goal ≤ 2 s)  runs {[round(s, 2) for s in noop_seconds]}")
    print(f"preprocess peak RSS: median {median(peak_mib):.0f} MiB  (goal ≤ 1536 MiB)")
    write_results(args.output, "data", {
        "repeats": args.repeats,
        "stages_s": figure(stage_seconds, goal_max=10.0),
        "dvc_repro_s": figure(repro_seconds),
        "noop_dvc_repro_s": figure(noop_seconds, goal_max=2.0),
        "preprocess_peak_rss_mib": figure(peak_mib, 0, goal_max=1536.0),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
