"""What every child process does first, before its role's main loop.

With the fork start method a child inherits every descriptor of the
supervisor: listening sockets, other workers' pipes, pidfds.  A child that
kept them would hold other links open, and EOF would never tell the broker
that a worker died.  So each child closes everything but what it owns,
resets the supervisor's signal handling and names itself for `ps`.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import os
import signal
import sys
from typing import Callable

EX_SOFTWARE = 70
_PR_SET_NAME = 15


def close_inherited(keep: set[int]) -> None:
    """Close every descriptor above 2 that is not in `keep`."""
    keep = set(keep) | {0, 1, 2}
    if sys.stdin is not None:
        try:
            keep.add(sys.stdin.fileno())
        except (OSError, ValueError):
            pass
    highest = os.sysconf("SC_OPEN_MAX")
    start = 3
    for fd in sorted(fd for fd in keep if fd >= 3):
        os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, highest)


def lifeline_fd() -> int:
    """A descriptor that reads EOF when the supervisor dies."""
    parent = multiprocessing.parent_process()
    if parent is None:
        raise RuntimeError("not a multiprocessing child")
    return parent.sentinel


def set_name(name: str) -> None:
    """Name the process (comm) so `ps` and STATS can tell roles apart."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


def reset_signals() -> None:
    """Undo the supervisor's signal wiring; the role sets its own."""
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    # Ctrl+C reaches the whole process group; the supervisor decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_child(name: str, keep: set[int], main: Callable[[], int]) -> None:
    """Bootstrap a child and run `main`; an unexpected error exits 70."""
    gc.enable()
    keep = set(keep) | {lifeline_fd()}
    close_inherited(keep)
    reset_signals()
    set_name(name)
    try:
        code = main()
    except Exception:
        logging.getLogger(f"forkchat.{name.rsplit('-', 1)[-1]}").exception(
            "%s crashed", name)
        code = EX_SOFTWARE
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
