"""What the supervisor tells a restarted broker about connections whose
workers had not started when it was forked.

A broker started while connections wait for their workers gets them with
pid 0 and awaits each (its "bind" comes once the spawner reports the
worker).  One refused instead, or lost, never binds: the broker must hear
that it is gone, or it holds every client's commands for its whole
recovery wait and then warns of a worker that did not re-register.
"""

from __future__ import annotations

import contextlib
import os
import socket

import pytest

from forkchat import config, ipc, supervisor
from forkchat.supervisor import spawner

from tests.support.processes import idle_child


class Boss:
    """A Supervisor with one spawner handle, its requests, and a broker it
    started (not forked: the test holds the broker's end)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cids: tuple[int, ...]) -> None:
        targets = supervisor.Targets(broker=lambda *args: None, worker=lambda *args: None)
        self.boss = supervisor.Supervisor(config.Config(), targets)
        self.ours, self.theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.ours.setblocking(False)
        self.conns = [socket.socketpair() for _ in cids]
        self.handle = spawner.Handle(self.ours, 1234, [1])
        self.boss.spawners[1234] = self.handle
        self.boss.spawner = self.handle
        for cid, (_client, server_side) in zip(cids, self.conns):
            self.boss.admission.admitted(f"192.0.2.{cid}")
            self.handle.request(spawner.Request(cid, server_side, f"192.0.2.{cid}", "irc", 1))
        self.expected: tuple = ()
        self.broker_end: socket.socket | None = None

        def fork(kind, target, args, *rest):
            self.expected = args[-1]
            self.broker_end = socket.socket(fileno=os.dup(args[1].fileno()))
            child = supervisor.Child("broker", 4242, None, -1)
            self.boss.children[child.pid] = child
            return child
        monkeypatch.setattr(self.boss, "_start", fork)
        assert self.boss.spawn_broker()

    def report(self, *reports: bytes) -> None:
        for report in reports:
            self.theirs.send(report)
        self.boss._read_spawner(self.handle)

    def told(self) -> list[dict]:
        assert self.broker_end is not None
        self.broker_end.setblocking(False)
        try:
            data = self.broker_end.recv(65536)
        except BlockingIOError:
            return []
        return [ipc.decode_json(payload) for _kind, payload in ipc.FrameReader().feed(data)]

    def close(self) -> None:
        self.boss.broker_listener.close()
        self.boss.selector.close()
        for sock in [self.ours, self.theirs, self.broker_end, self.boss.broker_control,
                     *(s for pair in self.conns for s in pair)]:
            if sock is not None:
                sock.close()


@pytest.fixture
def made(monkeypatch):
    boss = Boss(monkeypatch, (12, 13, 14, 15))
    yield boss
    boss.close()


def test_a_connection_the_restarted_broker_awaits_that_gets_no_worker_is_named_gone(made):
    assert made.expected == tuple((cid, 0, f"192.0.2.{cid}") for cid in (12, 13, 14, 15))
    made.report(b"S 12 5012", b"F 13 [Errno 11] Resource temporarily unavailable",
                b"L 14")
    assert made.told() == [{"op": "bind", "workers": [[12, 5012, "192.0.2.12"]]},
                           {"op": "gone", "cid": 13, "pid": 0},
                           {"op": "gone", "cid": 14, "pid": 0}]
    # the spawner died and none replaces it yet: the last one is refused too
    request = made.handle.requests.pop(15)
    made.boss.spawner = None
    made.boss._hand_on([request])
    assert made.told() == [{"op": "gone", "cid": 15, "pid": 0}]
    assert made.boss.admission.clients == 1


def test_a_broker_not_awaiting_a_refused_connection_is_not_told(monkeypatch):
    """A broker forked before the connection was accepted never heard of it."""
    made = Boss(monkeypatch, ())
    try:
        made.boss.admission.admitted("192.0.2.16")
        conn = socket.socketpair()
        made.conns.append(conn)
        made.handle.request(spawner.Request(16, conn[1], "192.0.2.16", "irc", 1))
        made.report(b"F 16 [Errno 11] Resource temporarily unavailable")
        assert made.told() == []
        assert made.boss.admission.clients == 0
    finally:
        made.close()


def test_the_word_ends_the_brokers_wait_for_that_connection(tmp_path):
    """What the broker does with it: the connection is awaited no more, and
    with none left its recovery ends at once, the held frames handled."""
    from tests.unit.test_broker_cid import Harness

    made = Harness(tmp_path, expected=((3, 0, "192.0.2.3"), (4, 0, "192.0.2.4")))
    try:
        made.supervisor_end.sendall(ipc.encode_json(ipc.Kind.CONTROL,
                                                    {"op": "gone", "cid": 3, "pid": 0}))
        made.broker.on_control(1)
        assert made.broker.awaiting == {4}
        made.supervisor_end.sendall(ipc.encode_json(ipc.Kind.CONTROL,
                                                    {"op": "gone", "cid": 4, "pid": 0}))
        made.broker.on_control(1)
        assert made.broker.awaiting == set()
    finally:
        made.close()


# -- a worker whose spawner died before reporting it --------------------------------

def both_spawners_die(made: "Boss", monkeypatch, worker: int) -> None:
    """Settle the deaths of the retired spawner (1111), then the current one
    (1234), in one turn; `worker` is the only child no report named."""
    monkeypatch.setattr(supervisor.children, "unknown_children",
                        lambda known: [pid for pid in [worker] if pid not in known])
    monkeypatch.setattr(made.boss, "start_spawner", lambda: False)
    monkeypatch.setattr(made.boss, "_count_death", lambda kind: None)
    monkeypatch.setattr(made.boss, "_heed_pending_stop", lambda: None)
    made.boss._spawner_gone(supervisor.Child("spawner", 1111, None, -1), -9)
    made.boss._spawner_gone(supervisor.Child("spawner", 1234, None, -1), -9)


def a_dead_retired_spawner(made: "Boss") -> spawner.Handle:
    """A retired spawner (1111) beside Boss's own, its end already gone."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    retired = spawner.Handle(ours, 1111, [1])
    retired.retired = True
    made.boss.spawners[1111] = retired
    theirs.close()
    return retired


def test_two_spawners_dying_together_leave_the_in_flight_worker_to_its_connection(
        monkeypatch):
    """The retired spawner's death is settled first and takes the current
    one's unreported worker for an orphan of its own (no connection); then
    the current one's in-flight connection looked unstarted and went to
    another spawner: two workers read one client.  The worker is found by
    the connection it holds."""
    made = Boss(monkeypatch, (7,))
    worker = 0
    try:
        made.boss.broker_out.queue(b"")    # (the broker of Boss is running)
        made.handle.flush()                # cid 7 sent: the spawner may have forked it
        a_dead_retired_spawner(made)
        made.theirs.close()                # both spawners are dead
        worker = idle_child()
        both_spawners_die(made, monkeypatch, worker)
        assert made.boss.children[worker].cid == 7
        assert made.told() == [{"op": "bind", "workers": [[7, worker, "192.0.2.7"]]}]
        assert made.boss.admission.clients == 1
    finally:
        if worker:
            os.kill(worker, 9)
            os.waitpid(worker, 0)
        made.close()


def test_a_spawner_dying_with_an_unforked_connection_leaves_another_ones_worker_alone(
        monkeypatch):
    """Both spawners died together, the retired one with a connection sent
    and never forked: settled first, it found one orphan, the current one's
    unreported worker, took it for its own connection's, and the current
    one's connection then went to another spawner: two workers read one
    client.  An orphan holding another spawner's connection is that one's."""
    made = Boss(monkeypatch, (7,))
    worker = 0
    late: tuple[socket.socket, ...] = ()
    try:
        made.boss.broker_out.queue(b"")    # (the broker of Boss is running)
        made.handle.flush()                # cid 7 sent: the spawner forked it
        retired = a_dead_retired_spawner(made)
        made.theirs.close()                # both spawners are dead
        worker = idle_child()
        late = socket.socketpair()         # made after the fork: cid 7's worker lacks it
        made.boss.admission.admitted("192.0.2.8")
        request = spawner.Request(8, late[1], "192.0.2.8", "irc", 1)
        retired.request(request)
        request.sent = True                # sent; its spawner died before forking it
        both_spawners_die(made, monkeypatch, worker)
        assert made.boss.children[worker].cid == 7
        assert made.told() == [{"op": "bind", "workers": [[7, worker, "192.0.2.7"]]}]
        late[0].settimeout(5)
        assert b"Server is busy" in late[0].recv(4096)    # no spawner: refused, not lost
        assert made.boss.admission.clients == 1
    finally:
        if worker:
            os.kill(worker, 9)
            os.waitpid(worker, 0)
        for sock in late:
            sock.close()
        made.close()


def test_a_retired_spawner_settled_first_leaves_the_others_reported_worker_to_it(
        monkeypatch, caplog):
    """Two spawners exit in one turn (two reloads close together: each
    retired one exits at once), the second's start report for its worker
    still unread.  Settling the first took that worker, now the
    supervisor's child, for an unreported orphan of its own (cid 0,
    watched); the report then made a second entry and a second watch for
    it, and its exit was settled twice: logged as 'unreported', its
    address's slot never given back, then a KeyError out of the loop."""
    made = Boss(monkeypatch, (7,))
    worker = 0
    try:
        made.boss.broker_out.queue(b"")    # (the broker of Boss is running)
        made.handle.flush()                # cid 7 sent, forked and reported below
        a_dead_retired_spawner(made)
        worker = idle_child()
        made.theirs.send(f"S 7 {worker}".encode())
        made.theirs.close()                # both spawners have exited, unread
        monkeypatch.setattr(supervisor.children, "unknown_children",
                            lambda known: [pid for pid in [worker] if pid not in known])
        monkeypatch.setattr(made.boss, "_heed_pending_stop", lambda: None)
        made.boss.stopping = True          # (no spawner to start after the second)
        made.boss._spawner_gone(supervisor.Child("spawner", 1111, None, -1), 0)
        made.boss._spawner_gone(supervisor.Child("spawner", 1234, None, -1), 0)
        assert made.boss.children[worker].cid == 7
        assert made.told() == [{"op": "bind", "workers": [[7, worker, "192.0.2.7"]]}]
        os.kill(worker, 9)
        with caplog.at_level("DEBUG", logger="forkchat.supervisor"):
            while worker in made.boss.children:
                events = made.boss.selector.select(timeout=5)
                assert events, "the worker's exit was not seen"
                for key, mask in events:
                    key.data(mask)
            for key, mask in made.boss.selector.select(timeout=0.1):
                key.data(mask)             # a second watch on it would fire too
        worker = 0
        assert made.boss.admission.clients == 0
        exits = [r.getMessage() for r in caplog.records if "worker" in r.getMessage()]
        assert exits == ["worker for conn 7 was killed by SIGKILL (perhaps out of memory?)"]
    finally:
        if worker:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(worker, 9)
                os.waitpid(worker, 0)
        made.close()
