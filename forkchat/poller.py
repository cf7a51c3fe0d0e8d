"""epoll with one callback per file descriptor, for a worker's hot loop.

A worker wakes once per batch from the broker, and what it runs per wake
is most of its cost (README, Performance).  The stdlib
`selectors` module builds a key object per ready descriptor and goes
through several layers to find it; this keeps the same interface the
worker uses (register, modify, unregister, select with selectors' event
bits) and returns (callback, events) pairs straight from one dict.
"""

from __future__ import annotations

import math
import select
import selectors
from typing import Any, Callable

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE

# Looked up once: select() runs at every wake-up of every worker, where each
# lookup in another module's namespace costs more than the arithmetic.
_EPOLLIN = select.EPOLLIN
_EPOLLOUT = select.EPOLLOUT
_ceil = math.ceil

Callback = Callable[[int], None]
# The callback, the selectors event bits and the object registered for one descriptor.
_Entry = tuple[Callback, int, Any]


def _fd(fileobj: Any) -> int:
    return fileobj if isinstance(fileobj, int) else fileobj.fileno()


def _epoll_events(events: int) -> int:
    return (select.EPOLLIN if events & READ else 0) | (select.EPOLLOUT if events & WRITE else 0)


class Poller:
    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._callbacks: dict[int, _Entry] = {}

    def register(self, fileobj: Any, events: int, callback: Callback) -> None:
        fd = _fd(fileobj)
        if fd in self._callbacks:
            raise KeyError(f"{fileobj!r} (fd {fd}) is already registered")
        self._epoll.register(fd, _epoll_events(events))
        self._callbacks[fd] = (callback, events, fileobj)

    def modify(self, fileobj: Any, events: int, callback: Callback) -> None:
        fd = _fd(fileobj)
        if fd not in self._callbacks:
            raise KeyError(f"{fileobj!r} (fd {fd}) is not registered")
        self._epoll.modify(fd, _epoll_events(events))
        self._callbacks[fd] = (callback, events, fileobj)

    def unregister(self, fileobj: Any) -> None:
        """Forget a descriptor; one the kernel already dropped (closed) is fine.

        A socket closed before it was unregistered has no number any more
        (fileno() is -1): as in `selectors`, it is found by identity.
        """
        fd = _fd(fileobj)
        if fd < 0:
            fd = next((known for known, entry in self._callbacks.items()
                       if entry[2] is fileobj), fd)
        del self._callbacks[fd]
        try:
            self._epoll.unregister(fd)
        except OSError:
            pass

    def select(self, timeout: float | None) -> list[tuple[Callback, int]]:
        """Ready callbacks with selectors' event bits.

        As in `selectors`, a hang-up or an error counts as both readable
        and writable, but only what was registered is reported: a link
        watched for READ alone must not be written to on a hang-up before
        the frames its peer sent last are read.
        """
        if timeout is None:
            wait = -1.0
        elif timeout <= 0:
            wait = 0.0
        else:      # epoll counts whole milliseconds: round up, never spin
            wait = _ceil(timeout * 1e3) * 1e-3
        callbacks = self._callbacks
        ready = []
        for fd, flags in self._epoll.poll(wait, len(callbacks) or 1):
            entry = callbacks.get(fd)
            if entry is not None:
                if flags == _EPOLLIN:       # the usual wake-up: something to read
                    events = READ
                else:
                    events = (WRITE if flags & ~_EPOLLIN else 0) \
                        | (READ if flags & ~_EPOLLOUT else 0)
                ready.append((entry[0], events & entry[1]))
        return ready

    def raw_poll(self) -> Callable[[float, int], list[tuple[int, int]]]:
        """epoll's own poll(timeout, maxevents): (fd, epoll flags) pairs,
        no callbacks, no selectors bits.  For a loop that waits on one
        descriptor it knows (Worker._deliver_turns) and holds this across
        wake-ups; anything else that is ready it leaves to select(), which
        sees it again (epoll here is level-triggered)."""
        return self._epoll.poll

    def close(self) -> None:
        self._epoll.close()
