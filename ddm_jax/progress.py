"""Progress of long commands on stderr (rate and ETA), and one-line log messages.

One updating line on a terminal; elsewhere (logs, CI) a line every `interval` seconds.
"""

from __future__ import annotations

import math
import sys
import time


def log(message: str) -> None:
    """One line on stderr, where every command reports what it skipped, filled or wrote."""
    print(message, file=sys.stderr, flush=True)


class Progress:
    """'label: [####    ] done/total unit, R unit/s, ETA' for any long job.

    Call it with the units done so far; the rate counts from `begin` (work resumed from an
    earlier run does not count). `rate` and `eta` override the measured ones where the caller
    knows better (training leaves its compiling steps out and stops at a time budget).
    """

    def __init__(self, label: str, unit: str = "spectra", interval: float = 5.0, stream=None,
                 enabled: bool = True):
        self.label, self.unit, self.interval, self.enabled = label, unit, interval, enabled
        self.stream = sys.stderr if stream is None else stream
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.begin(0)

    def begin(self, done: int) -> None:
        """Start timing; the `done` units before now do not count towards the rate."""
        self.start, self.last, self.first_done, self.open_line = time.perf_counter(), -math.inf, done, False

    def __call__(self, done: int, total: int, rate: float | None = None, eta: float | None = None,
                 note: str = "") -> None:
        now = time.perf_counter()
        if not self.enabled or (now - self.last < (0.2 if self.tty else self.interval) and done < total):
            return
        self.last = now
        if rate is None:
            rate = (done - self.first_done) / max(now - self.start, 1e-9)
        if eta is None:
            eta = (total - done) / rate if rate > 0 else math.inf
        eta_text = f"{eta:.0f} s" if math.isfinite(eta) else "?"
        bar = "#" * int(30 * done / max(total, 1))
        line = (f"{self.label}: [{bar:30s}] {done}/{total} {self.unit}, {rate:.3g} {self.unit}/s, "
                f"ETA {eta_text}{note}")
        if self.tty:
            self.open_line = done < total
            print("\r" + line, end="" if self.open_line else "\n", file=self.stream, flush=True)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        """End an updating line left open (a job stopped before its total)."""
        if self.open_line:
            print(file=self.stream, flush=True)
            self.open_line = False
