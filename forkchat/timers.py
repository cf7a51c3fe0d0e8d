"""Deadlines for a single-threaded selector loop: name -> monotonic time.

Each process keeps a plain dict of its deadlines; these two helpers give
the select() timeout and take out the deadlines that have passed, so the
loop calls each handler once, and a handler that wants to run again sets
its next deadline itself.
"""

from __future__ import annotations

import time


def next_timeout(deadlines: dict[str, float]) -> float | None:
    """Seconds until the earliest deadline, or None (wait for I/O only)."""
    if not deadlines:
        return None
    return max(0.0, min(deadlines.values()) - time.monotonic())


def pop_due(deadlines: dict[str, float]) -> list[str]:
    """Remove and return the names whose deadline has passed, earliest first."""
    now = time.monotonic()
    due = sorted((when, name) for name, when in deadlines.items() if when <= now)
    for _, name in due:
        del deadlines[name]
    return [name for _, name in due]
