"""Signals as loop events: handlers do nothing but wake the selector.

`install()` points Python's wakeup fd at one end of a socketpair and returns
the other end; the loop registers it and reads the signal numbers with
`received()`, then acts on them outside any handler.
"""

from __future__ import annotations

import signal
import socket
from typing import Any, Iterable


def _wake_only(signum: int, frame: Any) -> None:
    """The wakeup fd carries the signal; nothing to do here."""


def install(signums: Iterable[int]) -> tuple[socket.socket, socket.socket]:
    """Returns (read end, write end); keep both alive as long as the loop runs."""
    read_end, write_end = socket.socketpair()
    read_end.setblocking(False)
    write_end.setblocking(False)
    signal.set_wakeup_fd(write_end.fileno())
    for signum in signums:
        signal.signal(signum, _wake_only)
    return read_end, write_end


# The most bytes one call takes off the wakeup socket: a storm of signals
# cannot keep the loop here.
_DRAIN_BYTES = 4096


def received(read_end: socket.socket) -> bytes:
    """The signal numbers that arrived since the last call, each once, in
    the order they first came.

    The wakeup socket holds a byte per delivery, and deliveries are not
    merged while the loop acts on an earlier one (a reload takes some
    milliseconds): 100 SIGHUPs in a burst made some 50 reloads in a row,
    each forking a spawner, and a burst of SIGUSR1 as many reports.  A
    signal that comes after this call is seen by the next, so one sent
    during a reload still brings one more.
    """
    data = b""
    while len(data) < _DRAIN_BYTES:
        try:
            chunk = read_end.recv(_DRAIN_BYTES - len(data))
        except (BlockingIOError, InterruptedError):
            break
        if not chunk:
            break
        data += chunk
    return bytes(dict.fromkeys(data))
