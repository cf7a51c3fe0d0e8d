"""transport: the client's lines leave as they are written (TCP_NODELAY)."""

from __future__ import annotations

import selectors
import socket

import pytest

from forkchat.client import transport


@pytest.mark.timeout(10)
@pytest.mark.parametrize("family, host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_the_connection_sends_each_line_without_waiting(family, host):
    """With Nagle's algorithm on, a line written while the one before was
    unacknowledged waited for the server's acknowledgement: up to 40 ms
    from a server that delays it to carry it on its own next line."""
    with socket.socket(family) as listener:
        listener.bind((host, 0))
        listener.listen()
        opened: list[bool] = []
        lost: list[str] = []
        sel = selectors.DefaultSelector()
        link = transport.Link(sel, host, listener.getsockname()[1], None,
                              lambda: opened.append(True), lambda line: None, lost.append)
        link.open()
        while not opened and not lost:
            for key, mask in sel.select(5.0):
                key.data(mask)
        assert opened, lost
        assert link._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        link.close()
        sel.close()
