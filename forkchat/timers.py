"""Deadlines for a single-threaded selector loop: name -> monotonic time.

Each process keeps a plain dict of its deadlines; these two helpers give
the select() timeout and take out the deadlines that have passed, so the
loop calls each handler once, and a handler that wants to run again sets
its next deadline itself.
"""

from __future__ import annotations

import time

# The longest single wait.  A loop that wakes once an hour with nothing due
# costs nothing, and no deadline, however far (or infinite), can then give
# select() a timeout it cannot hold (epoll: an int of milliseconds).
MAX_WAIT_S = 3600.0
# next_timeout runs once per turn of every loop, a worker's at each wake-up:
# the clock is a name of this module, not an attribute of `time` looked up.
_monotonic = time.monotonic


def next_timeout(deadlines: dict[str, float]) -> float | None:
    """Seconds until the earliest deadline, at most MAX_WAIT_S, or None
    (wait for I/O only)."""
    if not deadlines:
        return None
    wait = min(deadlines.values()) - _monotonic()
    if not wait < MAX_WAIT_S:      # also catches inf and nan
        return MAX_WAIT_S
    return max(0.0, wait)


def any_due(deadlines: dict[str, float]) -> bool:
    """Whether a deadline has passed: the cheap question a loop asks after
    every wake, most often with the answer no."""
    return bool(deadlines) and min(deadlines.values()) <= time.monotonic()


def pop_due(deadlines: dict[str, float]) -> list[str]:
    """Remove and return the names whose deadline has passed, earliest first."""
    now = time.monotonic()
    due = sorted((when, name) for name, when in deadlines.items() if when <= now)
    for _, name in due:
        del deadlines[name]
    return [name for _, name in due]
