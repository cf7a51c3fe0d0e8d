"""Flood control: a token bucket per client with an injectable clock.

A client may send `burst` lines at once, then `rate` lines a second.  When
the bucket is empty the worker stops processing that client's input (its
lines wait in the recvq); when the recvq overflows the client is dropped
with "Excess Flood".
"""

from __future__ import annotations

import time
from typing import Callable


class TokenBucket:
    def __init__(self, burst: int, rate: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = float(burst)
        self.rate = rate
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def take(self, cost: float = 1.0) -> bool:
        """Spend `cost` tokens (at most a whole burst) if there are that many."""
        cost = min(cost, self.burst)
        self._refill()
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False

    def wait_time(self, cost: float = 1.0) -> float:
        """Seconds until there are `cost` tokens (at most a whole burst)."""
        cost = min(cost, self.burst)
        self._refill()
        if self._tokens >= cost or self.rate <= 0:
            return 0.0
        return (cost - self._tokens) / self.rate


class WindowLimit:
    """At most `count` events in any `window` seconds (a sliding window).

    For events whose cost falls on others, such as nick changes that every
    neighbour is told of: the token bucket limits lines, this limits what
    a few cheap lines may make the broker do.
    """

    def __init__(self, count: int, window: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.count = count
        self.window = window
        self._clock = clock
        self._stamps: list[float] = []

    def _forget_old(self) -> None:
        now = self._clock()
        self._stamps = [stamp for stamp in self._stamps if now - stamp < self.window]

    def record(self) -> None:
        """One event happened now."""
        self._forget_old()
        self._stamps.append(self._clock())
        del self._stamps[:-self.count]

    def wait_time(self) -> float:
        """Seconds until one more event is allowed (0.0: now)."""
        self._forget_old()
        if len(self._stamps) < self.count:
            return 0.0
        return self._stamps[0] + self.window - self._clock()
