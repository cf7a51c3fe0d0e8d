"""The broker's Unix socket: only the server's own processes may speak on it.

The socket has an abstract name, which every local process can read in
/proc/net/unix, and SO_PEERCRED lets in only processes of the server's
user.  That user is often shared ('nobody', the default of a root start):
another daemon running as it must not be able to pose as a worker, which
could take over any connection id, make itself an operator with an OPER
frame, or read what is sent to others.
"""

from __future__ import annotations

import shutil
import socket
import subprocess

import psutil
import pytest

from forkchat import ipc
from tests.support.ircclient import IrcTestClient
from tests.support.server import ServerProcess

# allow_root: the server runs as the test's own user, so the uid check
# passes and only the check of who the peer is can refuse it.
CONFIG = "[server]\nallow_root = true\n[limits]\nflood_burst = 100\nflood_rate = 100.0\n"


def broker_address(server_pid: int) -> str:
    """The broker's abstract name, as any local user can read it."""
    with open("/proc/net/unix") as table:
        for row in table:
            path = row.split()[-1]
            if path.startswith(f"@forkchat-{server_pid}-"):
                return "\0" + path[1:]
    raise AssertionError("no broker socket in /proc/net/unix")


def test_a_process_of_the_same_user_cannot_pose_as_a_worker(make_server):
    server = make_server(config_text=CONFIG)
    alice = IrcTestClient(server.port)
    alice.register("alice")
    mark = server.log_length()
    intruder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    intruder.settimeout(10)
    try:
        intruder.connect(broker_address(server.pid))
        try:
            intruder.sendall(ipc.encode_json(ipc.Kind.HELLO, {"cid": 999_999, "proto": "irc",
                                                              "host": "192.0.2.1"})
                             + ipc.encode(ipc.Kind.REQUEST, b"JOIN #x"))
            answer = intruder.recv(4096)
        except (ConnectionResetError, BrokenPipeError):     # closed with our frames unread
            answer = b""
        # refused: the link is closed before anything is answered (no 451 comes back)
        assert answer == b""
    finally:
        intruder.close()
    server.wait_for_text("refused broker link from pid", start=mark)
    alice.send("PING :still")           # the real clients are untouched
    assert alice.expect("PONG").params[-1] == "still"
    alice.close()


# The first process of a new PID namespace, as a container's entrypoint is.
# -r maps our user to root inside (allow_root then keeps it), so that this
# needs no privilege where user namespaces are allowed.
UNSHARE = ["unshare", "-r", "-p", "-f", "--kill-child"]
OWN_PROC = ["--mount-proc"]


def _can_unshare() -> bool:
    try:
        return subprocess.run([*UNSHARE, *OWN_PROC, "true"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


class FirstProcessServer(ServerProcess):
    """The real server as pid 1 of its own PID namespace (unshare blocks
    SIGTERM, so the server itself is signalled)."""

    def __init__(self, own_proc: bool, **kwargs) -> None:
        super().__init__(**kwargs)
        self.own_proc = own_proc

    def command(self) -> list[str]:
        return [*UNSHARE, *(OWN_PROC if self.own_proc else []), *super().command()]

    def stop(self, timeout: float = 8.0) -> int | None:
        try:
            first = psutil.Process(self.pid).children()    # the server: unshare's only child
        except psutil.NoSuchProcess:
            first = []
        for inner in first:
            inner.terminate()
        return super().stop(timeout)


@pytest.mark.parametrize("own_proc", [True, False], ids=["own-proc", "host-proc"])
def test_a_server_running_as_pid_1_accepts_its_own_workers(own_proc):
    """The ancestry walk stopped at pid 1 before comparing it: a server
    started as a container's first process refused every worker of its own
    ('not a process of this server') and no client could register.  The
    same when the /proc mounted is another PID namespace's (the host's):
    it names other processes by our pids, so only the uid check is left."""
    if not shutil.which("unshare") or not _can_unshare():
        pytest.skip("no PID namespace here (unshare)")
    server = FirstProcessServer(own_proc, config_text=CONFIG).start()
    try:
        alice = IrcTestClient(server.port)
        assert alice.register("alice", timeout=10)[0].command == "001"
        alice.close()
        assert "refused broker link" not in server.log_text()
    finally:
        server.stop()
