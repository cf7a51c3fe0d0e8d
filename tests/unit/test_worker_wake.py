"""The worker's wake path on socket pairs: no processes, no broker."""

import dataclasses
import socket
import threading
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


# -- the turns that only deliver (Worker._deliver_turns) ----------------------

LINE = b":bob!b@h PRIVMSG #room :" + b"x" * 60 + b"\r\n"


@pytest.fixture
def served_worker():
    """A registered IRC Worker whose client and broker link are both
    watched, as in run(); yields (worker, client's end, broker's end)."""
    client_end, server_end = socket.socketpair()
    broker_end, link_end = socket.socketpair()
    link_end.setblocking(False)
    server_end.setblocking(False)
    client_end.settimeout(5.0)
    cfg = config.Config()
    cfg = dataclasses.replace(cfg, limits=dataclasses.replace(cfg.limits, sendq_bytes=8192))
    w = worker.Worker(server_end, "127.0.0.1", "irc", 1, cfg, "unused")
    w.link.sock = link_end
    w.session.nick, w.session.registered = "alice", True
    w.selector.register(link_end, poller.READ, w.on_link)
    w.selector.register(server_end, poller.READ, w.on_client)
    yield w, client_end, broker_end
    w.selector.close()
    for sock in (client_end, server_end, broker_end, link_end):
        sock.close()


def steps_until(w: worker.Worker, client_end: socket.socket, wanted: bytes) -> bytes:
    """Run the worker's loop, as run() does, until its client has `wanted`;
    what the client got.  The client reads in a thread, which then makes a
    descriptor of the worker's ready, as the lifeline would: a loop that
    misses it waits for ever, and the test fails at its timeout."""
    got = []
    stop_r, stop_w = socket.socketpair()
    stopped = []
    w.selector.register(stop_r, poller.READ, stopped.append)

    def client() -> None:
        data = b""
        while wanted not in data:
            data += client_end.recv(65536)
        got.append(data)
        stop_w.send(b"!")
    reader = threading.Thread(target=client, daemon=True)
    reader.start()
    try:
        while not stopped:
            w._step()
    finally:
        reader.join(5.0)
        w.selector.unregister(stop_r)
        stop_r.close()
        stop_w.close()
    return got[0]


@pytest.mark.timeout(10)        # a step that misses the client waits for ever
def test_a_client_line_among_deliveries_is_answered(served_worker):
    """While only DELIVERs come the loop takes a short cut, but a line from
    the client in the same wake-up is served all the same, after the
    delivery that came with it."""
    w, client_end, broker_end = served_worker
    broker_end.sendall(ipc.encode(ipc.Kind.DELIVER, LINE))
    client_end.sendall(b"PING :here\r\n")
    got = steps_until(w, client_end, b"PONG")
    assert got.startswith(LINE)
    broker_end.sendall(ipc.encode(ipc.Kind.DELIVER, LINE))      # and the short cut goes on
    assert steps_until(w, client_end, LINE) == LINE


@pytest.mark.timeout(10)        # a step that misses the deadline waits for ever
def test_a_deadline_among_deliveries_runs_its_timer(served_worker):
    """The PING timer runs while only DELIVERs come (or nothing at all)."""
    w, client_end, broker_end = served_worker
    w.last_input = time.monotonic() - w.cfg.limits.ping_interval + 0.2
    w._schedule_ping()
    broker_end.sendall(ipc.encode(ipc.Kind.DELIVER, LINE))
    got = steps_until(w, client_end, b"PING")
    assert got.startswith(LINE)


@pytest.mark.timeout(10)        # a step that sends on without bounds waits for ever
def test_deliveries_to_a_client_that_does_not_read_stop_at_its_sendq(served_worker):
    """Deliveries the client's socket cannot take wait in the send queue,
    bounded by sendq_bytes (8 KiB here), and the client is dropped."""
    w, client_end, broker_end = served_worker
    w.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client_end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    broker_end.sendall(ipc.encode(ipc.Kind.DELIVER, LINE) * 1000)       # 85 KB
    while not w.done:
        w._step()
    assert w.stuck
    assert b"Max SendQ exceeded" in bytes(w.sendq)


@pytest.mark.timeout(10)
def test_a_broker_lost_among_deliveries_gave_its_last_line(served_worker):
    """A broker that wrote a line and died: the client has the line, and
    the worker goes on to reconnect."""
    w, client_end, broker_end = served_worker
    broker_end.sendall(ipc.encode(ipc.Kind.DELIVER, LINE))
    broker_end.close()
    assert steps_until(w, client_end, LINE) == LINE
    while w.link.sock is not None:
        w._step()
    assert "reconnect" in w.timers


@pytest.mark.timeout(10)        # a step that delivers on after the DROP waits for ever
def test_a_drop_after_deliveries_ends_the_loop(served_worker):
    """A frame of another kind after the DELIVERs is handled as it comes,
    here a DROP (the broker's KILL): the loop stops, the line first."""
    w, client_end, broker_end = served_worker
    broker_end.sendall(ipc.encode(ipc.Kind.DELIVER, LINE) + ipc.encode(ipc.Kind.DROP, b"Killed"))
    while not w.done:
        w._step()
    assert bytes(w.sendq).startswith(LINE)
    assert b"ERROR :Closing Link: 127.0.0.1 (Killed)" in bytes(w.sendq)
