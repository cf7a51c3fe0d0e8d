"""forkchat.worker.tune_client_socket: the options a client's socket is
served with (tests/integration/test_client_socket.py checks a live worker's)."""

from __future__ import annotations

import contextlib
import socket

import pytest

from forkchat import config, worker


@contextlib.contextmanager
def tcp_pair(family: int, host: str):
    with socket.socket(family) as listener:
        listener.bind((host, 0))
        listener.listen()
        near = socket.create_connection(listener.getsockname()[:2])
        far, _ = listener.accept()
        with near, far:
            yield near, far


@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"),
                                          (socket.AF_INET6, "::1")])
def test_a_tcp_client_socket_is_tuned(family, host):
    with tcp_pair(family, host) as (_near, sock):
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


class _NoFamily(socket.socket):
    """A socket whose family, as socket.family gives it, cannot be read."""

    @property
    def family(self) -> socket.AddressFamily:
        raise AssertionError("socket.family was read")


@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"),
                                          (socket.AF_INET6, "::1")])
def test_a_socket_is_known_for_tcp_without_an_enum_lookup(family, host):
    """socket.family makes an enum member of the family: objects whose
    pages every worker wrote to, and copied from its spawner."""
    with tcp_pair(family, host) as (_near, sock):
        checked = _NoFamily(fileno=sock.detach())
        with checked:
            worker.tune_client_socket(checked)
            assert checked.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    near, far = socket.socketpair()
    with near, _NoFamily(fileno=far.detach()) as unix:
        worker.tune_client_socket(unix)


def test_a_read_of_the_client_is_acknowledged_at_once():
    """A server that answers what it reads is taken by the kernel for a
    talker, and its acknowledgements wait (some 40 ms) for an answer to
    carry them: a client with Nagle's algorithm on held its next line that
    long after one that has no answer.  The worker asks for them at once
    after each read (TCP_QUICKACK, which reads 0 while they would wait)."""
    with tcp_pair(socket.AF_INET, "127.0.0.1") as (client, served):
        w = worker.Worker(served, "127.0.0.1", "irc", 1, config.Config(), "unused")
        try:
            for _ in range(3):          # a few lines answered as they come
                client.sendall(b"PING :x\r\n")
                served.recv(100)
                served.sendall(b":forkchat PONG forkchat :x\r\n")
                client.recv(100)
            assert served.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 0
            client.sendall(b"PRIVMSG #room :no answer to this\r\n")    # on loopback: there now
            assert w._recv() == b"PRIVMSG #room :no answer to this\r\n"
            assert served.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 1
        finally:
            w.selector.close()
