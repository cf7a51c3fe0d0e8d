"""The worker's wake path on socket pairs: no processes, no broker."""

import socket

import pytest

from forkchat import config, ipc, poller, worker


@pytest.fixture
def irc_worker():
    """A registered IRC Worker whose broker link is watched for READ, as after connect."""
    client_end, server_end = socket.socketpair()
    broker_end, link_end = socket.socketpair()
    link_end.setblocking(False)
    w = worker.Worker(server_end, "127.0.0.1", "irc", 1, config.Config(), "unused")
    w.link.sock = link_end
    w.session.nick, w.session.registered = "alice", True
    w.selector.register(link_end, poller.READ, w.on_link)
    yield w, broker_end
    w.selector.close()
    for sock in (client_end, server_end, broker_end, link_end):
        sock.close()


def test_a_dying_brokers_last_frames_are_read_before_the_link_is_lost(irc_worker):
    """The broker wrote a line and died while this turn queued a frame for it.
    The link is watched for READ only: the hang-up must not make the worker
    write first (EPIPE, link lost) and throw away what the broker sent."""
    w, broker_end = irc_worker
    broker_end.sendall(ipc.encode(ipc.Kind.DELIVER, b":bob!b@h PRIVMSG alice :last words\r\n"))
    broker_end.close()
    w.link.queue(ipc.encode(ipc.Kind.REQUEST, b"PRIVMSG bob :hi"))   # queued earlier this turn
    for callback, mask in w.selector.select(1.0):
        callback(mask)
    assert bytes(w.sendq) == b":bob!b@h PRIVMSG alice :last words\r\n"
