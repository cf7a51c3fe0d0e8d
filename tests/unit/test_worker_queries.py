"""A query (WHO, LIST, NAMES, WHOWAS) that died with the broker unanswered is
asked of the next one: the client waits for its end numeric (irssi sends no
further query for the rooms it joins until it comes).  On socket pairs, with
a fake broker; tests/faults/test_kill_broker.py kills a real one."""

from __future__ import annotations

import socket

import pytest

from forkchat import config, ipc, worker
from tests.unit.test_worker_lines import fake_broker  # noqa: F401 (fixture)


@pytest.fixture
def alice(fake_broker):  # noqa: F811
    """(worker, client end, accept): a registered client's worker, linked."""
    address, accept = fake_broker
    client_end, server_end = socket.socketpair()
    w = worker.Worker(server_end, "127.0.0.1", "irc", 1, config.Config(), address)
    w.session.nick, w.session.user, w.session.registered = "alice", "a", True
    assert w._connect_broker()
    accept(w)
    yield w, client_end, accept
    w.selector.close()
    if w.link.sock is not None:
        w.link.sock.close()
    client_end.close()
    server_end.close()


def says(w: worker.Worker, client_end: socket.socket, lines: bytes) -> None:
    """The client sends `lines`; the worker reads and runs them."""
    client_end.sendall(lines)
    w.on_client(worker.selectors.EVENT_READ)


def answers(w: worker.Worker, *lines: str) -> None:
    """The broker's REPLY frames, one line each, as it writes them."""
    name = w.cfg.server.name
    w._take_frames([(ipc.Kind.REPLY, f":{name} {line}\r\n".encode()) for line in lines])


def restart(w: worker.Worker, accept, flushed: bool = True) -> list[bytes]:
    """The broker dies (after reading what was flushed to it); the requests
    the worker sends the next one, after its HELLO and REREGISTER."""
    if flushed:
        w._flush_link()
    w._broker_lost("test")
    assert w._connect_broker()
    frames = accept(w)
    assert [kind for kind, _ in frames[:2]] == [ipc.Kind.HELLO, ipc.Kind.REREGISTER]
    return [payload for kind, payload in frames if kind == ipc.Kind.REQUEST]


def test_a_query_the_dead_broker_never_answered_is_asked_again(alice):
    """A scan waiting for its turn (or just not answered yet) died with the
    broker: the new one is asked it again, not the talk that passed it
    (the dead broker ran that), and what the client sends in step next
    waits for the answer."""
    w, client_end, accept = alice
    says(w, client_end, b"WHO #big\r\nPRIVMSG nobody :hi\r\n")
    answers(w, "401 alice nobody :No such nick/channel")     # talk passes a waiting scan
    assert restart(w, accept) == [b"WHO #big"]
    says(w, client_end, b"PING :after\r\n")
    assert b"PONG" not in bytes(w.sendq)          # after the WHO's answer, not before


def test_a_query_answered_to_its_end_is_not_asked_again(alice):
    """The broker answered and died before any SYNC came back: the end
    numeric says the client has its answer, which it must not get twice."""
    w, client_end, accept = alice
    says(w, client_end, b"WHO #big\r\n")
    answers(w, "352 alice #big u h srv bob H :0 B", "315 alice #big :End of WHO list")
    assert restart(w, accept) == []


def test_a_query_followed_by_a_sync_echo_is_not_asked_again(alice):
    """The SYNC the next command in step sent came back: all before it,
    the query included, was answered."""
    w, client_end, accept = alice
    says(w, client_end, b"LIST\r\nPING :x\r\n")
    w._flush_link()
    w._take_frames([(ipc.Kind.SYNC, b"")])
    assert b"PONG" in bytes(w.sendq)
    assert restart(w, accept) == []


def test_a_query_still_queued_goes_once(alice):
    """A query the dead broker never got is still queued: it goes to the
    next broker in its turn, not a second time besides."""
    w, client_end, accept = alice
    says(w, client_end, b"WHOWAS a*\r\n")
    assert restart(w, accept, flushed=False) == [b"WHOWAS a*"]


def test_a_names_of_two_rooms_needs_both_ends(alice):
    """NAMES #a,#b ends with a 366 for each room: one is not the end."""
    w, client_end, accept = alice
    says(w, client_end, b"NAMES #a,#b\r\n")
    answers(w, "366 alice #a :End of /NAMES list")
    assert restart(w, accept) == [b"NAMES #a,#b"]
    answers(w, "366 alice #a :End of /NAMES list", "366 alice #b :End of /NAMES list")
    assert restart(w, accept) == []


def test_a_query_lost_twice_is_asked_a_third_time(alice):
    w, client_end, accept = alice
    says(w, client_end, b"LIST >100\r\n")
    assert restart(w, accept) == [b"LIST >100"]
    assert restart(w, accept) == [b"LIST >100"]
    answers(w, "323 alice :End of /LIST")
    assert restart(w, accept) == []


def test_commands_that_change_something_are_not_sent_again(alice):
    """Only read-only queries are asked again: a JOIN or a TOPIC the
    dead broker may have run is not run twice."""
    w, client_end, accept = alice
    says(w, client_end, b"JOIN #a\r\n")
    assert restart(w, accept) == []
    says(w, client_end, b"TOPIC #a :hello\r\n")
    assert restart(w, accept) == []
