"""SIGTERM and SIGINT: every client told, exit 0, nothing left behind."""

import signal
import time

import psutil
import pytest

from tests.support.ircclient import IrcTestClient
from tests.support.server import ServerProcess


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_graceful_stop(signum):
    server = ServerProcess(config_text="").start()
    try:
        clients = [IrcTestClient(server.port) for _ in range(3)]
        for index, client in enumerate(clients):
            client.register(f"user{index}")
        kids = server.descendants()
        started = time.monotonic()
        server.signal(signum)
        for client in clients:
            closing = client.expect_closed(timeout=5)
            assert closing[-1].command == "ERROR"
            assert "Server shutting down" in closing[-1].params[0]
        assert server.proc.wait(5) == 0
        assert time.monotonic() - started < 5
        gone, alive = psutil.wait_procs(kids, timeout=1)
        assert not alive
    finally:
        server.stop()


def test_port_in_use_is_one_sentence_and_exit_1(server):
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-m", "forkchat", "-l", f"127.0.0.1:{server.port}"],
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 1
    assert "cannot listen on 127.0.0.1" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_low_port_without_the_privilege_says_what_it_needs(tmp_path):
    """A start as an ordinary user on port 194 said only 'Permission
    denied', which reads as a file's mode.  Run as root here, the server is
    started without capabilities (setpriv), which is what an ordinary user has."""
    import os
    import shutil
    import subprocess
    import sys
    without = [] if os.geteuid() else [shutil.which("setpriv") or "setpriv",
                                        "--inh-caps=-all", "--bounding-set=-all"]
    result = subprocess.run([*without, sys.executable, "-m", "forkchat", "-l", "127.0.0.1:194",
                             "--state-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=20)
    assert (result.returncode, result.stderr) == (1, (
        "forkchat-server: cannot listen on 127.0.0.1:194: Permission denied (a port below "
        "1024 needs root, or CAP_NET_BIND_SERVICE: see PRIVILEGES in forkchat-server(8))\n"))


def test_a_worker_killed_by_the_stop_is_not_reported_as_a_crash(make_server):
    """A worker that outlives the grace time is the supervisor's doing: a
    warning that says so, not an out-of-memory guess at ERROR."""
    import os

    from tests.support.server import worker_pid
    # The grace time lowered from 3 s (a module constant) in the server.
    server = make_server(prelude="from forkchat import supervisor\nsupervisor.STOP_GRACE_S = 1.0")
    stuck = IrcTestClient(server.port)
    stuck.register("stuck")
    os.kill(worker_pid(server, "stuck"), signal.SIGSTOP)   # deaf to SIGTERM
    server.signal(signal.SIGTERM)
    assert server.proc.wait(15) == 0
    log = server.log_text()
    killed = [line for line in log.splitlines() if "worker for conn 1 " in line]
    assert len(killed) == 1, log
    assert " WARNING worker for conn 1 did not stop in 1 s; killed" in killed[0], log
    assert "perhaps out of memory" not in log, log
    stuck.close()


def read_to_end(sock, timeout: float = 10.0) -> bytes:
    """What the server sent before it closed (a reset ends it too)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_connections_still_in_the_listen_queue_are_told_the_server_stops(make_server):
    """Connections the supervisor had not accepted yet when it stopped (a
    stop in a burst of connections) were reset as the listener closed: a
    bare end of connection, where every accepted client is told the server
    is shutting down.  The supervisor is held (SIGSTOP) while they connect
    and the stop comes, and takes 2 connections a wakeup, not 64, so most
    of them are still queued at the stop."""
    import os
    import socket
    server = make_server(prelude="from forkchat import supervisor\n"
                                 "supervisor.ACCEPTS_PER_WAKEUP = 2")
    os.kill(server.pid, signal.SIGSTOP)
    try:
        queued = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(10)]
        server.signal(signal.SIGTERM)
    finally:
        os.kill(server.pid, signal.SIGCONT)
    told = [read_to_end(sock) for sock in queued]
    for sock in queued:
        sock.close()
    assert server.proc.wait(10) == 0
    assert all(b"Server shutting down" in said for said in told), told
    refused = [said for said in told
               if said == b"ERROR :Closing Link: 127.0.0.1 (Server shutting down)\r\n"]
    assert len(refused) >= 5, told          # 2 a wakeup: most were still queued
    assert f"INFO {len(refused)} connections not yet accepted were refused at the stop" \
        in server.log_text()
