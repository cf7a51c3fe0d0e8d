"""The address-wide OPER back-off: operguard's records."""

from __future__ import annotations

from forkchat import operguard

A, B = "192.0.2.1", "192.0.2.2"
FREE = operguard.FREE_FAILURES


def fail(records, host, times, now=100.0):
    """`times` failures from `host` at `now`; the last not-before."""
    result = 0.0
    for _ in range(times):
        result = operguard.failed(records, host, now)
    return result


# -- operguard ----------------------------------------------------------------

def test_the_first_failures_start_no_wait():
    records = operguard.new_records()
    for count in range(1, FREE + 1):
        assert operguard.failed(records, A, 100.0) <= 100.0
        assert operguard.failures(records, A) == count
    assert operguard.not_before(records, A, 100.0) <= 100.0


def test_past_the_free_failures_the_wait_doubles():
    records = operguard.new_records()
    fail(records, A, FREE)
    waits = [operguard.failed(records, A, 100.0) - 100.0 for _ in range(4)]
    assert waits == [operguard.FIRST_DELAY_S * factor for factor in (1, 2, 4, 8)]
    assert operguard.not_before(records, A, 100.0) == 100.0 + waits[-1]


def test_the_wait_stops_at_the_cap_however_many_failures():
    records = operguard.new_records()
    assert fail(records, A, FREE + 5000) == 100.0 + operguard.MAX_DELAY_S
    assert operguard.delay(10 ** 6) == operguard.MAX_DELAY_S


def test_a_wait_counts_from_the_latest_failure_and_never_shrinks():
    records = operguard.new_records()
    fail(records, A, FREE + 3)                                  # 8 s from 100.0
    assert operguard.failed(records, A, 101.0) == 101.0 + 16.0
    assert operguard.delay(FREE + 1) == operguard.FIRST_DELAY_S


def test_addresses_are_counted_apart():
    records = operguard.new_records()
    fail(records, A, FREE + 1)
    assert operguard.not_before(records, A, 100.0) > 100.0
    assert operguard.not_before(records, B, 100.0) == 0.0
    assert operguard.failures(records, B) == 0


def test_a_success_forgives_the_address():
    records = operguard.new_records()
    fail(records, A, FREE + 2)
    operguard.succeeded(records, A)
    assert operguard.not_before(records, A, 100.0) == 0.0
    assert fail(records, A, FREE) <= 100.0           # free failures again
    operguard.succeeded(records, B)                  # unknown address: nothing to do


def test_records_are_forgotten_after_a_quiet_period():
    records = operguard.new_records()
    fail(records, A, FREE + 1, now=100.0)
    later = 100.0 + operguard.QUIET_S
    assert operguard.not_before(records, A, later) == 0.0
    operguard.failed(records, B, later)              # any failure sweeps the quiet ones
    assert A not in records and operguard.failures(records, A) == 0
    assert operguard.failed(records, A, later) <= later       # counting starts again


def test_failures_short_of_the_quiet_period_keep_counting():
    records = operguard.new_records()
    now = 100.0
    for _ in range(FREE):
        now += operguard.QUIET_S - 1
        operguard.failed(records, A, now)
    assert operguard.failed(records, A, now + 1) > now + 1


def test_the_wait_never_outlives_the_record():
    """Forgetting a quiet record must not cut a wait short."""
    assert operguard.MAX_DELAY_S < operguard.QUIET_S


def test_size_is_bounded_and_the_least_recent_goes(monkeypatch):
    monkeypatch.setattr(operguard, "MAX_ADDRESSES", 3)
    records = operguard.new_records()
    for index, host in enumerate(["h0", "h1", "h2"]):
        operguard.failed(records, host, 100.0 + index)
    operguard.failed(records, "h0", 104.0)           # h0 is now the most recent
    operguard.failed(records, "h3", 105.0)
    assert list(records) == ["h2", "h0", "h3"]
