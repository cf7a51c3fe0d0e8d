"""Failed OPER attempts counted per client address (pure; the broker owns it).

A worker makes its own connection wait after a failed OPER, but a client
that reconnects starts again with no wait, and every guess costs a scrypt
hash.  So each worker tells the broker of every failed attempt, and the
broker keeps one record per address here and pushes the address's
not-before time (CLOCK_MONOTONIC, which all processes share) to every
connection from that address.  A connection does not hash an OPER password
before that time.

The numbers:

- FREE_FAILURES = 3: the first three failures from an address start no
  address-wide wait (each connection still waits after its own failure),
  so one person's typos behind a shared NAT address do not lock out the
  operator who shares it.
- FIRST_DELAY_S = 2, doubled at each further failure up to MAX_DELAY_S =
  300: an operator who mistyped four times waits seconds, a guesser reaches
  one guess per five minutes after a dozen failures (under 300 guesses a day
  per address, instead of about 20 a second by reconnecting).
- QUIET_S = 600: a record is forgotten ten minutes after its last failure,
  so the count starts again only after a quiet period.  It is longer than
  MAX_DELAY_S, so a guesser who keeps guessing at the slowest allowed rate
  keeps the longest wait, and forgetting never cuts a wait short.
- MAX_ADDRESSES = 10,000: at most that many records (about 200 bytes each,
  2 MB in all); past it the least recently failed address is forgotten.

A record lives only in the broker's memory: a broker restart forgets them
all (connections keep the not-before they were sent).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

FREE_FAILURES = 3
FIRST_DELAY_S = 2.0
MAX_DELAY_S = 300.0
QUIET_S = 600.0
MAX_ADDRESSES = 10_000
_MAX_DOUBLINGS = 16          # 2 s * 2**16 is far past the cap; no float overflow


@dataclass(slots=True)
class Record:
    """One address's failures since its last quiet period."""

    failures: int = 0
    last: float = 0.0            # monotonic time of the latest failure
    not_before: float = 0.0      # no OPER password is checked before this


# Least recently failed first, so that expiry and the size bound pop from the front.
Records = OrderedDict[str, Record]


def new_records() -> Records:
    return OrderedDict()


def delay(failures: int) -> float:
    """The address-wide wait after `failures` failures in a row (0: none)."""
    extra = failures - FREE_FAILURES
    if extra <= 0:
        return 0.0
    return min(MAX_DELAY_S, FIRST_DELAY_S * 2 ** min(extra - 1, _MAX_DOUBLINGS))


def failed(records: Records, host: str, now: float) -> float:
    """Count one failed OPER from `host`; returns the address's not-before."""
    forget_quiet(records, now)
    record = records.pop(host, None) or Record()
    record.failures += 1
    record.last = now
    record.not_before = max(record.not_before, now + delay(record.failures))
    records[host] = record                      # now the most recent
    while len(records) > MAX_ADDRESSES:
        records.popitem(last=False)
    return record.not_before


def succeeded(records: Records, host: str) -> None:
    """An OPER from `host` was right: its failures are forgiven."""
    records.pop(host, None)


def not_before(records: Records, host: str, now: float) -> float:
    """When `host` may next have an OPER password checked (0.0: no wait)."""
    record = records.get(host)
    if record is None or now - record.last >= QUIET_S:
        return 0.0
    return record.not_before


def failures(records: Records, host: str) -> int:
    """Failures counted for `host` (the broker logs when the wait starts)."""
    record = records.get(host)
    return record.failures if record is not None else 0


def forget_quiet(records: Records, now: float) -> None:
    """Drop the records quiet for QUIET_S; the oldest are at the front."""
    while records:
        host, record = next(iter(records.items()))
        if now - record.last < QUIET_S:
            return
        del records[host]
