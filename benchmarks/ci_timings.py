"""How long each step of `.ci/run` took, from its log: benchmarks/results/ci.json (docs/contributing/ci.md).

`.ci/run` stamps each step as it starts (``== <step> (<N> s since start)``); a step lasts until the
next stamp. Run it on the log of a clean-clone check of a commit, on the machine to record:

    git clone -q . /tmp/ci-check && (cd /tmp/ci-check && bash .ci/run > /tmp/ci.log 2>&1)
    python benchmarks/ci_timings.py /tmp/ci.log --commit "$(git -C /tmp/ci-check rev-parse --short HEAD)"

Usage: python benchmarks/ci_timings.py LOG --commit SHA [--output benchmarks/results/ci.json]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from _common import RESULTS, write_results

STAMP = re.compile(r"^== (?P<step>.*) \((?P<seconds>\d+) s since start\)$", re.MULTILINE)


def steps(log: str) -> list[dict[str, object]]:
    """Each stamped step with the second it started and how long it ran (the last stamp, ``done`` or the stop, ends)."""
    found = [(match["step"].rstrip(":"), int(match["seconds"])) for match in STAMP.finditer(log)]
    if not found or found[-1][0] not in ("done", "stopping the team stack"):
        raise SystemExit("no complete `.ci/run` log: expected its `== ... (N s since start)` stamps through `== done`")
    ends = [start for _, start in found[1:]] + [found[-1][1]]
    return [{"step": step, "start_s": start, "seconds": end - start} for (step, start), end in zip(found, ends)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("--commit", required=True, help="the commit the log checked")
    parser.add_argument("--output", type=Path, default=RESULTS / "ci.json")
    args = parser.parse_args()
    found = steps(args.log.read_text(encoding="utf-8", errors="replace"))
    total = next(step["start_s"] for step in found if step["step"] == "done")
    for step in found:
        print(f"{step['seconds']:6d} s  {step['step']}")
    print(f"{total:6d} s  in all (commit {args.commit})")
    write_results(args.output, "ci", {"commit": args.commit, "total_s": total, "steps": found})
    return 0


if __name__ == "__main__":
    sys.exit(main())
