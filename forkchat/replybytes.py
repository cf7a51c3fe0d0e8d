"""Which bytes of a first-in, first-out byte queue answer the client's own
command, as the queue drains.

A reply to a client's own command (LIST, WHO, NAMES, a JOIN's names) is
not held against the queue's bound, the send queue of a worker or the
broker's buffer per worker link: a client that reads must get the whole
reply, however big, and the worker takes no further command from it until
the reply has left (so at most one reply per client is in flight).  The
bound keeps counting everything else, so a client that stops reading is
still dropped when other traffic piles up behind its reply.

The queue's owner reports where each reply lands in the queue (`add`) and
each send from the head (`sent`); `pending` is the reply bytes still
queued.  Runs of reply bytes that follow each other are kept as one span,
so the record stays small.
"""

from __future__ import annotations

import collections


class ReplyBytes:
    def __init__(self) -> None:
        # [start, end) of each run, as positions in all the bytes ever queued
        self._spans: collections.deque[list[int]] = collections.deque()
        self._sent = 0            # position of the queue's head
        self.pending = 0          # reply bytes between head and tail

    def add(self, offset: int, size: int) -> None:
        """`size` reply bytes were appended at `offset` bytes from the head
        (the queue's length before the append)."""
        if size <= 0:
            return
        start = self._sent + offset
        self.pending += size
        if self._spans and self._spans[-1][1] == start:
            self._spans[-1][1] = start + size
        else:
            self._spans.append([start, start + size])

    def sent(self, size: int) -> None:
        """`size` bytes left the head of the queue.

        While nothing is pending the call may be skipped (the hot path
        does): positions are only ever compared with each other, and the
        next `add` counts from where this record believes the head is."""
        old, self._sent = self._sent, self._sent + size
        spans = self._spans
        while spans and spans[0][0] < self._sent:
            start, end = spans[0]
            self.pending -= min(end, self._sent) - max(start, old)
            if end > self._sent:
                spans[0][0] = self._sent
                break
            spans.popleft()

    def drop(self, queue: bytearray, keep: int) -> None:
        """Take the reply bytes out of `queue`, the queue this record
        follows, but for its first `keep` bytes (what the peer already has
        the start of); the rest of the queue keeps its order and counts as
        ordinary bytes from now on."""
        head = self._sent
        for start, end in reversed(self._spans):
            low, high = max(start - head, keep), end - head
            if high > low:
                del queue[low:high]
        self.cut()

    def cut(self) -> None:
        """The queue was cut short or emptied without sending: what is left
        of it counts as ordinary bytes from now on."""
        self._spans.clear()
        self.pending = 0
