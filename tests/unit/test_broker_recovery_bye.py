"""A client that quits during a broker restart's recovery quits with its
own reason, once the recovery ends.

Until the listed workers are back, frames other than HELLO and REREGISTER
are held (broker.Broker._on_frame); a worker that exits meanwhile has its
link closed, and its held BYE was then skipped at the end of the recovery:
its rooms were told "Connection closed", not the client's quit reason.
Its quit then ran at once, while members of its rooms were still to come
back: those never saw it.  It now waits for the end of the recovery.  A
closing worker learns that the new broker took its link from the echo of
a SYNC, answered at once when nothing of its link is held.
"""

from __future__ import annotations

import os
import selectors
import time

import pytest

from forkchat import broker, ipc
from tests.unit.test_broker_cid import PEER, Harness, hello

REASON = "QUIT: off to lunch"


@pytest.fixture
def recovering(tmp_path):
    """A new broker that awaits two workers: the test process (conn 1) and
    one that never comes (conn 2), so the recovery lasts."""
    made = Harness(tmp_path, expected=((1, os.getpid(), PEER), (2, 0, PEER)))
    quits: list[tuple[int, str]] = []
    disconnect = made.broker.state.disconnect

    def recorded(cid, reason, out):
        quits.append((cid, reason))
        disconnect(cid, reason, out)

    made.broker.state.disconnect = recorded
    yield made, quits
    made.close()


def back_and_quitting(made: Harness):
    sock = made.worker(hello(1, reregister=True),
                       ipc.encode_json(ipc.Kind.REREGISTER,
                                       {"nick": "alice", "user": "a", "rooms": {"#r": ""}}),
                       ipc.encode(ipc.Kind.BYE, REASON.encode()))
    assert made.broker.state.clients[1].nick == "alice"
    assert made.broker.awaiting == {2}          # still recovering: the BYE is held
    return sock


def gone(made: Harness, cid: int, pid: int) -> None:
    """The supervisor's word that a worker exited."""
    made.supervisor_end.sendall(ipc.encode_json(
        ipc.Kind.CONTROL, {"op": "gone", "cid": cid, "pid": pid}))
    made.broker.on_control(selectors.EVENT_READ)


def test_a_worker_that_exits_after_its_held_bye_quits_with_its_reason(recovering):
    made, quits = recovering
    sock = back_and_quitting(made)
    sock.close()
    made.turn(0.5)                              # its end of file
    assert 1 not in made.broker.links
    assert quits == []                          # others may still come back
    gone(made, 2, 0)                            # the last awaited: the recovery ends
    assert quits == [(1, REASON)]


def test_a_worker_gone_with_its_bye_held_quits_with_its_reason(recovering):
    made, quits = recovering
    back_and_quitting(made)
    gone(made, 1, os.getpid())
    assert quits == []
    gone(made, 2, 0)
    assert quits == [(1, REASON)]


def test_a_worker_that_ends_without_a_bye_quits_when_the_recovery_ends(recovering):
    """Nothing of it held: its quit still waits, for the members of its
    rooms still to come back."""
    made, quits = recovering
    sock = made.worker(hello(1, reregister=True),
                       ipc.encode_json(ipc.Kind.REREGISTER,
                                       {"nick": "alice", "user": "a", "rooms": {"#r": ""}}))
    sock.close()
    made.turn(0.5)
    assert 1 not in made.broker.links and quits == []
    gone(made, 2, 0)
    assert quits == [(1, "Connection closed")]


def echoed(sock, token: bytes) -> bool:
    """Whether the broker has sent the SYNC `token` back (reads what is there)."""
    sock.setblocking(False)
    reader = ipc.FrameReader()
    frames = []
    try:
        while data := sock.recv(65536):
            frames += reader.feed(data)
    except BlockingIOError:
        pass
    return (ipc.Kind.SYNC, token) in frames


def test_a_sync_with_nothing_held_before_it_is_echoed_in_the_recovery(recovering):
    """A closing worker's proof that this broker took its link and client."""
    made, _quits = recovering
    sock = made.worker(hello(1, reregister=True),
                       ipc.encode_json(ipc.Kind.REREGISTER, {"nick": "alice", "user": "a"}),
                       ipc.encode(ipc.Kind.SYNC, b"bye"))
    made.turn(0.2)                              # its output flushed
    assert made.broker.awaiting == {2}
    assert echoed(sock, b"bye")


def test_a_sync_behind_held_frames_waits_for_them(recovering):
    """Its echo says all before it has run: not before the recovery ends."""
    made, _quits = recovering
    sock = made.worker(hello(1, reregister=True),
                       ipc.encode_json(ipc.Kind.REREGISTER, {"nick": "alice", "user": "a"}),
                       ipc.encode(ipc.Kind.REQUEST, b"AWAY :lunch"),
                       ipc.encode(ipc.Kind.SYNC, b"s1"))
    made.turn(0.2)
    assert not echoed(sock, b"s1")
    gone(made, 2, 0)
    made.turn(0.2)
    assert made.broker.state.clients[1].away == "lunch"
    assert echoed(sock, b"s1")


def test_lines_held_before_a_bye_run_in_order_within_flood_control_then_the_quit(
        recovering):
    """A worker that sent a flood of lines and its BYE, and exited, in a
    recovery: what its flood control allows runs once the recovery ends,
    from the first line on, in order, then its client quits with its
    BYE's reason; the rest is dropped, as any gone worker's.  (Only the
    BYE's reason was kept once; then all of it ran, flood control or not.)"""
    made, quits = recovering
    lines: list[str] = []
    request = made.broker.state.request
    made.broker.state.request = lambda cid, msg, out: (
        lines.append(msg.params[-1] if not quits else "after the quit"),
        request(cid, msg, out))
    rate, burst = made.broker._worker_flood(os.getpid())
    start = time.monotonic()
    sock = made.worker(hello(1, reregister=True),
                       ipc.encode_json(ipc.Kind.REREGISTER,
                                       {"nick": "alice", "user": "a", "rooms": {"#r": ""}}))
    sent = 300
    sock.sendall(b"".join(ipc.encode(ipc.Kind.REQUEST, f"PRIVMSG #r :line {n}".encode())
                          for n in range(sent)) + ipc.encode(ipc.Kind.BYE, REASON.encode()))
    made.turn(0.2)
    sock.close()
    gone(made, 1, os.getpid())
    assert lines == [] and quits == []          # held until the recovery ends
    gone(made, 2, 0)
    tokens = broker.FLOOD_MARGIN * (burst + rate * (time.monotonic() - start)) \
        + broker.FLOOD_OWN_FRAMES
    assert lines == [f"line {n}" for n in range(len(lines))]
    assert 0 < len(lines) <= tokens < sent
    assert quits == [(1, REASON)]
    assert 1 not in made.broker.state.clients
