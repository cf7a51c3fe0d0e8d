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


def received(read_end: socket.socket) -> bytes:
    """The signal numbers that arrived since the last call (one byte each)."""
    try:
        return read_end.recv(64)
    except BlockingIOError:
        return b""
