import json
import socket

import pytest

from forkchat import ipc


def test_frames_survive_any_split():
    stream = ipc.encode(ipc.Kind.DELIVER, b"hello\r\n") + ipc.encode_json(ipc.Kind.UPDATE, {"a": 1})
    for cut in range(len(stream) + 1):
        reader = ipc.FrameReader()
        frames = reader.feed(stream[:cut]) + reader.feed(stream[cut:])
        assert frames == [(ipc.Kind.DELIVER, b"hello\r\n"), (ipc.Kind.UPDATE, b'{"a":1}')]
        assert reader.pending == 0


def test_feed_into_takes_only_the_leading_frames_of_its_kind():
    """The payloads of the first DELIVERs go to the sink; from the first
    frame of another kind on, every frame is returned in order, so what
    that frame does comes before the DELIVERs after it."""
    stream = (ipc.encode(ipc.Kind.DELIVER, b"one\r\n") + ipc.encode(ipc.Kind.DELIVER, b"two\r\n")
              + ipc.encode(ipc.Kind.DROP, b"bye") + ipc.encode(ipc.Kind.DELIVER, b"three\r\n"))
    for cut in range(len(stream) + 1):
        reader = ipc.FrameReader()
        sink = bytearray(b"queued ")
        frames = reader.feed_into(stream[:cut], sink, ipc.Kind.DELIVER)
        frames += reader.feed_into(stream[cut:], sink, ipc.Kind.DELIVER) if not frames \
            else reader.feed(stream[cut:])
        assert bytes(sink) == b"queued one\r\ntwo\r\n"
        assert frames == [(ipc.Kind.DROP, b"bye"), (ipc.Kind.DELIVER, b"three\r\n")]
        assert all(type(payload) is bytes for _kind, payload in frames)
        assert reader.pending == 0


def test_feed_into_leaves_the_sink_as_it_was_on_a_bad_frame():
    """Frames before a bad header are lost with the link, as feed() loses
    them: none of their payloads stays in the sink."""
    sink = bytearray(b"queued")
    with pytest.raises(ipc.FrameError):
        ipc.FrameReader().feed_into(ipc.encode(ipc.Kind.DELIVER, b"x\r\n") + ipc.HEADER.pack(1, 99)
                                    + b"y", sink, ipc.Kind.DELIVER)
    assert sink == b"queued"


def test_partial_frame_stays_pending():
    reader = ipc.FrameReader()
    assert reader.feed(ipc.encode(ipc.Kind.BYE, b"reason")[:-2]) == []
    assert reader.pending > 0


@pytest.mark.parametrize("header", [ipc.HEADER.pack(10, 99), ipc.HEADER.pack(1 << 30, 10)])
def test_bad_headers_raise(header):
    with pytest.raises(ipc.FrameError):
        ipc.FrameReader().feed(header + b"x" * 10)


@pytest.mark.parametrize("payload", [
    b"\x80not json", b"[1, 2]", b"42", b"null",
    pytest.param(b"[" * 100000, id="deep-list"), pytest.param(b'{"a":' * 100000, id="deep-object")])
def test_decode_json_wants_an_object(payload):
    with pytest.raises(ipc.FrameError):
        ipc.decode_json(payload)


def test_writer_is_bounded_and_flushes_in_one_send():
    a, b = socket.socketpair()
    a.setblocking(False)
    writer = ipc.FrameWriter(a, limit=100)
    assert writer.queue(b"x" * 60)
    assert not writer.queue(b"y" * 60)
    assert writer.queue(b"z" * 40)
    assert writer.pending == 100
    assert writer.flush()
    assert b.recv(1000) == b"x" * 60 + b"z" * 40
    a.close()
    b.close()


def deliver(writer: ipc.FrameWriter, line: bytes) -> bool:
    return writer.queue_line(line, ipc.encode(ipc.Kind.DELIVER, line))


def test_writer_sends_the_lines_queued_in_a_row_as_one_deliver():
    """A worker woken for a batch of messages splits one frame, not one per
    message; any other frame ends the run, and everything keeps its order."""
    a, b = socket.socketpair()
    a.setblocking(False)
    writer = ipc.FrameWriter(a, limit=1 << 20)
    assert deliver(writer, b"one\r\n") and deliver(writer, b"two\r\n")
    writer.queue_reply(ipc.encode(ipc.Kind.REPLY, b"answer\r\n"))
    assert deliver(writer, b"three\r\n") and deliver(writer, b"four\r\n")
    assert writer.queue(ipc.encode(ipc.Kind.DROP, b"Killed"))
    assert deliver(writer, b"five\r\n")
    expected = [(ipc.Kind.DELIVER, b"one\r\ntwo\r\n"), (ipc.Kind.REPLY, b"answer\r\n"),
                (ipc.Kind.DELIVER, b"three\r\nfour\r\n"), (ipc.Kind.DROP, b"Killed"),
                (ipc.Kind.DELIVER, b"five\r\n")]
    assert writer.pending == sum(ipc.HEADER.size + len(payload) for _kind, payload in expected)
    assert writer.flush()
    assert ipc.FrameReader().feed(b.recv(1000)) == expected
    assert deliver(writer, b"six\r\n")          # a run is not continued after a flush
    assert writer.flush()
    assert ipc.FrameReader().feed(b.recv(1000)) == [(ipc.Kind.DELIVER, b"six\r\n")]
    a.close()
    b.close()


def test_a_run_of_lines_is_bounded_and_cut_at_run_bytes():
    a, b = socket.socketpair()
    a.setblocking(False)
    writer = ipc.FrameWriter(a, limit=100)
    assert deliver(writer, b"x" * 60)            # 65 bytes with its header
    assert not deliver(writer, b"y" * 40)        # 105: over the bound
    assert deliver(writer, b"z" * 35)            # 100
    assert writer.pending == 100
    assert writer.flush()
    assert ipc.FrameReader().feed(b.recv(1000)) == [(ipc.Kind.DELIVER, b"x" * 60 + b"z" * 35)]
    writer.limit = 1 << 20
    line = b"w" * (ipc.RUN_BYTES // 2 + 1)
    assert deliver(writer, line) and deliver(writer, line)
    assert writer.flush()
    reader, frames = ipc.FrameReader(), []
    while len(frames) < 2:
        frames += reader.feed(b.recv(1 << 20))
    assert frames == [(ipc.Kind.DELIVER, line)] * 2
    a.close()
    b.close()


def test_writer_keeps_what_the_socket_refuses():
    a, b = socket.socketpair()
    a.setblocking(False)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    writer = ipc.FrameWriter(a, limit=10 << 20)
    writer.queue(b"x" * (4 << 20))
    assert writer.flush() is False
    assert 0 < writer.pending < 4 << 20
    a.close()
    b.close()


def test_json_frames_are_made_and_read_without_a_new_encoder_or_an_encoding_guess(monkeypatch):
    """json.dumps with separators built an encoder for each frame, and
    json.loads of bytes guessed their encoding: code whose objects' pages
    every worker copied from its spawner at its start."""
    value = {"nick": "\u00e9t\u00e9", "rooms": {"#a": "@"}, "registered": True, "n": [1, None]}
    made = []
    real_init = json.JSONEncoder.__init__

    def counted_init(self, *args, **kwargs):
        made.append(kwargs)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(json.JSONEncoder, "__init__", counted_init)
    monkeypatch.setattr(json, "detect_encoding", lambda data: pytest.fail("encoding guessed"))
    frame = ipc.encode_json(ipc.Kind.UPDATE, value)
    assert frame[ipc.HEADER.size:] == json.dumps(value, separators=(",", ":")).encode()
    made.clear()                  # (json.dumps made one, above)
    [(kind, payload)] = ipc.FrameReader().feed(frame)
    assert ipc.decode_json(payload) == value
    assert ipc.encode_json(ipc.Kind.UPDATE, value) == frame
    assert made == []
