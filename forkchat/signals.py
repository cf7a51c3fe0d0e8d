"""Signals as loop events: handlers only note the signal and wake the selector.

`install()` points Python's wakeup fd at one end of a socketpair and returns
the other end; the loop registers it and reads the signal numbers with
`received()`, then acts on them outside any handler.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # the C half of signal: no stub
import signal
import socket
from typing import Any, Iterable

# The signals the handler saw, besides the wakeup socket's bytes: a
# socketpair holds only some 270 one-byte writes, and a delivery that finds
# it full loses its byte (Python then printed "Exception ignored when trying
# to write to the signal wakeup fd" on standard error, outside the log's
# lines).  A SIGTERM in a storm of SIGCHLD or SIGHUP was lost with it.
_noted: list[int] = []


def _note(signum: int, frame: Any) -> None:
    _noted.append(signum)


def install(signums: Iterable[int]) -> tuple[socket.socket, socket.socket]:
    """Returns (read end, write end); keep both alive as long as the loop runs."""
    read_end, write_end = socket.socketpair()
    read_end.setblocking(False)
    write_end.setblocking(False)
    del _noted[:]                 # a parent's, copied by the fork
    # A full socket wakes the loop all the same, and the handler notes the signal.
    signal.set_wakeup_fd(write_end.fileno(), warn_on_full_buffer=False)
    # _signal's: signal.signal makes enum members of the number and of the
    # handler it replaces, lookups that wrote some 22 pages a worker copied
    # from its spawner (75 us of its start; children.reset_signals alike).
    for signum in signums:
        _signal.signal(int(signum), _note)
    return read_end, write_end


def uninstall() -> None:
    """Point Python's wakeup fd nowhere; call it before the loop's
    sockets go.  The handlers stay, so a later signal is only noted.

    A signal after the write end was closed made Python write its byte to
    a closed descriptor and print "Exception ignored when trying to write
    to the signal wakeup fd" with a traceback on standard error, which is
    the server's log: a retired spawner whose worker ended as it did (at
    every stop, as the workers are told to go) printed one.
    """
    signal.set_wakeup_fd(-1)


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
    # The notes after the drain: a signal whose byte found the socket full
    # while it was drained has only its note, and a note taken before the
    # drain left that one to wait, nothing to wake the loop, for the next
    # signal.  One noted after this has its byte in the emptied socket.
    noted = _noted[:]
    del _noted[:len(noted)]       # (a handler may append meanwhile: kept for next time)
    return bytes(dict.fromkeys([*data, *noted]))
