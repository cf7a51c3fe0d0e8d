"""The supervisor's accept loop when accept() fails for want of descriptors."""

from __future__ import annotations

import errno
import logging
import os
import socket
import time

import pytest

from forkchat import config, listeners, supervisor

pytestmark = pytest.mark.timeout(30)


class Starved:
    """A listening socket whose accept() fails with EMFILE while `starved`."""

    def __init__(self) -> None:
        self.real = socket.create_server(("127.0.0.1", 0))
        self.real.setblocking(False)
        self.starved = True

    def fileno(self) -> int:
        return self.real.fileno()

    def accept(self) -> tuple[socket.socket, tuple[str, int]]:
        if self.starved:
            raise OSError(errno.EMFILE, "Too many open files")
        return self.real.accept()

    def close(self) -> None:
        self.real.close()


@pytest.fixture
def boss():
    targets = supervisor.Targets(broker=lambda *args: None, worker=lambda *args: None)
    made = supervisor.Supervisor(config.Config(), targets)
    yield made
    made.broker_listener.close()
    made.selector.close()


def listen_on(boss, sock, monkeypatch) -> list[str]:
    """Make `sock` the supervisor's one watched listener; the addresses of
    the clients it admits (each closed at once), as they come."""
    bound = listeners.Bound(sock, config.Listener("127.0.0.1", 0))    # type: ignore[arg-type]
    boss.bound = [bound]
    boss._watch_listener(bound)
    admitted: list[str] = []
    monkeypatch.setattr(boss, "_admit", lambda conn, address, bound: (admitted.append(address),
                                                                       conn.close()))
    return admitted


def test_emfile_pauses_the_listener_logs_once_and_it_accepts_once_a_descriptor_frees(
        boss, caplog, monkeypatch):
    """The queued connection kept the listener readable: every turn of the
    loop failed again at once, at 100 % CPU, with an error line each."""
    sock = Starved()
    admitted = listen_on(boss, sock, monkeypatch)
    client = socket.create_connection(sock.real.getsockname())
    try:
        with caplog.at_level(logging.INFO, logger="forkchat.supervisor"):
            for _ in range(5):
                boss._turn(0)
            assert [r.getMessage() for r in caplog.records] == \
                ["accept failed: Too many open files; paused, retried every 0.5 s"]
            assert "accept" in boss.timers and admitted == []
            sock.starved = False
            boss.timers["accept"] = 0.0          # the pause is over
            boss._run_timers()
            boss._turn(1.0)
        assert admitted == ["127.0.0.1"]
        assert caplog.records[-1].getMessage() == "accepting connections again"
    finally:
        client.close()
        sock.close()


def test_a_listener_removed_by_a_reload_while_paused_is_not_watched_again(boss):
    sock = Starved()
    bound = listeners.Bound(sock, config.Listener("127.0.0.1", 0))    # type: ignore[arg-type]
    boss.bound = [bound]
    boss._watch_listener(bound)
    client = socket.create_connection(sock.real.getsockname())
    try:
        boss._turn(0)
        boss._unwatch_listener(bound)             # as a reload removing it does
        boss.bound.remove(bound)
        boss.on_accept_timer()
        with pytest.raises(KeyError):
            boss.selector.get_key(sock)
    finally:
        client.close()
        sock.close()


# -- a broker that cannot be replaced at once ----------------------------------------

class FakeProcess:
    """What children.start returns, for a child that is not really there."""

    def __init__(self) -> None:
        self.pid = 999_999_999
        self.sentinel, self.write_end = os.pipe()
        self.exitcode = None

    def close(self) -> None:
        pass


def test_a_broker_restart_the_kernel_refuses_is_retried_and_the_supervisor_goes_on(
        boss, caplog, monkeypatch):
    """children.start raising EAGAIN (RLIMIT_NPROC, TasksMax reached by the
    workers) in the restart escaped the loop: the supervisor died with a
    traceback and took every client with it."""
    def refused(*args):
        raise BlockingIOError(11, "Resource temporarily unavailable")
    monkeypatch.setattr(supervisor.children, "start", refused)
    monkeypatch.setattr(boss, "_heed_pending_stop", lambda: None)   # no signals wired
    dead = supervisor.Child("broker", 4242, None, -1)
    with caplog.at_level(logging.INFO, logger="forkchat.supervisor"):
        boss._broker_gone(dead, -9)
        assert "broker" in boss.timers
        assert "cannot start the broker: Resource temporarily unavailable" in \
            [r.getMessage() for r in caplog.records]
        started = FakeProcess()
        monkeypatch.setattr(supervisor.children, "start", lambda *args: started)
        boss.timers["broker"] = 0.0
        boss._run_timers()
    assert boss.broker_pid == started.pid and "broker" not in boss.timers
    boss.selector.unregister(started.sentinel)
    os.close(started.sentinel)
    os.close(started.write_end)
    assert boss.broker_control is not None
    boss.broker_control.close()


def test_while_no_broker_runs_the_workers_leaving_are_not_told_to_it(boss, caplog, monkeypatch):
    """A broker the kernel will not fork is retried every second; meanwhile
    each worker that ended (its clients give up after 30 s without one) was
    a 'cannot reach the broker' warning: the dead one's socket.  The next
    broker learns the workers alive when it starts."""
    control, dead_end = socket.socketpair()
    dead_end.close()
    boss.broker_control = control
    boss.broker_out = supervisor.ipc.FrameWriter(control, supervisor.ipc.CONTROL_QUEUE_BYTES)
    boss.broker_pid = 4242                       # gone: not among the children
    boss.timers["broker"] = time.monotonic() + supervisor.BROKER_RETRY_S
    try:
        with caplog.at_level(logging.INFO, logger="forkchat.supervisor"):
            for cid in range(1, 6):
                boss.admission.admitted("192.0.2.7")
                boss._worker_gone(supervisor.Child("worker", 50_000 + cid, None, -1,
                                                   "192.0.2.7", cid), 0)
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
        assert boss.admission.clients == 0
    finally:
        control.close()


def test_no_descriptor_for_a_new_spawner_socket_is_retried_not_raised(boss, monkeypatch):
    def no_descriptor(*args):
        raise OSError(errno.EMFILE, "Too many open files")
    monkeypatch.setattr(supervisor.socket, "socketpair", no_descriptor)
    assert boss.start_spawner() is False
    assert "spawner" in boss.timers


@pytest.mark.parametrize("code", [errno.ECONNABORTED, errno.EPROTO, errno.EPERM])
def test_a_connection_lost_before_accept_is_skipped_and_the_next_taken(boss, monkeypatch, code):
    """Such an error escaped the loop: one aborted connection ended the server."""
    sock = Starved()
    sock.starved = False
    errors = [OSError(code, os.strerror(code))]
    real_accept = sock.accept

    def accept():
        if errors:
            raise errors.pop()
        return real_accept()
    sock.accept = accept                                     # type: ignore[method-assign]
    admitted = listen_on(boss, sock, monkeypatch)
    client = socket.create_connection(sock.real.getsockname())
    try:
        boss._turn(1.0)
        assert admitted == ["127.0.0.1"] and "accept" not in boss.timers
    finally:
        client.close()
        sock.close()


# -- the kernel's limits below max_clients ------------------------------------------

@pytest.mark.parametrize("nofile, nproc, euid, expected", [
    (1024, 100_000, 1000, ["max_clients = 5000, but the descriptor limit (1024) leaves room "
                           "for about 1008 clients: raise LimitNOFILE= (ulimit -n) or lower "
                           "max_clients"]),
    (65536, 1000, 1000, ["max_clients = 5000, but the process limit (1000) leaves room for "
                         "about 997 clients: raise LimitNPROC= (ulimit -u) or lower "
                         "max_clients"]),
    (65536, 1000, 0, []),                   # root: no process limit applies
    (65536, -1, 1000, []),                  # RLIM_INFINITY
])
def test_the_kernel_limits_below_max_clients_are_said_at_start(
        caplog, monkeypatch, nofile, nproc, euid, expected):
    """At the descriptor limit new clients waited silently until their
    registration timed out, and nothing had told the operator why."""
    values = {supervisor.resource.RLIMIT_NOFILE: nofile, supervisor.resource.RLIMIT_NPROC: nproc}
    monkeypatch.setattr(supervisor.resource, "getrlimit", lambda kind: (values[kind],) * 2)
    monkeypatch.setattr(supervisor.os, "geteuid", lambda: euid)
    monkeypatch.setattr(supervisor, "PROC_CGROUP", "/nonexistent/cgroup")   # not this host's
    with caplog.at_level(logging.INFO, logger="forkchat.supervisor"):
        supervisor.warn_os_limits(config.Limits())
    assert [r.getMessage() for r in caplog.records] == expected


@pytest.mark.parametrize("listening, expected", [
    (1, []),
    (10, ["max_clients = 1000, but the descriptor limit (1024) leaves room for about 999 "
          "clients: raise LimitNOFILE= (ulimit -n) or lower max_clients"]),
])
def test_the_descriptor_limit_counts_the_supervisors_listeners(
        caplog, monkeypatch, listening, expected):
    """After a reload the supervisor holds a pidfd for each worker, as the
    broker holds a link, and a descriptor for each listener besides: with
    ten listeners it ran out before the broker, and the warning, which
    counted the broker's descriptors alone, had said nothing."""
    values = {supervisor.resource.RLIMIT_NOFILE: 1024, supervisor.resource.RLIMIT_NPROC: -1}
    monkeypatch.setattr(supervisor.resource, "getrlimit", lambda kind: (values[kind],) * 2)
    monkeypatch.setattr(supervisor, "PROC_CGROUP", "/nonexistent/cgroup")   # not this host's
    with caplog.at_level(logging.INFO, logger="forkchat.supervisor"):
        supervisor.warn_os_limits(config.Limits(max_clients=1000), listening)
    assert [r.getMessage() for r in caplog.records] == expected


def test_a_request_the_spawner_got_without_its_socket_is_refused_busy(boss):
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    client, server_side = socket.socketpair()
    client.settimeout(5)
    try:
        handle = supervisor.spawner.Handle(ours, 1234, [1])
        handle.request(supervisor.spawner.Request(12, server_side, "192.0.2.7", "irc", 1))
        boss.admission.admitted("192.0.2.7")
        theirs.send(b"L 12")
        boss._read_spawner(handle)
        assert client.recv(200) == \
            b"ERROR :Closing Link: 192.0.2.7 (Server is busy, try again later)\r\n"
        assert handle.requests == {} and boss.admission.clients == 0
    finally:
        for sock in (ours, theirs, client, server_side):
            sock.close()


def test_workers_that_cannot_be_forked_are_logged_once_and_the_recovery_with_a_count(
        boss, caplog):
    """At the process limit every connection failed its fork, and each put
    an error line in the log: a reconnecting crowd filled it."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    handle = supervisor.spawner.Handle(ours, 1234, [1])
    pairs = [socket.socketpair() for _ in range(4)]
    try:
        for cid, (_client, server_side) in enumerate(pairs, start=1):
            handle.request(supervisor.spawner.Request(cid, server_side, "192.0.2.7", "irc", 1))
            boss.admission.admitted("192.0.2.7")
        with caplog.at_level(logging.INFO, logger="forkchat.supervisor"):
            for cid in (1, 2, 3):
                boss.on_worker_failed(handle, [str(cid), "[Errno", "11]", "Resource",
                                               "temporarily", "unavailable"])
            boss.on_worker_started(handle, ["4", "999999999"])
        assert [r.getMessage() for r in caplog.records] == [
            "cannot start a worker for 192.0.2.7: [Errno 11] Resource temporarily "
            "unavailable; clients are refused 'busy' until one starts",
            "workers start again; 3 connections were refused meanwhile"]
        assert boss.admission.clients == 1
        for client, _server_side in pairs[:3]:    # refused by the supervisor, with its copy
            client.settimeout(5)
            assert client.recv(200) == \
                b"ERROR :Closing Link: 192.0.2.7 (Server is busy, try again later)\r\n"
            assert client.recv(200) == b""        # and closed
    finally:
        boss.children.clear()
        for sock in (ours, theirs, *(s for pair in pairs for s in pair)):
            sock.close()


# -- an orphan the supervisor has no descriptor to watch ---------------------------------

def test_a_dead_spawners_worker_without_a_pidfd_is_reaped_by_the_status_timer(
        boss, caplog, monkeypatch):
    """pidfd_open failing with EMFILE while adopting a dead spawner's
    workers escaped the loop: the supervisor died, and every client with it."""
    gate_r, gate_w = os.pipe()
    pid = os.fork()
    if pid == 0:                                  # the worker: exits when told
        os.close(gate_w)
        os.read(gate_r, 1)
        os._exit(0)
    os.close(gate_r)
    worker = supervisor.Child("worker", pid, None, -1, "192.0.2.7", 5, spawner=77)
    boss.children[pid] = worker
    boss.admission.admitted("192.0.2.7")

    def no_descriptor(pid):
        raise OSError(errno.EMFILE, "Too many open files")
    monkeypatch.setattr(supervisor.os, "pidfd_open", no_descriptor)
    try:
        with caplog.at_level(logging.INFO, logger="forkchat.supervisor"):
            boss._adopt(worker)
            boss._adopt(supervisor.Child("worker", 999_999_999, None, -1))  # a second: no line
        assert [r.getMessage() for r in caplog.records] == [
            "cannot watch the workers of a retired or dead spawner: Too many open files; "
            "their exits are checked every 5 s"]
        boss.on_status_timer()
        assert pid in boss.children                # still running, still counted
        os.write(gate_w, b"x")
        deadline = time.monotonic() + 10
        while pid in boss.children and time.monotonic() < deadline:
            time.sleep(0.01)                      # until it has exited: a zombie to reap
            boss.on_status_timer()
        assert pid not in boss.children and boss.admission.clients == 0
    finally:
        os.close(gate_w)
        boss.children.clear()
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def test_a_broker_fork_retried_every_second_is_logged_once_then_the_recovery(
        boss, caplog, monkeypatch):
    """At a process limit the restart of a dead broker (or of a spawner) is
    tried every second, and each failure was an error line: 3600 an hour."""
    def refused(*args):
        raise BlockingIOError(11, "Resource temporarily unavailable")
    monkeypatch.setattr(supervisor.children, "start", refused)
    monkeypatch.setattr(boss, "_heed_pending_stop", lambda: None)   # no signals wired
    with caplog.at_level(logging.INFO, logger="forkchat.supervisor"):
        boss._broker_gone(supervisor.Child("broker", 4242, None, -1), -9)
        for _ in range(3):
            boss.timers["broker"] = 0.0
            boss._run_timers()
        started = FakeProcess()
        monkeypatch.setattr(supervisor.children, "start", lambda *args: started)
        boss.timers["broker"] = 0.0
        boss._run_timers()
    lines = [r.getMessage() for r in caplog.records]
    assert lines.count("cannot start the broker: Resource temporarily unavailable") == 1
    assert lines[-1] == f"broker started (pid {started.pid}) after 4 failed forks"
    boss.selector.unregister(started.sentinel)
    os.close(started.sentinel)
    os.close(started.write_end)
    assert boss.broker_control is not None
    boss.broker_control.close()


def test_a_spawner_fork_retried_every_second_is_logged_once(boss, caplog, monkeypatch):
    def refused(*args):
        raise BlockingIOError(11, "Resource temporarily unavailable")
    monkeypatch.setattr(supervisor.children, "start", refused)
    with caplog.at_level(logging.INFO, logger="forkchat.supervisor"):
        for _ in range(3):
            boss.on_spawner_timer()
    assert [r.getMessage() for r in caplog.records] == [
        "cannot start a spawner: Resource temporarily unavailable"]
    assert "spawner" in boss.timers


def test_the_stop_reaps_the_workers_it_has_no_pidfd_for(boss):
    """An adopted worker without a pidfd wakes nothing when it exits: the
    stop waited the whole grace for it (3 s), then SIGKILLed a zombie and
    waited again, the exit it had long made never seen."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)                               # a worker that ends at once
    boss.children[pid] = supervisor.Child("worker", pid, None, -1, "192.0.2.7", 5)
    boss.admission.admitted("192.0.2.7")
    boss.stopping = True
    try:
        boss._wait_children("worker", time.monotonic() + 10.0)
        assert pid not in boss.children and boss.admission.clients == 0
    finally:
        if pid in boss.children:
            del boss.children[pid]
            os.waitpid(pid, 0)


def test_a_spawner_handle_holds_the_listeners_it_knows_by_id(boss, monkeypatch):
    """A spawner knows listeners by id(); one a reload removed, once freed,
    could lend its id() to a later Bound, whose connections the old spawner
    would then start with the wrong listener's TLS."""
    import gc
    import weakref

    class Forked:
        pid = 4242

    monkeypatch.setattr(boss, "_start", lambda *args: Forked())
    monkeypatch.setattr(boss, "_started", lambda *args: None)
    bound = listeners.bind(config.Listener(address="127.0.0.1", port=0))
    boss.bound = [bound]
    assert boss.start_spawner()
    handle = boss.spawners[Forked.pid]
    removed = weakref.ref(bound)
    boss.bound = []                         # a reload removed it
    bound.sock.close()
    del bound
    gc.collect()
    try:
        assert removed() is not None and handle.knows(id(removed()))
    finally:
        handle.sock.close()


def test_a_connection_no_spawner_took_before_a_stop_is_told_the_server_stops(boss):
    """It was told "Server is busy, try again later", and tried again, at
    a server going down; its worker, had it one, would say this."""
    client, server_side = socket.socketpair()
    client.settimeout(5)
    try:
        boss.stopping = True
        boss.admission.admitted("192.0.2.7")
        boss._hand_on([supervisor.spawner.Request(12, server_side, "192.0.2.7", "irc", 1)])
        assert client.recv(200) == b"ERROR :Closing Link: 192.0.2.7 (Server shutting down)\r\n"
        assert boss.admission.clients == 0
    finally:
        client.close()
        server_side.close()


class LastDescriptor(Starved):
    """A listener with one descriptor left: its first accept() takes it,
    every later one fails with EMFILE, whether a client waits or not."""

    def __init__(self) -> None:
        super().__init__()
        self.starved = False

    def accept(self) -> tuple[socket.socket, tuple[str, int]]:
        taken = super().accept()
        self.starved = True
        return taken


def test_the_connection_taken_with_the_last_descriptor_is_no_failure(boss, caplog, monkeypatch):
    """accept() takes a descriptor before it looks at the queue: the loop's
    next accept() after the last waiting client failed with EMFILE on an
    empty queue, and the listener was paused with an 'accept failed' line
    for nothing.  With nothing queued it stays watched, without a word."""
    sock = LastDescriptor()
    admitted = listen_on(boss, sock, monkeypatch)
    client = socket.create_connection(sock.real.getsockname())
    try:
        with caplog.at_level(logging.INFO, logger="forkchat.supervisor"):
            boss._turn(1.0)
        assert admitted == ["127.0.0.1"]
        assert [r.getMessage() for r in caplog.records] == []
        assert "accept" not in boss.timers and boss.selector.get_key(sock) is not None
    finally:
        client.close()
        sock.close()
