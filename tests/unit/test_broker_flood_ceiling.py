"""The broker's flood control of each worker keeps to the flood_rate and
flood_burst that worker was started with, which the supervisor names with
its pid.

A worker keeps the flood control it was started with (forkchat.toml(5):
the limits of a connection are those of when it was accepted).  A broker
that went by the running configuration held the workers started before a
reload that lowered them below their own pace, once it made their buckets
anew (restarted after a crash); one that went by the highest limits since
the start gave every worker started after such a reload, made against
abuse, twice the old rate until the server restarted (forkchat(7)).
"""

from __future__ import annotations

import functools
import os
import pickle
import selectors
import socket

import pytest

from forkchat import broker, config, flood, ipc, protocol, supervisor
from forkchat.supervisor import spawner

from tests.support.processes import idle_child

FAST = (10.0, 10)
SLOW = (1.0, 1)


def limits(rate: float, burst: int, state_dir: str = "") -> config.Config:
    """(No listener: a reload to it binds none.)"""
    server = config.Server(state_dir=state_dir) if state_dir else config.Server()
    return config.Config(server=server, listen=(),
                         limits=config.Limits(flood_rate=rate, flood_burst=burst))


def pace(rate: float, burst: int) -> tuple[float, float]:
    """What the broker's bucket of a worker started with these holds: (burst, rate)."""
    return (broker.FLOOD_MARGIN * burst + broker.FLOOD_OWN_FRAMES, broker.FLOOD_MARGIN * rate)


# -- the supervisor's bookkeeping ---------------------------------------------------

class Boss:
    """A Supervisor whose forks are recorded, not made: each spawner's end
    is kept (so that requests can be sent to it), what goes to the broker
    is collected."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        targets = supervisor.Targets(broker=lambda *args: None, worker=lambda *args: None)
        self.boss = supervisor.Supervisor(limits(*FAST), targets, reload=lambda: limits(*SLOW))
        self.frames: list[bytes] = []
        monkeypatch.setattr(self.boss, "_send_broker", self.frames.append)
        self.brokers: list[tuple] = []          # the arguments of each broker started
        self.spawner_ends: dict[int, socket.socket] = {}
        self.conns: list[socket.socket] = []
        self.workers: list[int] = []

        def start(kind, target, args, peer="", cid=0):
            child = supervisor.Child(kind, 7000 + len(self.boss.children), None, -1)
            self.boss.children[child.pid] = child
            if kind == "spawner":
                self.spawner_ends[child.pid] = socket.socket(fileno=os.dup(args[0].fileno()))
            else:
                self.brokers.append(args[2:])
            return child
        monkeypatch.setattr(self.boss, "_start", start)
        monkeypatch.setattr(supervisor.children, "unknown_children", lambda known: [])

    def ask(self, handle: spawner.Handle, cid: int) -> spawner.Request:
        """A connection handed to `handle`'s spawner (of a listener it
        knows: the test binds none)."""
        handle.listener_ids[:] = [1]
        ours, theirs = socket.socketpair()
        self.conns += [ours, theirs]
        request = spawner.Request(cid, theirs, f"192.0.2.{cid}", "irc", 1)
        self.boss.admission.admitted(request.peer)
        handle.request(request)
        self.boss._flush_spawner(handle)
        return request

    def started(self, handle: spawner.Handle, cid: int) -> int:
        """Its spawner reports `cid`'s worker (a real process: it is
        watched once adopted)."""
        pid = idle_child()
        self.workers.append(pid)
        self.spawner_ends[handle.pid].send(f"S {cid} {pid}".encode())
        self.boss._read_spawner(handle)
        return pid

    def told(self) -> list[dict]:
        """The control messages the broker was sent, in order."""
        frames = ipc.FrameReader().feed(b"".join(self.frames))
        return [ipc.decode_json(payload) for kind, payload in frames
                if kind == ipc.Kind.CONTROL]

    def close(self) -> None:
        for pid in self.workers:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        for child in self.boss.children.values():
            if child.pidfd != -1:
                os.close(child.pidfd)
        if self.boss.broker_control is not None:
            self.boss.broker_control.close()
        for handle in self.boss.spawners.values():
            handle.sock.close()
        for sock in [*self.spawner_ends.values(), *self.conns, self.boss.broker_listener]:
            sock.close()
        self.boss.selector.close()


@pytest.fixture
def boss(monkeypatch):
    made = Boss(monkeypatch)
    yield made
    made.close()


def test_each_worker_is_named_to_the_broker_with_the_limits_it_was_started_with(boss):
    """A reload that lowers the limits: a worker the retired spawner still
    starts (its connection was accepted before) keeps the old ones, one of
    the new spawner gets the new; each "bind" says so, and the reload sends
    the broker no ceiling of all."""
    assert boss.boss.spawn_broker() and boss.boss.start_spawner()
    old = boss.boss.spawner
    assert old is not None and old.flood == FAST
    boss.ask(old, 1)
    boss.boss.handle_sighup()
    new = boss.boss.spawner
    assert new is not old and new is not None and new.flood == SLOW
    first = boss.started(old, 1)
    boss.ask(new, 2)
    second = boss.started(new, 2)
    assert boss.told() == [
        {"op": "bind", "workers": [[1, first, "192.0.2.1", *FAST]]},
        {"op": "bind", "workers": [[2, second, "192.0.2.2", *SLOW]]}]
    assert boss.boss.children[first].flood == FAST
    assert boss.boss.children[second].flood == SLOW


def test_a_restarted_broker_gets_each_workers_own_limits(boss):
    """Those of the workers alive, whichever spawner started them (the
    retired one has exited, its worker adopted), and of the connections
    whose worker is not reported yet; the highest since the start made
    every worker's bucket in a broker restarted after a reload."""
    assert boss.boss.spawn_broker() and boss.boss.start_spawner()
    old = boss.boss.spawner
    assert old is not None
    boss.ask(old, 1)
    boss.boss.handle_sighup()
    new = boss.boss.spawner
    assert new is not None
    first = boss.started(old, 1)
    boss.spawner_ends[old.pid].close()           # the retired spawner exits ...
    boss.boss._spawner_gone(boss.boss.children.pop(old.pid), 0)
    boss.conns.append(old.sock)                  # (closed with the rest)
    assert boss.boss.children[first].spawner == 0     # ... its worker is ours now
    boss.ask(new, 2)
    assert boss.boss.spawn_broker()
    most_users, expected = boss.brokers[-1][2:]
    assert most_users == 0
    assert expected == ((1, first, "192.0.2.1", *FAST), (2, 0, "192.0.2.2", *SLOW))
    assert boss.boss.awaited_unstarted == {2}


def test_a_worker_a_dead_spawner_never_reported_is_named_with_that_spawners_limits(boss):
    """An orphan found to hold a dead spawner's connection (its report
    lost) is that spawner's worker, started with its configuration."""
    assert boss.boss.spawn_broker() and boss.boss.start_spawner()
    old = boss.boss.spawner
    assert old is not None
    request = boss.ask(old, 1)
    boss.boss.handle_sighup()
    orphan = idle_child()
    boss.workers.append(orphan)
    boss.boss._attribute(orphan, request, old)
    assert boss.told()[-1] == {"op": "bind", "workers": [[1, orphan, "192.0.2.1", *FAST]]}
    assert boss.boss.children[orphan].flood == FAST


# -- the broker's handling ----------------------------------------------------------

@pytest.fixture
def sockets():
    made = [*socket.socketpair(), *socket.socketpair()]
    yield made
    for sock in made:
        sock.close()


def control(made: broker.Broker, end: socket.socket, *messages: dict) -> None:
    end.sendall(b"".join(ipc.encode_json(ipc.Kind.CONTROL, message) for message in messages))
    made.on_control(selectors.EVENT_READ)


def test_each_workers_bucket_keeps_to_the_limits_it_was_started_with(tmp_path, sockets):
    """After a reload that lowered them, a worker started before it (named
    with the old limits) keeps the old pace, even for a bucket made after
    the reload; one started after it has the new, though a worker of the
    old limits is still alive; one named without limits has the running
    configuration's."""
    made = broker.Broker(sockets[0], sockets[2], limits(*FAST, str(tmp_path)), "today")
    try:
        control(made, sockets[3], {"op": "bind", "workers": [[1, 101, "192.0.2.1", *FAST]]})
        sockets[3].sendall(ipc.encode(ipc.Kind.CONFIG,
                                      pickle.dumps(limits(*SLOW, str(tmp_path)))))
        made.on_control(selectors.EVENT_READ)
        assert made.cfg.limits.flood_rate == SLOW[0]
        control(made, sockets[3], {"op": "bind", "workers": [[2, 102, "192.0.2.2", *SLOW],
                                                             [3, 103, "192.0.2.3"]]})
        buckets = {pid: made._bucket(pid) for pid in (101, 102, 103)}
        assert (buckets[101].burst, buckets[101].rate) == pace(*FAST)
        assert (buckets[102].burst, buckets[102].rate) == pace(*SLOW)
        assert (buckets[103].burst, buckets[103].rate) == pace(*SLOW)
    finally:
        made.selector.close()


def test_a_broker_started_after_a_reload_gives_each_expected_worker_its_own(tmp_path,
                                                                          sockets):
    made = broker.Broker(sockets[0], sockets[2], limits(*SLOW, str(tmp_path)), "today",
                         ((1, 101, "192.0.2.1", *FAST), (2, 102, "192.0.2.2", *SLOW),
                          (3, 0, "192.0.2.3", *FAST)), most_users=4)
    try:
        assert made.awaiting == {1, 2, 3} and made.state.max_registered == 4
        assert (made._bucket(101).burst, made._bucket(101).rate) == pace(*FAST)
        assert (made._bucket(102).burst, made._bucket(102).rate) == pace(*SLOW)
        control(made, sockets[3], {"op": "bind", "workers": [[3, 103, "192.0.2.3", *FAST]]})
        assert (made._bucket(103).burst, made._bucket(103).rate) == pace(*FAST)
    finally:
        made.selector.close()


def test_a_bucket_made_for_a_hello_before_the_bind_takes_the_workers_limits(tmp_path,
                                                                           sockets,
                                                                           monkeypatch):
    """A worker's HELLO may come before the supervisor names it, and is
    charged to a bucket of the running limits: a worker the retired
    spawner started after a reload that lowered them has its own pace from
    its bind on, and the tokens it spent stay spent.  (The bucket's clock
    stands still: at the fast pace's 20 a second, a slow machine's half
    second between the HELLO and the count refilled past the bound.)"""
    monkeypatch.setattr(flood, "TokenBucket",
                        functools.partial(flood.TokenBucket, clock=lambda: 100.0))
    made = broker.Broker(sockets[0], sockets[2], limits(*SLOW, str(tmp_path)), "today")
    try:
        early = made._bucket(101)
        assert early.take()                              # its HELLO
        control(made, sockets[3], {"op": "bind", "workers": [[1, 101, "192.0.2.1", *FAST]]})
        assert made._bucket(101) is early
        assert (early.burst, early.rate) == pace(*FAST)
        taken = sum(early.take() for _ in range(100))
        assert pace(*SLOW)[0] - 1 <= taken < 20          # 11 left, not a burst of 30
    finally:
        made.selector.close()


def test_what_a_link_may_hold_behind_its_scan_follows_its_workers_limits(tmp_path, sockets):
    """After a reload that lowered the limits, a client accepted before it,
    talking at its own pace while its scan waited, passed the bound on what
    it may send behind the scan, and the scan was answered 263 at once; a
    worker started after it may hold no more than its own allow."""
    made = broker.Broker(sockets[0], sockets[2], limits(*SLOW, str(tmp_path)), "today",
                         ((1, 101, "192.0.2.1", *FAST), (2, 102, "192.0.2.2", *SLOW)))
    try:
        def held(rate: float, burst: int) -> int:
            lines = burst + rate * broker.SCAN_WAIT_S
            return int(2 * lines * (protocol.MAX_LINE_BYTES + ipc.HEADER.size))
        old, new = (broker.Link(sock, 1000, pid) for sock, pid in ((sockets[0], 101),
                                                                   (sockets[1], 102)))
        assert made._held_limit(old) == held(*FAST)
        assert made._held_limit(new) == held(*SLOW)
    finally:
        made.selector.close()
