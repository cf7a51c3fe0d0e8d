"""The connection limits, without sockets."""

from __future__ import annotations

import dataclasses

from forkchat import admission, config


def limits(**changes) -> config.Limits:
    return dataclasses.replace(config.Limits(), **changes)


def test_max_clients_counts_everyone_until_they_are_gone():
    gate = admission.Admission(limits(max_clients=2, max_clients_per_ip=5, connect_burst=10))
    for peer in ("192.0.2.1", "192.0.2.2"):
        assert gate.refusal(peer) is None
        gate.admitted(peer)
    assert gate.refusal("192.0.2.3") == admission.FULL
    gate.gone("192.0.2.1")
    assert gate.refusal("192.0.2.3") is None


def test_per_address_limit_and_its_release():
    gate = admission.Admission(limits(max_clients=100, max_clients_per_ip=2, connect_burst=10))
    for _ in range(2):
        assert gate.refusal("198.51.100.7") is None
        gate.admitted("198.51.100.7")
    assert gate.refusal("198.51.100.7") == admission.TOO_MANY_FROM_ADDRESS
    assert gate.refusal("198.51.100.8") is None          # another address is not affected
    gate.gone("198.51.100.7")
    assert gate.refusal("198.51.100.7") is None
    gate.gone("198.51.100.7")
    assert gate.per_ip == {} and gate.clients == 0      # nothing left behind


def test_connect_rate_per_address_and_reload_starts_afresh():
    gate = admission.Admission(limits(max_clients=100, max_clients_per_ip=100,
                                      connect_burst=2, connect_rate=0.001))
    assert gate.refusal("203.0.113.9") is None
    assert gate.refusal("203.0.113.9") is None
    assert gate.refusal("203.0.113.9") == admission.TOO_FAST
    assert gate.refusal("203.0.113.10") is None
    gate.reload(limits(max_clients=100, max_clients_per_ip=100, connect_burst=1))
    assert gate.refusal("203.0.113.9") is None


def test_ipv4_mapped_addresses_count_as_ipv4():
    assert admission.peer_address("::ffff:192.0.2.1") == "192.0.2.1"
    assert admission.peer_address("2001:db8::1") == "2001:db8::1"


def test_refusal_windows_end_in_start_order_and_are_bounded(monkeypatch):
    """The next window to end is always the first kept, also after an
    address's window is opened again; past the bound, the oldest closes early
    with its count."""
    refusals = admission.RefusalLog(window_s=10.0)
    refusals.refused("a", admission.FULL, 0.0)
    refusals.refused("b", admission.FULL, 5.0)
    refusals.refused("a", admission.FULL, 11.0)       # a's first window is over: a new one
    assert refusals.next_due() == 15.0                # b's, not a's
    monkeypatch.setattr(admission, "MAX_REFUSAL_WINDOWS", 2)
    refusals.refused("b", admission.FULL, 12.0)       # counted in b's window
    lines = refusals.refused("c", admission.FULL, 13.0)
    assert lines == ["refused 1 more connection from b in 10 s (" + admission.FULL + ")",
                     "refused connection from c: " + admission.FULL]
    assert list(refusals.windows) == [("a", admission.FULL), ("c", admission.FULL)]


def test_rate_buckets_stay_bounded_and_forget_the_least_recent_address(monkeypatch):
    """Many addresses, each still refilling (an IPv6 /64 is plenty): the table grew
    past MAX_CONNECT_BUCKETS, since only refilled buckets were pruned.  Now the
    address that connected least recently is forgotten; a recent one keeps its
    rate."""
    monkeypatch.setattr(admission, "MAX_CONNECT_BUCKETS", 4)
    gate = admission.Admission(limits(max_clients=100, max_clients_per_ip=100,
                                      connect_burst=1, connect_rate=0.001, ipv6_prefix=128))
    assert gate.refusal("2001:db8::1") is None
    for index in range(2, 40):
        assert gate.refusal(f"2001:db8::{index}") is None
        assert gate.refusal("2001:db8::1") == admission.TOO_FAST    # used again: kept
        assert len(gate.buckets) <= 4
    assert gate.refusal("2001:db8::2") is None     # forgotten long ago: a new burst


def test_address_blocks():
    assert admission.address_block("2001:db8:1:2:a:b:c:d", 32, 64) == "2001:db8:1:2::/64"
    assert admission.address_block("2001:db8:1:2:a:b:c:d", 32, 128) == "2001:db8:1:2:a:b:c:d"
    assert admission.address_block("192.0.2.77", 24, 64) == "192.0.2.0/24"
    assert admission.address_block("192.0.2.77", 32, 64) == "192.0.2.77"
    assert admission.address_block("not an address", 24, 64) == "not an address"


def test_one_ipv6_64_shares_the_per_address_limit_and_the_connect_rate():
    """An IPv6 host holds a /64 and picks a fresh address in it at will: each
    address counted on its own got its own max_clients_per_ip and burst."""
    gate = admission.Admission(limits(max_clients=100, max_clients_per_ip=2, connect_burst=10))
    for host in (1, 2):
        assert gate.refusal(f"2001:db8:0:7::{host}") is None
        gate.admitted(f"2001:db8:0:7::{host}")
    assert gate.refusal("2001:db8:0:7::3") == admission.TOO_MANY_FROM_ADDRESS
    assert gate.refusal("2001:db8:0:8::3") is None         # the next /64 is another block
    gate.gone("2001:db8:0:7::1")
    assert gate.refusal("2001:db8:0:7::3") is None
    rate = admission.Admission(limits(max_clients=100, max_clients_per_ip=100,
                                      connect_burst=2, connect_rate=0.001))
    assert [rate.refusal(f"2001:db8::{host}") for host in (1, 2, 3)] == \
        [None, None, admission.TOO_FAST]


def test_a_reload_regroups_the_connected_clients_by_the_new_prefix():
    gate = admission.Admission(limits(max_clients=100, max_clients_per_ip=2, connect_burst=10,
                                      ipv4_prefix=32))
    for peer in ("198.51.100.1", "198.51.100.2"):
        gate.admitted(peer)
    assert gate.refusal("198.51.100.3") is None
    gate.reload(limits(max_clients=100, max_clients_per_ip=2, connect_burst=10, ipv4_prefix=24))
    assert gate.refusal("198.51.100.3") == admission.TOO_MANY_FROM_ADDRESS
    gate.gone("198.51.100.1")
    gate.gone("198.51.100.2")
    assert gate.per_ip == {} and gate.per_block == {} and gate.clients == 0


def test_refusals_from_one_block_share_a_log_window():
    refusals = admission.RefusalLog(window_s=10.0)
    block = "2001:db8::/64"
    assert refusals.refused("2001:db8::1", admission.TOO_FAST, 0.0, block) == \
        ["refused connection from 2001:db8::1 (2001:db8::/64): " + admission.TOO_FAST]
    assert refusals.refused("2001:db8::2", admission.TOO_FAST, 1.0, block) == []
    assert refusals.flush() == \
        ["refused 1 more connection from 2001:db8::/64 in 10 s (" + admission.TOO_FAST + ")"]
