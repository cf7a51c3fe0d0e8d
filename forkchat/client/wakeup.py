"""Signals as wake-ups of a client's select loop.

A signal handler that does the work would run in the middle of whatever
the loop was doing (a half-drawn screen, a half-sent queue); instead the
handler does nothing and Python writes the signal's number to a socket
the loop watches (signal.set_wakeup_fd), and the loop acts on it in turn.
"""

from __future__ import annotations

import contextlib
import signal
import socket
from typing import Iterable, Iterator


@contextlib.contextmanager
def catching(signums: Iterable[int]) -> Iterator[socket.socket]:
    """A socket that turns readable when one of `signums` comes; the
    handlers and the wake-up descriptor are put back at the end.

    A signal ignored at start stays ignored: `nohup` asks that SIGHUP not
    end the program, and sh starts a background job with SIGINT ignored.
    """
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    old_fd = signal.set_wakeup_fd(wake_w.fileno())
    old_handlers = {}
    try:
        for signum in signums:
            if signal.getsignal(signum) != signal.SIG_IGN:
                old_handlers[signum] = signal.signal(signum, lambda *_: None)
        yield wake_r
    finally:
        signal.set_wakeup_fd(old_fd)
        for signum, handler in old_handlers.items():
            signal.signal(signum, handler)
        wake_r.close()
        wake_w.close()


def received(wake: socket.socket) -> bytes:
    """The signals that came since the last look, in order: one byte, the
    signal's number, for each (a second SIGTERM may come with the first)."""
    try:
        return wake.recv(256)
    except BlockingIOError:
        return b""
