"""The worker's ping timeout while a reply drains, on socket pairs with a
clock the test moves: no processes, no broker, no waiting."""

from __future__ import annotations

import dataclasses
import socket

import pytest

from forkchat import config, ipc, poller, worker

REPLY = b":forkchat.local 372 alice :- " + b"m" * 60 + b"\r\n"
REPLY_LINES = 2000            # some 180 KB: 9 seconds at 20 KB/s
STEP_S = 0.1


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


@pytest.fixture
def replying(monkeypatch):
    """A registered worker that pings after 1 s of silence and drops after
    one more, a reply queued for its client, and the client's end (small
    buffers, so that most of the reply waits in the worker's queue).  The
    stall watch is out of the way (sendq_bytes above the reply)."""
    clock = Clock()
    monkeypatch.setattr(worker, "time", clock)
    cfg = config.Config()
    cfg = dataclasses.replace(cfg, limits=dataclasses.replace(
        cfg.limits, ping_interval=1.0, ping_timeout=1.0, sendq_bytes=1 << 20))
    client_end, server_end = socket.socketpair()
    server_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client_end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client_end.setblocking(False)
    broker_end, link_end = socket.socketpair()
    link_end.setblocking(False)
    server_end.setblocking(False)
    w = worker.Worker(server_end, "127.0.0.1", "irc", 1, cfg, "unused")
    w.link.sock = link_end
    w.session.nick, w.session.registered = "alice", True
    w.selector.register(link_end, poller.READ, w.on_link)
    w.selector.register(server_end, poller.READ, w.on_client)
    w._schedule_ping()
    w._take_frames([(ipc.Kind.REPLY, REPLY * REPLY_LINES)])
    yield w, client_end, clock
    w.selector.close()
    for sock in (client_end, server_end, broker_end, link_end):
        sock.close()


def read_for(w: worker.Worker, client_end: socket.socket, clock: Clock, seconds: float,
             per_step: int) -> bytes:
    """The client reads `per_step` bytes every STEP_S for `seconds` (and
    says nothing); the worker sends and runs its timers as its loop would."""
    got = b""
    for _ in range(round(seconds / STEP_S)):
        clock.now += STEP_S
        try:
            got += client_end.recv(per_step)
        except BlockingIOError:
            pass
        w._flush_client()
        w._run_timers()
        if w.closing:
            break
    return got


def closing_reason(w: worker.Worker) -> str:
    return bytes(w.sendq).rsplit(b"ERROR :", 1)[-1].decode() if w.closing else ""


def test_a_client_that_takes_its_reply_steadily_is_heard_from(replying):
    """20 KB a second of a reply, for four times ping_interval plus
    ping_timeout, and not a line from the client: it stays, and is sent one
    PING, behind the reply (before, it was dropped after 2 seconds)."""
    w, client_end, clock = replying
    got = read_for(w, client_end, clock, 8.0, per_step=2048)
    assert not w.closing, closing_reason(w)
    assert w.replies.pending > 0          # still reading: the test was long enough
    assert b"PING" not in got
    assert bytes(w.sendq).count(b"PING ") == 1


def test_a_client_that_takes_a_trickle_is_dropped_by_the_ping_timeout(replying):
    """A few bytes at a time (100 a second, less than TAKING_RATE): not
    held for as long as the reply would take (here half an hour), but
    dropped at the ping timeout as a silent client is."""
    w, client_end, clock = replying
    read_for(w, client_end, clock, 8.0, per_step=10)
    assert w.closing
    assert "Ping timeout: 2 seconds" in closing_reason(w)


def test_a_client_heard_from_by_its_reply_must_still_answer_the_ping(replying):
    """Once the reply has been read, the PING behind it is what the client
    must answer: one that reads on but never answers is dropped within a
    ping_interval plus ping_timeout of the end."""
    w, client_end, clock = replying
    got = read_for(w, client_end, clock, 30.0, per_step=4096)
    assert b"PING " in got
    assert w.closing
    assert "Ping timeout" in closing_reason(w)


@pytest.mark.parametrize(("sent", "unacked", "heard"), [
    (1024, [5000, 5000], True),        # TAKING_RATE a second, sent while replying
    (1000, [5000, 5000], False),       # a trickle
    (0, [9000, 7976], True),           # read from what the kernel held
    (0, [9000, 9500], False),          # more held, nothing read
    (0, [9000, None], False),          # the kernel could not be asked
    (1024, [None, 3000], True),
])
def test_what_the_client_took_is_weighed_against_the_time(replying, monkeypatch,
                                                          sent, unacked, heard):
    """Over one second since the last look (the PING): the bytes sent while
    a reply was pending plus the fall of the kernel's unacknowledged bytes,
    against TAKING_RATE; a look the kernel did not answer proves nothing."""
    w, _, clock = replying
    answers = iter(unacked)
    monkeypatch.setattr(worker, "_unacked_bytes", lambda sock: next(answers))
    assert worker.TAKING_RATE == 1024
    w._took_output(clock.now)
    clock.now += 1.0
    w.reply_taken = sent
    assert w._took_output(clock.now) is heard
    assert w.reply_taken == 0 and w.taken_since == clock.now
