"""The socket a worker serves its client on, set up for the way it writes.

A worker sends what one wake-up gathered in one call.  With Nagle's
algorithm left on, the kernel held each such send until the client had
acknowledged the one before, and a client that delays its
acknowledgements (Linux: 40 ms) got every other batch that much later:
a room's talk came in 40 ms bursts.
"""

from __future__ import annotations

import ctypes
import os
import socket

import psutil
import pytest

from tests.support.ircclient import IrcTestClient
from tests.support.server import worker_pid

# Numbered alike on every Linux architecture (system calls from 424 on).
SYS_PIDFD_OPEN = 434
SYS_PIDFD_GETFD = 438


def _syscall(*args: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    result = libc.syscall(*args)
    if result < 0:
        error = ctypes.get_errno()
        raise OSError(error, os.strerror(error))
    return result


def served_socket(pid: int, client: socket.socket) -> socket.socket:
    """A copy of the descriptor on which process `pid` serves `client`'s
    connection (pidfd_getfd: the test's user may, as the worker's parent's
    parent, or as root)."""
    process = psutil.Process(pid)
    connections = getattr(process, "net_connections", None) or process.connections
    port = client.getsockname()[1]
    fds = [conn.fd for conn in connections(kind="tcp") if conn.raddr and conn.raddr[1] == port]
    assert len(fds) == 1, (pid, port, connections(kind="tcp"))
    pidfd = _syscall(SYS_PIDFD_OPEN, pid, 0)
    try:
        return socket.socket(fileno=_syscall(SYS_PIDFD_GETFD, pidfd, fds[0], 0))
    finally:
        os.close(pidfd)


@pytest.mark.parametrize("host, listen", [("127.0.0.1", "127.0.0.1:0"), ("::1", "[::1]:0")])
def test_a_worker_sends_to_its_client_without_delay(make_server, host, listen):
    server = make_server(listen=[listen])
    client = IrcTestClient(server.ports[0][1], host=host)
    client.register("waiter")
    with served_socket(worker_pid(server, "waiter"), client.sock) as served:
        assert served.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert served.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
    client.close()
