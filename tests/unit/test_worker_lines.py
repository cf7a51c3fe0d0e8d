"""The worker's line handling on socket pairs: no processes, a fake broker."""

import contextlib
import select
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


@contextlib.contextmanager
def linked_worker(fake_broker, proto: str = "irc"):
    """A Worker on a socket pair, its link to the fake broker open and its
    HELLO taken; yields (worker, client's end, worker's end), all closed
    after."""
    address, accept = fake_broker
    client_end, server_end = socket.socketpair()
    w = worker.Worker(server_end, "127.0.0.1", proto, 1, config.Config(), address)
    try:
        assert w._connect_broker()
        accept(w)
        yield w, client_end, server_end
    finally:
        w.selector.close()
        if w.link.sock is not None:
            w.link.sock.close()
        client_end.close()
        server_end.close()


@pytest.mark.parametrize("line", [b"NICK alice", b"nick alice", b"@label=1 NICK alice",
                                  b":alice NICK alice"])
def test_a_nick_lost_with_the_broker_is_asked_again(fake_broker, line):
    """A registering client's NICK that reached a broker which then died is
    sent to the next one (the client waits for its answer).  Only a line
    that began 'NICK ' was remembered: one with a tag or a prefix, which
    the parser accepts, was lost, and the client waited out the
    registration timeout."""
    _address, accept = fake_broker
    with linked_worker(fake_broker) as (w, _client_end, _server_end):      # HELLO taken
        w.forward(line)
        w._flush_link()                             # the NICK and its SYNC reach the broker
        w._broker_lost("test")                      # ... which dies before answering
        assert w._connect_broker()
        requests = [payload for kind, payload in accept(w) if kind == ipc.Kind.REQUEST]
        assert requests == [line]


EURO_REASON = "a" + "\u20ac" * 1400                        # 4201 bytes
LONG_QUITS = [
    # (line, what the worker's BYE says)
    (b"QUIT :" + b"x" * 4090 + b"\r\n", "Quit: " + "x" * 504),
    (b"quit :" + b"y" * 65530 + b"\n", "Quit: " + "y" * 504),
    (b"@label=1 :me QUIT :" + EURO_REASON.encode() + b"\r\n", "Quit: a" + "\u20ac" * 163),
    (b"QUIT :" + b"z" * 300 + b"\xe9" + b"z" * 300 + b"\r\n", "Client Quit"),  # not UTF-8
]


def _send_in_reads(fake_broker, line: bytes, read: int):
    """The worker after reading `line` in reads of `read` bytes, a PING after it."""
    with linked_worker(fake_broker) as (w, client_end, server_end):
        data = line + b"PING :after\r\n"
        for start in range(0, len(data), read):
            client_end.sendall(data[start:start + read])
            while select.select([server_end], [], [], 0)[0] and not w.closing:
                w.on_client(worker.selectors.EVENT_READ)      # (64 KB at most a read)
            assert len(w.recvq) <= max(read, 512) + 512    # discarded as it comes
        return w, bytes(w.sendq)


@pytest.mark.parametrize("line, bye", LONG_QUITS, ids=["4k", "64k", "tagged-euro", "latin1"])
@pytest.mark.parametrize("read", [65536 + 512, 512, 1000, 333])
def test_an_over_long_quit_is_cut_and_run(fake_broker, line, bye, read):
    """weechat sends a long /quit reason whole: the QUIT was refused with
    417 and discarded, weechat closed, and the rooms read "Connection
    closed".  The QUIT runs with what fits a line (the broker cuts the
    reason further, to kicklen characters), whether the line came in one
    read or in many; nothing after it runs."""
    w, sent = _send_in_reads(fake_broker, line, read)
    assert w.closing and w.bye == ipc.encode(ipc.Kind.BYE, bye.encode())
    assert b" 417 " not in sent and b"PONG" not in sent
    assert sent.startswith(b"ERROR :Closing Link: 127.0.0.1 (" + bye.encode()[:60])


@pytest.mark.parametrize("line", [b"PRIVMSG #a :" + b"x" * 4000 + b"\r\n",
                                  b"QUITTER :" + b"x" * 4000 + b"\r\n"],
                         ids=["privmsg", "quitter"])
@pytest.mark.parametrize("read", [65536, 512])
def test_other_over_long_lines_are_still_refused(fake_broker, line, read):
    w, sent = _send_in_reads(fake_broker, line, read)
    assert not w.closing
    assert sent.count(b" 417 ") == 1 and b"PONG" in sent


@pytest.mark.parametrize("line, answer", [
    (b"QUIT :" + b"x" * 65530 + b"\r\n", b"ERROR :Closing Link: 127.0.0.1 (Quit: xxxx"),
    (b"PRIVMSG #a :" + b"x" * 65530 + b"\r\n", b" 417 "),
    (b"QUIT :" + b"x" * 9000, b"ERROR :Closing Link: 127.0.0.1 (Quit: xxxx"),   # not ended yet
], ids=["quit", "privmsg", "quit-unended"])
def test_an_over_long_line_waiting_behind_a_sync_is_not_a_flood(fake_broker, line, answer):
    """Lines wait while the broker has a sync to answer.  An over-long one
    that waited whole went over the 8 KiB receive queue: "Excess Flood",
    where a moment later it drew 417, and a long QUIT lost its reason so.
    It waits cut, and runs as it would have."""
    with linked_worker(fake_broker) as (w, client_end, server_end):
        w.syncs_pending = 1                             # the broker has yet to answer
        client_end.sendall(b"PING :first\r\n" + line)
        while select.select([server_end], [], [], 0)[0] and not w.closing:
            w.on_client(worker.selectors.EVENT_READ)
            assert len(w.recvq) <= 600
        assert not w.closing and b"PONG" not in w.sendq
        if not line.endswith(b"\n"):
            client_end.sendall(b"x" * 70000 + b"\r\n")
            while select.select([server_end], [], [], 0)[0] and not w.closing:
                w.on_client(worker.selectors.EVENT_READ)
        w.syncs_pending = 0                             # ... and answers
        w._process_lines()
        sent = bytes(w.sendq)
        assert b"Excess Flood" not in sent and answer in sent
        assert sent.index(b"PONG") < sent.index(answer)


@pytest.mark.parametrize("read", [512, 65536], ids=["in-pieces", "whole"])
def test_an_over_long_quit_before_a_reset_gives_its_reason(fake_broker, read):
    """A client that sends its QUIT while lines wait and resets the
    connection leaves with its words (_client_broke); an over-long QUIT,
    refused, left with "Read error" when it came in pieces."""
    line = b"QUIT :" + b"x" * 4000 + b"\r\n"
    with linked_worker(fake_broker) as (w, client_end, server_end):
        w.syncs_pending = int(read > len(line))         # a sync pending: the line waits whole
        for start in range(0, len(line), read):
            if start + read >= len(line):
                w.syncs_pending = 1                     # its end waits: the head is held
            client_end.sendall(line[start:start + read])
            w.on_client(worker.selectors.EVENT_READ)
        assert not w.closing and (w.discarding or read > len(line))
        client_end.close()                              # (nothing more to read)
        w._client_broke("Read error: Connection reset by peer")
        assert w.bye == ipc.encode(ipc.Kind.BYE, ("Quit: " + "x" * 504).encode())


def test_a_tutorial_line_read_at_a_reset_is_not_a_quit(fake_broker):
    """A tutorial client's lines are chat: one that began "quit", read as
    the connection reset, was run as an IRC QUIT, and the client left with
    'Quit: now' (its next word) where its rooms read 'Read error'."""
    with linked_worker(fake_broker, "tutorial") as (w, client_end, server_end):
        client_end.sendall(b"alice\n")
        w.on_client(worker.selectors.EVENT_READ)
        w.session.registered = True                     # (the broker's welcome, faked)
        client_end.sendall(b"quit now, said the raven\n")    # read only after the reset
        client_end.close()
        w._client_broke("Read error: Connection reset by peer")
        assert w.bye == ipc.encode(ipc.Kind.BYE, b"Read error: Connection reset by peer")
