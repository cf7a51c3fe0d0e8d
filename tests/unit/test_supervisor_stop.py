"""A stop in a burst of connections: the workers the spawner reports after
the stop signalled every worker are told as the others were, not left to
be killed at the end of the grace without a word to their clients."""

from __future__ import annotations

import os
import select
import selectors
import signal
import socket
import time

import pytest

from forkchat import config, listeners, supervisor
from forkchat.supervisor import spawner

from tests.support.processes import idle_child


def ended_by(pid: int, timeout: float = 10.0) -> int | None:
    """The signal that ended `pid`, or None if it still runs after `timeout`."""
    pidfd = os.pidfd_open(pid)
    try:
        if not select.select([pidfd], [], [], timeout)[0]:
            return None
    finally:
        os.close(pidfd)
    _pid, status = os.waitpid(pid, 0)
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0


def test_a_worker_reported_after_the_stop_signalled_the_workers_gets_the_same_signal():
    targets = supervisor.Targets(broker=lambda *args: None, worker=lambda *args: None)
    boss = supervisor.Supervisor(config.Config(), targets)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    handle = spawner.Handle(ours, 1234, [1])
    boss.spawners[1234] = handle
    conns = [socket.socketpair() for _ in range(2)]
    workers = []
    try:
        for cid, (_client, server_side) in zip((12, 13), conns):
            boss.admission.admitted("192.0.2.1")
            handle.request(spawner.Request(cid, server_side, "192.0.2.1", "irc", 1))
        boss.stopping = True
        boss._signal_children("worker", signal.SIGTERM)     # none known yet
        workers.append(idle_child())
        theirs.send(f"S 12 {workers[-1]}".encode())
        boss._read_spawner(handle)
        assert ended_by(workers[-1]) == signal.SIGTERM
        boss._signal_children("worker", signal.SIGKILL, supervisor.STOP_GRACE_S)
        workers.append(idle_child())
        theirs.send(f"S 13 {workers[-1]}".encode())
        boss._read_spawner(handle)
        assert ended_by(workers[-1]) == signal.SIGKILL
        assert boss.killed[workers[-1]] == supervisor.STOP_GRACE_S   # not logged as a crash
        workers.clear()
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        boss.broker_listener.close()
        boss.selector.close()
        for sock in [ours, theirs, *(s for pair in conns for s in pair)]:
            sock.close()


@pytest.mark.parametrize("report", [
    b"L 12",                        # the spawner received no socket
    b"F 12 [Errno 11] Resource temporarily unavailable",   # its own fork failed
])
def test_a_connection_the_spawner_could_not_serve_at_a_stop_is_told_the_server_stops(report):
    """A connection the spawner got without its socket, or one the kernel
    would not pass to it, or its own fork failure (EAGAIN at the process
    limit), during the stop's flush of the spawner's queue was told 'Server
    is busy, try again later', where the rest of a stop's clients are told
    'Server shutting down': the spawner cannot know of the stop."""
    targets = supervisor.Targets(broker=lambda *args: None, worker=lambda *args: None)
    boss = supervisor.Supervisor(config.Config(), targets)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    handle = spawner.Handle(ours, 1234, [1])
    boss.spawners[1234] = handle
    client, server_side = socket.socketpair()
    try:
        boss.admission.admitted("192.0.2.1")
        handle.request(spawner.Request(12, server_side, "192.0.2.1", "irc", 1))
        boss.stopping = True
        theirs.send(report)
        boss._read_spawner(handle)
        client.settimeout(5)
        assert client.recv(4096) == \
            b"ERROR :Closing Link: 192.0.2.1 (Server shutting down)\r\n"
        assert boss.admission.clients == 0 and handle.requests == {}
    finally:
        boss.broker_listener.close()
        boss.selector.close()
        for sock in [ours, theirs, client, server_side]:
            sock.close()


def test_the_stop_waits_its_grace_for_the_workers_a_spawner_has_yet_to_report():
    """The workers' grace ended as soon as the workers known had stopped,
    while the spawner still forked the connections it was sent: those it
    reported next were SIGKILLed at once, their clients never told 'Server
    shutting down'.  A worker asked for is waited for as one reported."""
    targets = supervisor.Targets(broker=lambda *args: None, worker=lambda *args: None)
    boss = supervisor.Supervisor(config.Config(), targets)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    handle = spawner.Handle(ours, 1234, [1])
    boss.spawners[1234] = handle
    boss.selector.register(ours, selectors.EVENT_READ,
                           lambda mask: boss.on_spawner(handle, mask))
    client, server_side = socket.socketpair()
    workers: list[int] = []
    ended: dict[int, int] = {}

    def report_worker() -> None:      # the spawner forked it, and says so
        workers.append(idle_child())
        theirs.send(f"S 12 {workers[-1]}".encode())

    real_turn = boss._turn

    def turn(timeout: float | None) -> None:
        """The spawner's side of the stop: report the worker, then its end."""
        if not workers:
            report_worker()
        elif not ended:
            pid, status = os.waitpid(workers[0], os.WNOHANG)
            if pid:
                ended[pid] = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
                theirs.send(f"X {pid} {-ended[pid]}".encode())
        real_turn(min(timeout or 0.05, 0.05))

    try:
        boss.admission.admitted("192.0.2.1")
        handle.request(spawner.Request(12, server_side, "192.0.2.1", "irc", 1))
        handle.flush()                        # sent: the spawner is forking it
        boss._turn = turn                     # type: ignore[method-assign]
        boss.stopping = True
        boss._signal_children("worker", signal.SIGTERM)     # none known yet
        boss._wait_children("worker", time.monotonic() + supervisor.STOP_GRACE_S)
        boss._signal_children("worker", signal.SIGKILL, supervisor.STOP_GRACE_S)
        if not workers:                       # reported after the grace
            report_worker()
            boss._read_spawner(handle)
        if workers[0] not in ended:
            ended[workers[0]] = ended_by(workers[0]) or 0
        assert ended[workers[0]] == signal.SIGTERM, \
            "the worker was killed without a word to its client"
        assert 12 not in handle.requests and boss.children == {}
    finally:
        for pid in workers:
            if pid not in ended:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        boss.broker_listener.close()
        boss.selector.close()
        for sock in [ours, theirs, client, server_side]:
            sock.close()


def test_a_stop_refuses_what_waits_in_its_own_listen_queue_and_leaves_systemds():
    """Connections not yet accepted at a stop were reset as the listener
    closed.  Those of a listener the server bound are told it stops; a
    socket systemd passed keeps its queue, which systemd holds for the next
    start."""
    targets = supervisor.Targets(broker=lambda *args: None, worker=lambda *args: None)
    own = listeners.bind(config.Listener(address="127.0.0.1", port=0))
    passed = socket.socket()
    passed.bind(("127.0.0.1", 0))
    passed.listen(8)
    adopted = listeners.adopt(passed.detach(), config.Listener())
    boss = supervisor.Supervisor(config.Config(), targets, bound=[own, adopted])
    clients = [socket.create_connection(("127.0.0.1", bound.port)) for bound in (own, adopted)]
    try:
        boss._refuse_queued()
        clients[0].settimeout(5)
        assert clients[0].recv(4096) == \
            b"ERROR :Closing Link: 127.0.0.1 (Server shutting down)\r\n"
        assert clients[0].recv(4096) == b""
        kept, _addr = adopted.sock.accept()            # still queued for the next start
        kept.close()
    finally:
        boss.broker_listener.close()
        boss.selector.close()
        for sock in [own.sock, adopted.sock, *clients]:
            sock.close()


def test_a_stop_refuses_a_bounded_number_of_waiting_connections(monkeypatch):
    """A stop in a flood stays quick: past STOP_REFUSALS (or STOP_REFUSALS_S)
    the rest are left to the listener's close."""
    monkeypatch.setattr(supervisor, "STOP_REFUSALS", 2)
    targets = supervisor.Targets(broker=lambda *args: None, worker=lambda *args: None)
    own = listeners.bind(config.Listener(address="127.0.0.1", port=0))
    boss = supervisor.Supervisor(config.Config(), targets, bound=[own])
    clients = [socket.create_connection(("127.0.0.1", own.port)) for _ in range(3)]
    try:
        boss._refuse_queued()
        left, _addr = own.sock.accept()                # the third still waits
        left.close()
        for client in clients[:2]:
            client.settimeout(5)
            assert b"(Server shutting down)" in client.recv(4096)
    finally:
        boss.broker_listener.close()
        boss.selector.close()
        for sock in [own.sock, *clients]:
            sock.close()
