"""The worker's line handling on socket pairs: no processes, a fake broker."""

import socket

import pytest

from forkchat import config, ipc, worker


@pytest.fixture
def fake_broker():
    """A listening broker address; yields (address, accept) where accept()
    returns the frames the next worker link sent once it is flushed."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    address = b"\0forkchat-test-lines-" + str(id(listener)).encode()
    listener.bind(address)
    listener.listen(4)
    accepted: list[socket.socket] = []

    def accept(w: worker.Worker) -> list[tuple[int, bytes]]:
        conn = listener.accept()[0]
        accepted.append(conn)
        w._flush_link()
        conn.settimeout(2.0)
        reader = ipc.FrameReader()
        frames: list[tuple[int, bytes]] = []
        conn.setblocking(False)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                frames += reader.feed(data)
        except BlockingIOError:
            pass
        return frames
    yield address, accept
    for conn in accepted:
        conn.close()
    listener.close()


@pytest.mark.parametrize("line", [b"NICK alice", b"nick alice", b"@label=1 NICK alice",
                                  b":alice NICK alice"])
def test_a_nick_lost_with_the_broker_is_asked_again(fake_broker, line):
    """A registering client's NICK that reached a broker which then died is
    sent to the next one (the client waits for its answer).  Only a line
    that began 'NICK ' was remembered: one with a tag or a prefix, which
    the parser accepts, was lost, and the client waited out the
    registration timeout."""
    address, accept = fake_broker
    client_end, server_end = socket.socketpair()
    w = worker.Worker(server_end, "127.0.0.1", "irc", 1, config.Config(), address)
    try:
        assert w._connect_broker()
        accept(w)                                   # HELLO
        w.forward(line)
        w._flush_link()                             # the NICK and its SYNC reach the broker
        w._broker_lost("test")                      # ... which dies before answering
        assert w._connect_broker()
        requests = [payload for kind, payload in accept(w) if kind == ipc.Kind.REQUEST]
        assert requests == [line]
    finally:
        w.selector.close()
        if w.link.sock is not None:
            w.link.sock.close()
        client_end.close()
        server_end.close()
