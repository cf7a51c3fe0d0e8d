"""Who may connect: the limits checked before any process exists for a client.

Plain bookkeeping with no sockets, so that the rules can be tested on their
own: `max_clients`, `max_clients_per_ip`, and a connect rate per address
(a token bucket each, pruned when idle).
"""

from __future__ import annotations

from forkchat import config, flood

MAX_CONNECT_BUCKETS = 10000

FULL = "Server is full, try again later"
TOO_MANY_FROM_ADDRESS = "Too many connections from your address"
TOO_FAST = "Connecting too fast, try again later"
REFUSALS = (FULL, TOO_MANY_FROM_ADDRESS, TOO_FAST)


def peer_address(address: str) -> str:
    """An IPv4 client on a dual-stack socket counts as its IPv4 address."""
    return address[7:] if address.startswith("::ffff:") else address


class Admission:
    def __init__(self, limits: config.Limits) -> None:
        self.limits = limits
        self.clients = 0                          # admitted and not yet gone
        self.per_ip: dict[str, int] = {}
        self.buckets: dict[str, flood.TokenBucket] = {}

    def refusal(self, peer: str) -> str | None:
        """Why `peer` may not connect now, or None.  Asking takes a token
        from its rate bucket, as a connection attempt does."""
        if self.clients >= self.limits.max_clients:
            return FULL
        if self.per_ip.get(peer, 0) >= self.limits.max_clients_per_ip:
            return TOO_MANY_FROM_ADDRESS
        if not self._bucket(peer).take():
            return TOO_FAST
        return None

    def admitted(self, peer: str) -> None:
        self.clients += 1
        self.per_ip[peer] = self.per_ip.get(peer, 0) + 1

    def gone(self, peer: str) -> None:
        self.clients -= 1
        left = self.per_ip.get(peer, 1) - 1
        if left:
            self.per_ip[peer] = left
        else:
            self.per_ip.pop(peer, None)

    def reload(self, limits: config.Limits) -> None:
        """New limits; rates start afresh (counts of connected clients stay)."""
        self.limits = limits
        self.buckets.clear()

    def _bucket(self, peer: str) -> flood.TokenBucket:
        bucket = self.buckets.get(peer)
        if bucket is None:
            if len(self.buckets) >= MAX_CONNECT_BUCKETS:
                self.buckets = {ip: b for ip, b in self.buckets.items() if not b.full()}
            bucket = flood.TokenBucket(self.limits.connect_burst, self.limits.connect_rate)
            self.buckets[peer] = bucket
        return bucket
