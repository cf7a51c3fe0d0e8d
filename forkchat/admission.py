"""Who may connect: the limits checked before any process exists for a client.

Plain bookkeeping with no sockets, so that the rules can be tested on their
own: `max_clients`, `max_clients_per_ip`, and a connect rate per address
(a token bucket each, the least recently used forgotten at a bound).  The
per-address limits count an address's block (`ipv4_prefix`, `ipv6_prefix`).
`RefusalLog` decides which refusals the log shows, so that a flood of them
costs a few lines.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

from forkchat import config, flood

MAX_CONNECT_BUCKETS = 10000

FULL = "Server is full, try again later"
TOO_MANY_FROM_ADDRESS = "Too many connections from your address"
TOO_FAST = "Connecting too fast, try again later"
REFUSALS = (FULL, TOO_MANY_FROM_ADDRESS, TOO_FAST)
REFUSAL_WINDOW_S = 10.0     # one line per address and reason this often, then a count
MAX_REFUSAL_WINDOWS = 10000  # beyond this many open at once, the oldest is closed early


def peer_address(address: str) -> str:
    """An IPv4 client on a dual-stack socket counts as its IPv4 address."""
    return address[7:] if address.startswith("::ffff:") else address


# Parsing an address costs 2-19 us, and the broker asks for the block of
# every connected client when an address must start its OPER wait.
@functools.lru_cache(maxsize=16384)
def address_block(peer: str, ipv4_prefix: int = 32, ipv6_prefix: int = 128) -> str:
    """The block whose connections `peer` is counted with, as text.

    An IPv6 host is commonly handed a whole /64, and picks a fresh address
    in it at will: counted one by one, its addresses would each get their
    own max_clients_per_ip and connect burst.  A full-length prefix (or a
    peer that is no IP address) is the address itself.
    """
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    prefix = ipv4_prefix if address.version == 4 else ipv6_prefix
    if prefix >= address.max_prefixlen:
        return peer
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def block_of(peer: str, limits: config.Limits) -> str:
    """`peer`'s block under the configured prefixes."""
    return address_block(peer, limits.ipv4_prefix, limits.ipv6_prefix)


def _count(counts: dict[str, int], key: str, step: int) -> None:
    left = counts.get(key, 0) + step
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


class Admission:
    def __init__(self, limits: config.Limits) -> None:
        self.limits = limits
        self.clients = 0                          # admitted and not yet gone
        self.per_ip: dict[str, int] = {}          # connected clients per address
        self.per_block: dict[str, int] = {}       # ... and per address block
        self.buckets: dict[str, flood.TokenBucket] = {}

    def block(self, peer: str) -> str:
        return block_of(peer, self.limits)

    def refusal(self, peer: str) -> str | None:
        """Why `peer` may not connect now, or None.  Asking takes a token
        from its block's rate bucket, as a connection attempt does."""
        if self.clients >= self.limits.max_clients:
            return FULL
        block = self.block(peer)
        if self.per_block.get(block, 0) >= self.limits.max_clients_per_ip:
            return TOO_MANY_FROM_ADDRESS
        if not self._bucket(block).take():
            return TOO_FAST
        return None

    def admitted(self, peer: str) -> None:
        self.clients += 1
        _count(self.per_ip, peer, 1)
        _count(self.per_block, self.block(peer), 1)

    def gone(self, peer: str) -> None:
        self.clients -= 1
        _count(self.per_ip, peer, -1)
        _count(self.per_block, self.block(peer), -1)

    def reload(self, limits: config.Limits) -> None:
        """New limits; rates start afresh, counts of connected clients stay
        (regrouped, if the prefixes changed)."""
        self.limits = limits
        self.buckets.clear()
        self.per_block = {}
        for peer, connected in self.per_ip.items():
            _count(self.per_block, self.block(peer), connected)

    def _bucket(self, block: str) -> flood.TokenBucket:
        """The block's bucket, moved to the end: `buckets` is kept in the
        order of last use, so the one to forget is always the first."""
        bucket = self.buckets.pop(block, None)
        if bucket is None:
            bucket = flood.TokenBucket(self.limits.connect_burst, self.limits.connect_rate)
            self._make_room()
        self.buckets[block] = bucket
        return bucket

    def _make_room(self) -> None:
        """Forget the address that connected least recently, at the bound.

        The bound used to be met by a scan for refilled buckets, which kept
        every bucket still refilling: connections from more addresses than
        the bound within a few seconds (easy from one IPv6 /64) made each
        accept scan them all and the table grow without end.  This costs
        O(1); a forgotten address only gets its burst back.
        """
        while len(self.buckets) >= MAX_CONNECT_BUCKETS:
            del self.buckets[next(iter(self.buckets))]


@dataclass
class _Window:
    started: float
    more: int = 0          # refusals after the one logged


class RefusalLog:
    """Which refusals to log: the first of an address and reason in a
    window; the rest are counted and summed up in one line when the window
    ends (`expire`) or the next first one is logged.  Times are passed in,
    so that the rules are tested without waiting.

    `windows` is kept in the order the windows started (a new one goes to
    the end), so the next to end is always the first: a flood from many
    addresses costs O(1) a refusal, not a scan of every open window.
    """

    def __init__(self, window_s: float | None = None) -> None:
        self.window_s = REFUSAL_WINDOW_S if window_s is None else window_s
        self.windows: dict[tuple[str, str], _Window] = {}

    def refused(self, peer: str, reason: str, now: float, block: str = "") -> list[str]:
        """The lines to log for this refusal (none while it is counted).
        Refusals are counted per address block, when one is given: a flood
        from fresh addresses of one IPv6 /64 is one window."""
        key = (block or peer, reason)
        window = self.windows.get(key)
        if window is not None and now - window.started < self.window_s:
            window.more += 1
            return []
        lines = [self._summary(key, window)] if window is not None and window.more else []
        self.windows.pop(key, None)              # re-inserted last: start order
        self.windows[key] = _Window(now)
        if len(self.windows) > MAX_REFUSAL_WINDOWS:
            oldest = next(iter(self.windows))
            lines += [line for line in (self._end(oldest),) if line]
        named = peer if key[0] == peer else f"{peer} ({key[0]})"
        return lines + [f"refused connection from {named}: {reason}"]

    def expire(self, now: float) -> list[str]:
        """Close the windows that have ended; the summaries of those that counted."""
        lines: list[str] = []
        while self.windows:
            key, window = next(iter(self.windows.items()))
            if window.started + self.window_s > now:           # as next_due says
                break
            line = self._end(key)
            if line:
                lines.append(line)
        return lines

    def flush(self) -> list[str]:
        """Close every window (at shutdown): what is still counted."""
        return [line for line in (self._end(key) for key in list(self.windows)) if line]

    def next_due(self) -> float | None:
        """When the earliest window ends, or None with none open."""
        if not self.windows:
            return None
        return next(iter(self.windows.values())).started + self.window_s

    def _end(self, key: tuple[str, str]) -> str | None:
        window = self.windows.pop(key)
        return self._summary(key, window) if window.more else None

    def _summary(self, key: tuple[str, str], window: _Window) -> str:
        peer, reason = key
        plural = "connection" if window.more == 1 else "connections"
        return (f"refused {window.more} more {plural} from {peer} "
                f"in {self.window_s:.0f} s ({reason})")
