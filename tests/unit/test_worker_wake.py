"""The worker's wake path on socket pairs: no processes, no broker."""

import socket
import time

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


def test_a_broker_that_closes_every_link_at_once_is_one_outage(monkeypatch, caplog):
    """A broker that accepts the link and closes it at once (it refused us):
    each loss restarted the back-off and the give-up, so the worker
    reconnected every 20 ms, with two log lines each time, for ever."""
    monkeypatch.setattr(worker, "BROKER_GIVE_UP_S", 0.5)
    refusing = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    address = b"\0forkchat-test-refusing-" + str(id(refusing)).encode()
    refusing.bind(address)
    refusing.listen(64)
    client_end, server_end = socket.socketpair()
    w = worker.Worker(server_end, "127.0.0.1", "irc", 1, config.Config(), address)
    accepted = 0
    try:
        with caplog.at_level("INFO", logger="forkchat.worker"):
            assert w._connect_broker()
            w.link_opened_at = time.monotonic()
            deadline = time.monotonic() + 10.0
            while not w.closing and time.monotonic() < deadline:
                refusing.settimeout(0.0)
                try:
                    while True:
                        refusing.accept()[0].close()
                        accepted += 1
                except BlockingIOError:
                    pass
                w._turn()
        assert w.closing, "the worker never gave up"
        assert accepted < 15, f"{accepted} links in 0.5 s: no back-off"
        assert caplog.text.count("broker link lost") == 1
        assert caplog.text.count("reconnected to the broker") <= 1
    finally:
        w.selector.close()
        for sock in (refusing, client_end, server_end):
            sock.close()
        if w.link.sock is not None:
            w.link.sock.close()


def test_a_wake_up_keeps_the_order_of_deliveries_and_what_comes_between(irc_worker):
    """DELIVERs go to the send queue without being returned as frames
    (ipc.FrameReader.feed_into), but only those before any other frame:
    a server query answered between two lines is answered between them."""
    w, broker_end = irc_worker
    broker_end.sendall(ipc.encode(ipc.Kind.DELIVER, b":bob!b@h PRIVMSG alice :first\r\n")
                       + ipc.encode(ipc.Kind.SERVE, b"TIME")
                       + ipc.encode(ipc.Kind.DELIVER, b":bob!b@h PRIVMSG alice :last\r\n"))
    for callback, mask in w.selector.select(1.0):
        callback(mask)
    lines = bytes(w.sendq).split(b"\r\n")
    assert lines[0] == b":bob!b@h PRIVMSG alice :first"
    assert lines[-2] == b":bob!b@h PRIVMSG alice :last"
    assert b" 391 alice " in lines[1]        # RPL_TIME, between them
