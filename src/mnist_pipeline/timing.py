"""Named wall-clock sections, so a stage can say where its time went besides the work itself."""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence


class Stopwatch:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def total(self, *names: str) -> float:
        return sum(self.seconds.get(name, 0.0) for name in names)

    def describe(self) -> str:
        return ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.seconds.items())

    def import_modules(self, section: str, modules: Sequence[str]) -> None:
        """Import ``modules`` up front, timed as ``section``, so later sections time work, not module loading."""
        with self.section(section):
            for module in modules:
                importlib.import_module(module)


@contextlib.contextmanager
def heartbeat(message: str, log: logging.Logger, every_s: float = 15.0) -> Iterator[None]:
    """Log ``message`` with the elapsed time every ``every_s`` while something silent runs (a long fit)."""
    done = threading.Event()
    started = time.perf_counter()

    def beat() -> None:
        while not done.wait(every_s):
            log.info("%s (%.0f s so far)", message, time.perf_counter() - started)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
