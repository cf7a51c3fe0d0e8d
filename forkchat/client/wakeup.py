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

# Every delivery the handlers saw, in order: the wake-up socket is only a
# wake-up.  A socketpair holds some 270 one-byte writes; a storm of
# SIGWINCH (a window dragged to a new size) filled it before the loop
# read it, and a SIGTERM after it lost its byte, and so was never acted
# on, while Python printed "Exception ignored when trying to write to the
# signal wakeup fd" across the screen.
_noted: list[int] = []

# The most bytes one look takes off the wake-up socket: a storm of signals
# cannot keep the loop here (what is left wakes it again).
_DRAIN_BYTES = 4096


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
    del _noted[:]
    # A full socket wakes the loop all the same, and the handler notes the signal.
    old_fd = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    old_handlers = {}
    try:
        for signum in signums:
            if signal.getsignal(signum) != signal.SIG_IGN:
                old_handlers[signum] = signal.signal(
                    signum, lambda signum, _frame: _note(signum, wake_w))
        yield wake_r
    finally:
        signal.set_wakeup_fd(old_fd)
        for signum, handler in old_handlers.items():
            signal.signal(signum, handler)
        wake_r.close()
        wake_w.close()


def _note(signum: int, wake_w: socket.socket) -> None:
    """Note the signal, then wake the loop once more: Python's own byte
    may have been taken by a received() that looked at the notes before
    this handler ran, and the note would wait for some other wake."""
    _noted.append(signum)
    try:
        wake_w.send(b"\0")
    except OSError:
        pass                          # full (it wakes the loop) or closed (the end)


def received(wake: socket.socket) -> bytes:
    """The signals that came since the last look, in order: one byte, the
    signal's number, for each delivery (a second SIGTERM may come with the
    first; a caller that wants each signal once merges them)."""
    taken = 0
    while taken < _DRAIN_BYTES:
        try:
            chunk = wake.recv(_DRAIN_BYTES - taken)
        except (BlockingIOError, InterruptedError):
            break
        if not chunk:
            break
        taken += len(chunk)
    noted = _noted[:]
    del _noted[:len(noted)]           # (a handler may append meanwhile: kept for next time)
    return bytes(noted)
