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

    def take(self) -> bool:
        """Spend one token if there is one."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def wait_time(self) -> float:
        """Seconds until the next token."""
        self._refill()
        if self._tokens >= 1.0 or self.rate <= 0:
            return 0.0
        return (1.0 - self._tokens) / self.rate
