"""Which bytes of a draining queue answer the client's own command."""

import socket

from hypothesis import given, strategies as st

from forkchat import ipc, replybytes


def test_reply_bytes_leave_with_the_head_of_the_queue():
    replies = replybytes.ReplyBytes()
    replies.add(10, 100)            # 10 ordinary bytes, then a reply of 100
    replies.add(110, 50)            # more of it, right behind: one span
    assert replies.pending == 150
    replies.sent(5)
    assert replies.pending == 150
    replies.sent(55)                # 5 ordinary + 50 of the reply
    assert replies.pending == 100
    replies.sent(100)
    assert replies.pending == 0


def test_a_cut_queue_holds_no_reply():
    replies = replybytes.ReplyBytes()
    replies.add(0, 1000)
    replies.sent(10)
    replies.cut()
    assert replies.pending == 0
    replies.add(7, 3)               # after the cut, offsets count from the head again
    replies.sent(8)
    assert replies.pending == 2


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 50), st.integers(0, 80)), max_size=40),
       st.booleans())
def test_pending_matches_a_byte_by_byte_model(steps, skip_idle):
    """Each step appends `size` bytes (a reply or not), then sends `sent`.
    The hot paths skip `sent` while nothing is pending (skip_idle)."""
    replies = replybytes.ReplyBytes()
    queue: list[bool] = []
    for reply, size, sent in steps:
        if reply:
            replies.add(len(queue), size)
        queue += [reply] * size
        sent = min(sent, len(queue))
        del queue[:sent]
        if replies.pending or not skip_idle:
            replies.sent(sent)
        assert replies.pending == sum(queue)


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 50), st.integers(0, 80)), max_size=40),
       st.integers(0, 100))
def test_dropping_the_reply_keeps_the_rest_in_order(steps, keep):
    """After any appends and sends, drop() takes out exactly the reply bytes
    past the first `keep`, and leaves nothing pending."""
    replies = replybytes.ReplyBytes()
    queue = bytearray()
    model: list[tuple[bool, int]] = []        # (is reply, byte)
    for reply, size, sent in steps:
        data = bytes((len(model) + index) % 251 for index in range(size))
        if reply:
            replies.add(len(queue), size)
        queue += data
        model += [(reply, byte) for byte in data]
        sent = min(sent, len(queue))
        del queue[:sent]
        del model[:sent]
        if replies.pending:
            replies.sent(sent)
    replies.drop(queue, keep)
    assert bytes(queue) == bytes(byte for index, (reply, byte) in enumerate(model)
                                 if index < keep or not reply)
    assert replies.pending == 0


def test_writer_does_not_hold_a_reply_against_its_limit():
    """A reply of 300 bytes passes a limit of 100, which still bounds the rest;
    as the reply leaves, it stops counting."""
    a, b = socket.socketpair()
    a.setblocking(False)
    writer = ipc.FrameWriter(a, limit=100)
    writer.queue_reply(b"r" * 300)
    assert writer.queue(b"x" * 60)
    assert not writer.queue(b"y" * 60)
    assert writer.pending == 360 and writer.bounded == 60
    assert writer.flush()
    assert writer.pending == writer.bounded == 0
    assert b.recv(1000) == b"r" * 300 + b"x" * 60
    a.close()
    b.close()


def test_writer_sends_a_big_queue_in_pieces_and_in_order():
    """Each flush hands send() SEND_BYTES at most, from the head."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    writer = ipc.FrameWriter(a, limit=1 << 30)
    frames = [bytes([65 + index % 26]) * 1000 for index in range(3000)]
    for frame in frames:
        writer.queue_reply(frame)
    got = bytearray()
    while writer.pending:
        before = writer.pending
        writer.flush()
        assert before - writer.pending <= ipc.SEND_BYTES
        while True:
            try:
                got += b.recv(1 << 20)
            except BlockingIOError:
                break
    assert bytes(got) == b"".join(frames)
    assert writer.bounded == 0
    a.close()
    b.close()
