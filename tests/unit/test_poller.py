"""The worker's epoll wrapper: selectors' event bits, callbacks by descriptor."""

import selectors
import socket
import time

import pytest

from forkchat import poller, timers


@pytest.fixture
def pair():
    left, right = socket.socketpair()
    left.setblocking(False)
    yield left, right
    left.close()
    right.close()


@pytest.fixture
def poll():
    p = poller.Poller()
    yield p
    p.close()


def seen(callback):
    return lambda mask: callback.append(mask)


def test_nothing_ready_is_empty(poll, pair):
    poll.register(pair[0], poller.READ, seen([]))
    assert poll.select(0) == []


def test_readable_reports_read_to_its_callback(poll, pair):
    got, other = [], []
    poll.register(pair[0], poller.READ, seen(got))
    poll.register(pair[1].fileno(), poller.READ, seen(other))   # a plain fd works too
    pair[1].send(b"x")
    for callback, mask in poll.select(1.0):
        callback(mask)
    assert got == [poller.READ] and other == []


def test_modify_changes_events_and_callback(poll, pair):
    first, second = [], []
    poll.register(pair[0], poller.READ, seen(first))
    poll.modify(pair[0], poller.READ | poller.WRITE, seen(second))
    for callback, mask in poll.select(1.0):
        callback(mask)
    assert first == [] and second == [poller.WRITE]     # writable, nothing to read


def test_hangup_wakes_a_registration_for_read(poll, pair):
    got = []
    poll.register(pair[0], poller.READ, seen(got))
    pair[1].close()
    for callback, mask in poll.select(1.0):
        callback(mask)
    assert got and got[0] & poller.READ


def test_unregister_stops_reports_and_allows_register_again(poll, pair):
    poll.register(pair[0], poller.READ, seen([]))
    pair[1].send(b"x")
    poll.unregister(pair[0])
    assert poll.select(0) == []
    poll.register(pair[0], poller.READ, seen([]))
    assert len(poll.select(1.0)) == 1


def test_register_twice_and_unknown_descriptors_raise(poll, pair):
    poll.register(pair[0], poller.READ, seen([]))
    with pytest.raises(KeyError):
        poll.register(pair[0], poller.READ, seen([]))
    with pytest.raises(KeyError):
        poll.modify(pair[1], poller.READ, seen([]))
    with pytest.raises(KeyError):
        poll.unregister(pair[1])


def test_any_due_agrees_with_pop_due():
    now = time.monotonic()
    assert not timers.any_due({})
    future = {"later": now + 60.0}
    assert not timers.any_due(future) and timers.pop_due(future) == []
    mixed = {"later": now + 60.0, "past": now - 1.0}
    assert timers.any_due(mixed) and timers.pop_due(mixed) == ["past"]


@pytest.mark.parametrize("events", [poller.READ, poller.WRITE, poller.READ | poller.WRITE])
def test_hangup_reports_only_the_events_asked_for_as_selectors_does(poll, pair, events):
    """A hang-up wakes every registration, but selectors masks the report
    with what was asked for: a link watched for READ alone must not be
    told it is writable (the worker would write to a dead broker before
    reading what it sent last), nor a socket watched for WRITE readable."""
    reference = selectors.EpollSelector()
    try:
        reference.register(pair[0], events, None)
        poll.register(pair[0], events, seen([]))
        pair[1].close()
        expected = [mask for _key, mask in reference.select(1.0)]
        assert [mask for _callback, mask in poll.select(1.0)] == expected == [events]
    finally:
        reference.close()


def test_a_socket_closed_before_unregister_is_forgotten_as_selectors_does(poll):
    """selectors finds a closed socket (fileno() -1) by identity; so must this,
    or the descriptor number, once reused, could never be registered again."""
    first, peer = socket.socketpair()
    number = first.fileno()
    poll.register(first, poller.READ, seen([]))
    first.close()
    poll.unregister(first)
    reused, other = socket.socketpair()
    try:
        assert number in (reused.fileno(), other.fileno())
        poll.register(reused, poller.READ, seen([]))
        poll.register(other, poller.READ, seen([]))
    finally:
        for sock in (peer, reused, other):
            sock.close()
