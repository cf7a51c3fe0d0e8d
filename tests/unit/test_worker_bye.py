"""A closing worker's goodbye to the broker (worker._say_bye), with a fake
broker on a socket: no processes."""

import socket
import threading
import time

from forkchat import config, ipc, link, worker


def frames_of(conn: socket.socket, reader: ipc.FrameReader | None = None,
              until: tuple[int, bytes] | None = None) -> list[tuple[int, bytes]]:
    """Every frame a connection carries, to its end (or to the frame
    `until`, what came with it included; `reader` then goes on after)."""
    conn.settimeout(10.0)
    reader = reader or ipc.FrameReader()
    frames: list[tuple[int, bytes]] = []
    while until not in frames and (data := conn.recv(65536)):
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
    # The test is the broker: it echoes the SYNC, and the goodbye ends then,
    # not at a deadline (of 0.5 s once, which a slow machine passed before
    # the second connect: the test then waited for it until its timeout).
    saying = threading.Thread(target=w._say_bye, args=(time.monotonic() + 10,), daemon=True)
    listener.settimeout(10)
    try:
        saying.start()
        conns = [listener.accept()[0], listener.accept()[0]]
        reader = ipc.FrameReader()
        frames = frames_of(conns[1], reader, until=(ipc.Kind.SYNC, worker.BYE_SYNC))
        conns[1].sendall(ipc.encode(ipc.Kind.SYNC, worker.BYE_SYNC))
        saying.join(10)
        assert not saying.is_alive()
        w._drop_link()
        assert frames_of(conns[0]) == []
        kinds = [kind for kind, _ in frames + frames_of(conns[1], reader)]
        assert kinds == [ipc.Kind.HELLO, ipc.Kind.REREGISTER, ipc.Kind.SYNC, ipc.Kind.BYE]
    finally:
        for conn in conns:
            conn.close()
        saying.join(10)
        w.selector.close()
        client_end.close()
        server_end.close()
        listener.close()


def test_a_queue_overfull_at_a_live_broker_keeps_the_frame_partly_written(monkeypatch):
    """A broker too slow to read: the worker's queue for it overflows and
    the worker closes ("chat service unavailable").  The queue was cleared
    whole, the rest of a frame the socket had taken half of with it, and
    the BYE that followed was read as that frame's rest: the broker logged
    a bad frame header, as for a worker taken over, and the client's quit
    reason was lost (found with three clients flooding a room of 150)."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    address = b"\0forkchat-test-overfull-" + str(id(listener)).encode()
    listener.bind(address)
    listener.listen(4)
    client_end, server_end = socket.socketpair()
    w = worker.Worker(server_end, "127.0.0.1", "irc", 1, config.Config(), address)
    w.session.nick, w.session.registered = "alice", True
    conn = None
    try:
        assert w.link.connect()
        conn = listener.accept()[0]
        conn.setblocking(False)
        line = ipc.encode(ipc.Kind.REQUEST, b"PRIVMSG #room :" + b"z" * 40000)
        while not w.closing:                    # the broker reads nothing meanwhile
            w._queue_frame(line)
            w.link.flush()
        assert w.link.out[-1] == w.bye
        reader, frames = ipc.FrameReader(), []
        while w.link.out:                       # the broker catches up
            w.link.flush()
            try:
                frames += reader.feed(conn.recv(1 << 20))
            except BlockingIOError:
                pass
        try:
            frames += reader.feed(conn.recv(1 << 20))
        except BlockingIOError:
            pass
        assert {kind for kind, _ in frames[:-2]} == {ipc.Kind.REQUEST}
        assert frames[-2:] == [(ipc.Kind.SYNC, worker.BYE_SYNC),
                               (ipc.Kind.BYE, b"Server error: chat service unavailable")]
    finally:
        if conn is not None:
            conn.close()
        w.link.close()
        w.selector.close()
        client_end.close()
        server_end.close()
        listener.close()
