"""``mnist-services``: start, check and stop the team stack (``make services`` / ``make services-stop``).

    mnist-services start    # idempotent: starts what is not running, waits until all are healthy
    mnist-services status   # each service, healthy or what is wrong with it; exit 1 if any is down
    mnist-services stop     # stops all three; leaves their data under .services/
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mnist_pipeline.errors import PipelineError
from mnist_pipeline.services.settings import load_settings
from mnist_pipeline.stage import EXIT_CHECK_FAILED, EXIT_INTERRUPTED, EXIT_USER_ERROR, configure_logging

log = logging.getLogger("mnist_pipeline.services")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mnist-services", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "status", "stop"])
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the project root (default: here)")
    args = parser.parse_args(argv)
    configure_logging()
    from mnist_pipeline.services.stack import check_all, start_all, stop_all

    try:
        settings = load_settings(args.root, create=args.command == "start")
        if args.command == "start":
            start_all(settings)
            log.info("all services healthy; MLFLOW_TRACKING_URI=%s (README: team scale)", settings.tracking_uri)
            return 0
        if args.command == "stop":
            stopped = stop_all(settings)
            log.info("stopped: %s", ", ".join(stopped) if stopped else "nothing was running")
            return 0
        problems = 0
        for name, problem in check_all(settings):
            log.info("%s: %s", name, problem or "healthy")
            problems += problem is not None
        return EXIT_CHECK_FAILED if problems else 0
    except PipelineError as error:
        log.error("%s", error)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
