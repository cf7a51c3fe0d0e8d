"""Frames between the broker and the workers.

    worker ──HELLO, REQUEST, REGISTER, OPER, OPER_FAILED, REREGISTER, BYE──▶ broker
    worker ◀──────────── DELIVER, REPLY, UPDATE, DROP, SERVE ───────────── broker

Each worker holds one stream connection to the broker's private Unix
socket.  A frame is a 4-byte big-endian payload length, a 1-byte kind and
the payload:

    kind        payload
    HELLO       JSON {"cid", "host", "proto",      first frame of a link; taken only
                "reregister": bool}                from the process the supervisor
                                                   named for that cid (its pid); the
                                                   host shown is made from the
                                                   supervisor's peer, not "host"
    REQUEST     one canonical IRC line (no CRLF)   shared-state command
    REGISTER    JSON {"user", "realname"}          NICK+USER done, burst please
    OPER        JSON {"name"}                      password already checked
    OPER_FAILED JSON {"name"} or {"pass": true}    a wrong OPER or server password,
                                                   counted per address block
    REREGISTER  JSON identity                      after a broker restart (its "host"
                                                   yields to the supervisor's peer too)
    BYE         UTF-8 quit reason                  the client is leaving
    SYNC        empty; echoed back as is           "all before this is done"
    DELIVER     raw line bytes, CRLF included      write to the client as is
                (the lines of several messages
                queued in a row: queue_line)
    REPLY       raw line bytes, CRLF included      the same, answering the client's
                                                   own command: not held against a
                                                   send queue (see replybytes.py)
    UPDATE      JSON {field: value}                the client's session changed
    DROP        UTF-8 reason                       close the client with ERROR
    SERVE       one IRC line (no CRLF)             a server query the worker answers,
                                                   its <target> found to be this server

and on the supervisor's control socket to the broker:

    CONTROL     JSON {"op": ...}: shutdown, freeze, gone {"cid", "pid"}, bind
                {"workers": [[cid, pid, peer], ...]} (supervisor -> broker; peer:
                the address the client connected from); counts, frozen
                (broker -> supervisor)
    CONFIG      pickled config.Config (trusted parent only, never a worker)

No pickle: lines are bytes and the rare control frames are JSON, so a
misbehaving worker can send nothing that runs code in the broker.  A
broadcast line is framed once and the same bytes are queued on every
recipient's `FrameWriter`; each writer sends everything it holds in one
call per event-loop turn, and the lines queued to it in a row (a room's
messages of one flush window) leave as one DELIVER frame.
"""

from __future__ import annotations

import collections
import enum
import json
import socket
import struct
from typing import Any

from forkchat import replybytes

HEADER = struct.Struct("!IB")
_HEADER_BYTES = HEADER.size
_unpack_header = HEADER.unpack_from   # (looked up once: see FrameReader.feed_into)
_pack_header = HEADER.pack
HEARTBEAT_S = 2.0      # broker -> supervisor counts; silence means a stuck broker
CONTROL_QUEUE_BYTES = 1 << 20   # control frames waiting for a busy peer
MAX_FRAME_BYTES = 1 << 20
# The most one flush hands to send(): more than a Unix socket's buffer
# (about 208 KiB) takes, so an ordinary flush still sends all it holds.
SEND_BYTES = 1 << 19
# The most bytes of lines one DELIVER frame carries (FrameWriter.queue_line):
# far less than a frame may hold.
RUN_BYTES = 1 << 16


class Kind(enum.IntEnum):
    HELLO = 1
    REQUEST = 2
    REGISTER = 3
    OPER = 4
    REREGISTER = 5
    BYE = 6
    SYNC = 7
    OPER_FAILED = 8
    DELIVER = 10
    UPDATE = 11
    DROP = 12
    REPLY = 13
    SERVE = 14
    CONTROL = 20
    CONFIG = 21


class FrameError(Exception):
    """The peer sent something that is not a frame stream; drop the link."""


def encode(kind: int, payload: bytes) -> bytes:
    return HEADER.pack(len(payload), kind) + payload


# Made once: json.dumps with separators built an encoder for each frame,
# and json.loads of bytes guessed their encoding (which is UTF-8 here),
# Python code and objects whose pages every worker wrote to at its start,
# and so copied from its spawner.
_JSON_ENCODER = json.JSONEncoder(separators=(",", ":"))
_JSON_DECODER = json.JSONDecoder()


def encode_json(kind: int, value: Any) -> bytes:
    return encode(kind, _JSON_ENCODER.encode(value).encode())


def decode_json(payload: bytes) -> dict[str, Any]:
    """A control frame's JSON object.

    A worker taken over through its client sends what it likes: '[' a
    hundred thousand times deep raised RecursionError out of json, which
    no handler of a bad frame caught, and the broker died of it.

    Raises:
        FrameError: the payload is not JSON (or nested too deep), or not
            an object.
    """
    try:
        value = _JSON_DECODER.decode(payload.decode("utf-8", "surrogatepass"))
    except (ValueError, RecursionError):
        raise FrameError("control frame is not JSON") from None
    if not isinstance(value, dict):
        raise FrameError("control frame is not a JSON object")
    return value


class FrameReader:
    """Reassembles frames from arbitrary stream chunks."""

    def __init__(self, max_frame: int = MAX_FRAME_BYTES) -> None:
        self._buffer = bytearray()
        self._max_frame = max_frame

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Returns every frame completed by `data`.

        Raises:
            FrameError: a frame longer than the bound, or an unknown kind.
        """
        return self.feed_into(data, bytearray(), -1)

    def feed_into(self, data: bytes, sink: bytearray, kind: int) -> list[tuple[int, bytes]]:
        """As feed(), but the payloads of the frames of `kind` that come
        first are appended to `sink` instead of returned; the frames from
        the first of another kind on are returned, in order.

        A worker wakes for a batch of DELIVER frames (README, Performance),
        whose payloads go to its send queue as they are: a tuple, a list
        entry and a second loop per frame cost it some 0.5 us each there.
        One function, not a feed and a split, for the same reason.

        Raises:
            FrameError: a frame longer than the bound, or an unknown kind
                (and `sink` is as it was).
        """
        buffer = self._buffer
        if buffer:       # frames split over reads: taken from the buffer itself
            buffer += data
            data = buffer
        frames: list[tuple[int, bytes]] = []
        offset = 0
        total = len(data)
        kept = len(sink)
        max_frame = self._max_frame
        while total - offset >= _HEADER_BYTES:
            length, frame_kind = _unpack_header(data, offset)
            if length > max_frame or frame_kind not in _KINDS:
                del sink[kept:]
                raise FrameError(f"bad frame header (kind {frame_kind}, {length} bytes)")
            start = offset + _HEADER_BYTES
            end = start + length
            if end > total:
                break
            if frame_kind == kind and not frames:
                sink += data[start:end]
            else:
                frames.append((frame_kind, bytes(data[start:end])))
            offset = end
        if buffer:
            del buffer[:offset]
        elif offset < total:    # the usual case has whole frames only
            buffer += data[offset:]
        return frames

    @property
    def pending(self) -> int:
        return len(self._buffer)


_KINDS = frozenset(int(kind) for kind in Kind)
_DELIVER = int(Kind.DELIVER)


class FrameWriter:
    """A bounded, non-blocking output queue for one stream socket.

    `queue` never blocks and never sends; `flush` sends what is queued, up
    to SEND_BYTES, in one call.  When more than `limit` bytes wait, `queue`
    refuses and the owner decides what to do with the slow peer.  Frames
    queued with `queue_reply` (a reply to the client's own command, which
    may be megabytes) are not held against the limit: the worker asks for
    no second reply before the first has gone (see replybytes.py).
    """

    def __init__(self, sock: socket.socket, limit: int) -> None:
        self.sock = sock
        self.limit = limit
        self._chunks: collections.deque[bytes] = collections.deque()
        self._pending = 0
        self._replies = replybytes.ReplyBytes()
        # The DELIVER run at the queue's tail (queue_line): the index in
        # _chunks of its header's place (-1: none open), where it starts
        # and the most it may end at, as values of _pending (-1: none open).
        self._run_at = -1
        self._run_start = 0
        self._run_limit = -1

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def bounded(self) -> int:
        """The bytes queued that count against the limit."""
        return self._pending - self._replies.pending

    def queue(self, frame: bytes) -> bool:
        size = len(frame)
        if self._pending + size > self.limit \
                and self._pending - self._replies.pending + size > self.limit:
            return False
        self._append(frame)
        return True

    def queue_line(self, line: bytes, frame: bytes) -> bool:
        """A DELIVER of `line`, whose frame is `frame` (built once for every
        recipient of a broadcast), or False as queue() refuses one.

        The lines queued one after another, with no other frame between
        them, leave as one DELIVER frame (up to RUN_BYTES of them): a worker
        woken for 16 messages splits one frame, not 16.  The first of a run
        is queued as its frame, the others as their lines, the same bytes
        objects for every recipient; a run of more than one line gets its
        header when it ends (_end_run).  `pending` is always what the peer
        will be sent.
        """
        # (bounded and _append spelt out: this runs once per fan-out
        # delivery, or once per member and flush for a room's talk)
        pending = self._pending + len(line)
        if pending <= self._run_limit:      # a run is open, and this line fits in it
            if pending > self.limit and pending - self._replies.pending > self.limit:
                return False
            self._chunks.append(line)
            self._pending = pending
            return True
        if self._run_at >= 0:
            self._end_run()
        start = self._pending
        pending = start + len(frame)
        if pending > self.limit and pending - self._replies.pending > self.limit:
            return False
        chunks = self._chunks
        self._run_at = len(chunks)
        self._run_start = start
        self._run_limit = start + _HEADER_BYTES + RUN_BYTES
        chunks.append(frame)
        self._pending = pending
        return True

    def queue_unbounded(self, frame: bytes) -> None:
        """For a last frame (DROP) that must follow a refused one."""
        self._append(frame)

    def queue_reply(self, frame: bytes) -> None:
        """A frame of a reply to the peer's client's own command."""
        self._replies.add(self._pending, len(frame))
        self._append(frame)

    def _append(self, frame: bytes) -> None:
        if self._run_at >= 0:
            self._end_run()
        self._chunks.append(frame)
        self._pending += len(frame)

    def _end_run(self) -> None:
        """End the DELIVER run queued last: if it is more than its first
        frame, that frame's header becomes the run's."""
        chunks, at = self._chunks, self._run_at
        if len(chunks) > at + 1:
            length = self._pending - self._run_start - _HEADER_BYTES
            chunks[at] = _pack_header(length, _DELIVER) + chunks[at][_HEADER_BYTES:]
        self._run_at = self._run_limit = -1

    def flush(self) -> bool:
        """Send what is queued (SEND_BYTES at most); True when nothing is left.

        A big reply leaves in pieces, each joined from the queue's head
        alone, so that no send copies the whole queue.

        Raises:
            OSError: the peer is gone (BrokenPipeError, ConnectionResetError).
        """
        chunks = self._chunks
        if not chunks:
            return True
        if self._run_at >= 0:
            self._end_run()
        if self._pending <= SEND_BYTES:      # the usual case (fan-out): all at once
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
        else:
            head = [chunks.popleft()]
            size = len(head[0])
            while chunks and size < SEND_BYTES:
                head.append(chunks.popleft())
                size += len(head[-1])
            data = b"".join(head)
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            chunks.appendleft(data)
            raise
        if sent < len(data):
            chunks.appendleft(data[sent:])
        self._pending -= sent
        if self._replies.pending:
            self._replies.sent(sent)
        return not chunks
