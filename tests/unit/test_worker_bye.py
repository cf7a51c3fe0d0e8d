"""A closing worker's goodbye to the broker (worker._say_bye), with a fake
broker on a socket: no processes."""

import socket
import time

from forkchat import config, ipc, link, worker


def frames_of(conn: socket.socket) -> list[tuple[int, bytes]]:
    """Every frame a connection carries, to its end."""
    conn.settimeout(2.0)
    reader = ipc.FrameReader()
    frames: list[tuple[int, bytes]] = []
    while data := conn.recv(65536):
        frames += reader.feed(data)
    return frames


def test_a_goodbye_retried_after_a_failed_send_greets_the_broker_once(monkeypatch):
    """A reconnect whose send failed left its HELLO and REREGISTER queued,
    and the next try put a second pair in front of them: the broker refuses
    a second HELLO on a link, and the client's quit was lost with it."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    address = b"\0forkchat-test-bye-" + str(id(listener)).encode()
    listener.bind(address)
    listener.listen(4)
    client_end, server_end = socket.socketpair()
    w = worker.Worker(server_end, "127.0.0.1", "irc", 1, config.Config(), address)
    w.session.nick, w.session.registered = "alice", True
    w.bye = ipc.encode(ipc.Kind.BYE, b"gone")
    w.link.queue(ipc.encode(ipc.Kind.SYNC, worker.BYE_SYNC))
    w.link.queue(w.bye)
    real_flush = link.BrokerLink.flush
    calls = []

    def flush_failing_once(self, deadline=None):
        calls.append(self.sock)
        if len(calls) == 2:         # the first connection's send: it "fails", nothing sent
            return None
        return real_flush(self, deadline)

    monkeypatch.setattr(link.BrokerLink, "flush", flush_failing_once)
    conns = []
    try:
        w._say_bye(time.monotonic() + 0.5)
        w._drop_link()
        conns = [listener.accept()[0], listener.accept()[0]]
        assert frames_of(conns[0]) == []
        kinds = [kind for kind, _ in frames_of(conns[1])]
        assert kinds == [ipc.Kind.HELLO, ipc.Kind.REREGISTER, ipc.Kind.SYNC, ipc.Kind.BYE]
    finally:
        for conn in conns:
            conn.close()
        w.selector.close()
        client_end.close()
        server_end.close()
        listener.close()
