"""forkchat.worker.tune_client_socket: the options a client's socket is
served with (tests/integration/test_client_socket.py checks a live worker's)."""

from __future__ import annotations

import contextlib
import socket

import pytest

from forkchat import worker


@contextlib.contextmanager
def tcp_pair(family: int, host: str):
    with socket.socket(family) as listener:
        listener.bind((host, 0))
        listener.listen()
        near = socket.create_connection(listener.getsockname()[:2])
        far, _ = listener.accept()
        with near, far:
            yield far


@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"),
                                          (socket.AF_INET6, "::1")])
def test_a_tcp_client_socket_is_tuned(family, host):
    with tcp_pair(family, host) as sock:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0    # the default
        worker.tune_client_socket(sock)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
        assert sock.getblocking() is False


def test_a_unix_client_socket_is_tuned_without_tcp_options():
    """Clients come over TCP only (systemd's Unix sockets are refused at
    start), but a worker on a test's socket pair must not fail for the
    TCP option a Unix socket lacks; the rest is set as for TCP."""
    near, far = socket.socketpair()
    with near, far:
        worker.tune_client_socket(far)
        assert far.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
        assert far.getblocking() is False
