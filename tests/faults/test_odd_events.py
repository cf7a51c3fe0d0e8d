"""Events a production host produces that no client causes: a standard error
whose reader went away, processes stopped and continued, bursts of signals."""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import psutil

from forkchat import procstats, signals
from tests.conftest import TEST_LIMITS
from tests.support.ircclient import IrcTestClient
from tests.support.server import LISTEN_RE, worker_pid


def _start_with_stderr_pipe(tmp: str) -> tuple[subprocess.Popen[bytes], int]:
    """A server whose standard error is a pipe read up to its first listener.

    PYTHONUNBUFFERED is left out, as systemd starts a service: sys.stderr
    then keeps in its buffer what it failed to write."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    config_path = os.path.join(tmp, "forkchat.toml")
    with open(config_path, "w") as handle:
        handle.write(TEST_LIMITS)
    os.chmod(config_path, 0o644)           # read again by a reload, as nobody
    command = [sys.executable, "-m", "forkchat", "-c", config_path, "-l", "127.0.0.1:0",
               "--log-level", "debug", "--state-dir", os.path.join(tmp, "state")]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env, start_new_session=True)
    assert proc.stderr is not None
    for raw in proc.stderr:
        match = LISTEN_RE.search(raw.decode("utf-8", "replace"))
        if match:
            return proc, int(match.group(2))
    proc.wait(5)
    raise AssertionError(f"server exited {proc.returncode} before listening")


def test_a_standard_error_whose_reader_is_gone_is_no_failure():
    """journald restarting (or a `| tee` killed) leaves standard error a pipe
    with no reader: every process logs on into nothing, serves its clients,
    and a stop exits 0.  sys.stderr kept the failed lines in its buffer and
    its flush at exit failed, so the supervisor exited 120, a failed unit."""
    with tempfile.TemporaryDirectory(prefix="forkchat-test-") as tmp:
        os.chmod(tmp, 0o755)       # the state directory of a server that drops to nobody
        proc, port = _start_with_stderr_pipe(tmp)
        try:
            assert proc.stderr is not None
            proc.stderr.close()          # the reader goes away
            alice, bob = IrcTestClient(port), IrcTestClient(port)
            alice.register("alice")
            bob.register("bob")
            alice.join("#r")
            bob.join("#r")
            for index in range(20):      # lines for every process to fail on
                bob.send(f"PRIVMSG #r :{index}")
                assert alice.expect("PRIVMSG").params == ["#r", str(index)]
            bob.send("QUIT :bye")
            bob.expect_closed()
            os.kill(proc.pid, signal.SIGHUP)
            carol = IrcTestClient(port)
            carol.register("carol")
            alice.close()
            carol.close()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def test_a_worker_stopped_past_its_ping_deadline_pings_before_it_drops(make_server):
    """A worker stopped (SIGSTOP, a paused VM) past ping_interval plus
    ping_timeout wakes with its PING timer long due: it sends the PING it
    never could and waits ping_timeout for the answer.  It dropped the idle
    client at once, "Ping timeout", a client that was never asked."""
    # 3 s each, not 2: the test's steps before the stop, and its PONG after, must not
    # outlast them
    server = make_server(config_text=TEST_LIMITS + "ping_interval = 3\nping_timeout = 3\n")
    alice = IrcTestClient(server.port)
    alice.register("alice")
    pid = worker_pid(server, "alice")
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(6.5)                   # the event itself: past 3 s + 3 s
    finally:
        os.kill(pid, signal.SIGCONT)
    ping = alice.expect(lambda m: m.command in ("PING", "ERROR"))
    assert ping.command == "PING", ping
    alice.send(f"PONG :{ping.params[0]}")
    alice.sync("after")                    # still served, past the old deadline
    alice.close()


def test_signals_that_waited_are_taken_once_each():
    """Each delivery leaves a byte on the wakeup socket; those that waited
    while the loop was busy are one event, not one each."""
    read_end, write_end = signals.install([signal.SIGUSR2])
    try:
        for _ in range(10):
            os.kill(os.getpid(), signal.SIGUSR2)     # delivered before kill returns
        os.kill(os.getpid(), signal.SIGUSR2)
        assert signals.received(read_end) == bytes([signal.SIGUSR2])
        assert signals.received(read_end) == b""
    finally:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGUSR2, signal.SIG_DFL)
        read_end.close()
        write_end.close()


def test_a_burst_of_sighup_is_a_reload_or_two_and_drops_no_connection(make_server):
    """100 SIGHUPs at once (a loop in a deploy script) while clients connect:
    every connection is served, and the burst is a few reloads (those that
    waited during one are taken together), not one per signal: each reload
    forks a spawner, and 100 in a row made some 50 of them."""
    server = make_server()
    mark = server.log_length()
    waiting = []
    for index in range(10):
        client = IrcTestClient(server.port, timeout=15)
        client.send(f"NICK n{index}\r\nUSER n 0 * :n")
        waiting.append(client)
        if index == 4:
            for _ in range(100):
                os.kill(server.pid, signal.SIGHUP)
    for client in waiting:
        client.expect("001", 15)
    os.kill(server.pid, signal.SIGUSR1)   # its report comes after the burst's reloads
    server.wait_for_text("status:", start=mark)
    last = IrcTestClient(server.port)
    last.register("last")
    reloads = server.log_text().splitlines()[mark:]
    assert 1 <= sum("configuration reloaded" in line for line in reloads) <= 20
    for client in [*waiting, last]:
        client.close()


def _no_proc_stat(*args, **kwargs):
    raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/proc/stat")


def test_a_unit_with_proc_subset_pid_still_counts_its_processes(monkeypatch):
    """systemd's ProcSubset=pid (a hardened unit) leaves /proc/PID but no
    /proc/stat, which psutil needs to find children and start times: the
    report said "processes 0" and "total rss 0.0 MiB", STATS u "Server Up
    0 days 0:00:00"."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        monkeypatch.setattr(psutil.Process, "children", _no_proc_stat)
        monkeypatch.setattr(psutil.Process, "create_time", _no_proc_stat)
        summary = procstats.summary(os.getpid())
        assert summary["processes"] >= 2, summary
        assert summary["total"]["rss"] > 0
        started = psutil.Process(child.pid)     # the uptime of a process known to run
        monkeypatch.undo()
        real = time.time() - started.create_time()
        monkeypatch.setattr(psutil.Process, "create_time", _no_proc_stat)
        assert abs(procstats.uptime(child.pid, time.time()) - real) < 1.0
    finally:
        child.stdin.close()
        child.wait(10)


def test_without_proc_the_report_says_so_instead_of_zeros(monkeypatch):
    def gone(pid):
        raise psutil.NoSuchProcess(pid)
    monkeypatch.setattr(procstats.psutil, "Process", gone)
    assert procstats.report_lines(procstats.summary(os.getpid())) == \
        ["processes and memory not readable (no /proc)"]


def test_without_proc_the_census_has_no_total_rather_than_zero(monkeypatch):
    """STATUS= (systemctl status) said "0 MiB" when no process could be
    read; a pass that cannot read even its own process has no figure."""
    census = procstats.PssCensus()
    census.start([os.getpid()])
    assert census.step() is True and census.total

    def gone(pid):
        raise psutil.NoSuchProcess(pid)
    monkeypatch.setattr(procstats.psutil, "Process", gone)
    census.start([os.getpid(), os.getppid()])
    assert census.step() is True and census.total is None


def test_a_signal_that_finds_the_wakeup_socket_full_is_not_lost(capfd):
    """The socketpair holds some 270 one-byte writes: a storm of signals
    (SIGCHLD of a mass disconnect, a SIGHUP loop) filled it before the
    loop read it, and a SIGTERM then had its byte dropped, with Python's
    "Exception ignored" lines on standard error."""
    read_end, write_end = signals.install([signal.SIGUSR2])
    try:
        try:
            while True:
                write_end.send(b"\0")
        except BlockingIOError:
            pass                                     # as full as a storm leaves it
        os.kill(os.getpid(), signal.SIGUSR2)
        taken = b""
        while chunk := signals.received(read_end):
            taken += chunk
        assert signal.SIGUSR2 in taken
        assert "wakeup fd" not in capfd.readouterr().err
    finally:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGUSR2, signal.SIG_DFL)
        read_end.close()
        write_end.close()


def test_a_worker_stopped_past_the_registration_timeout_lets_the_client_finish(make_server):
    """A worker stopped (SIGSTOP, a paused VM) past registration_timeout
    wakes with its registration timer long due: the stopped time is not
    the client's, and it may still register.  It was dropped at once on
    resume, "Registration timed out", even with its USER, sent while the
    worker was stopped, read in the same wake."""
    # 3 s, not 1: the test's own steps before the stop must not outlast it
    server = make_server(config_text=TEST_LIMITS + "registration_timeout = 3\n")
    client = IrcTestClient(server.port)
    client.send("NICK latecomer")
    line = server.wait_for_text("from 127.0.0.1 (irc)")
    pid = int(re.search(r"worker\[(\d+)\]", line).group(1))
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(5.5)                   # the event itself: past 3 s, and late by 2.5 s
        client.send("USER late 0 * :Late")
    finally:
        os.kill(pid, signal.SIGCONT)
    welcome = client.expect(lambda m: m.command in ("001", "ERROR"))
    assert welcome.command == "001", welcome
    client.close()


class _FullWakeupSocket:
    """A wakeup socket found full: a signal comes while it is drained, its
    byte dropped (the socket is full), only the handler's note left."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.chunks = [bytes([signal.SIGCHLD]) * 270]

    def recv(self, size: int) -> bytes:
        if not self.chunks:
            raise BlockingIOError(errno.EAGAIN, "empty")
        signals._note(self.signum, None)    # the handler, run as the drain begins
        return self.chunks.pop()[:size]


def test_a_signal_noted_while_a_full_wakeup_socket_is_drained_is_taken_now(monkeypatch):
    """The drain empties the socket: a SIGTERM whose byte it had dropped
    must come out of this call, as nothing will wake the loop for it.  The
    notes were taken before the drain, and such a SIGTERM waited for the
    next signal, however long that was (a stop then waited for systemd's
    timeout and its SIGKILL)."""
    monkeypatch.setattr(signals, "_noted", [])
    wakeup: Any = _FullWakeupSocket(signal.SIGTERM)
    assert signal.SIGTERM in signals.received(wakeup)


def test_a_sighup_while_the_server_stops_reloads_nothing(make_server):
    """The stop reads signals while it waits for its workers: a SIGHUP
    then (the terminal closed after Ctrl+C, a log rotation's kill -HUP)
    ran a whole reload, a new spawner forked for no one, "configuration
    reloaded" in the middle of the stop, RELOADING=1 after STOPPING=1."""
    server = make_server()
    bob = IrcTestClient(server.port)
    bob.register("bob")
    slow = worker_pid(server, "bob")
    os.kill(slow, signal.SIGSTOP)         # the stop waits its grace for this one
    mark = server.log_length()
    server.signal(signal.SIGTERM)
    server.wait_for_text("shutting down", start=mark)
    server.signal(signal.SIGHUP)
    server.wait_for_text("SIGHUP: the server is stopping, nothing reloaded", start=mark)
    assert server.proc is not None
    assert server.proc.wait(15) == 0
    log = "\n".join(server.log_text().splitlines()[mark:])
    assert "configuration reloaded" not in log, log
    assert "spawner started" not in log, log
    bob.close()
