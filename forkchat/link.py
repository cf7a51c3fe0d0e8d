"""A worker's end of its link to the broker.

The link outlives any one broker: frames queued while no broker is there
wait in `out` and leave, in order, once `connect()` succeeds again.  A frame
that was only partly written to a broker that then died is dropped, since
the next broker could not make sense of its rest.  What to send first on a
new connection (HELLO, REREGISTER) is the worker's decision, not the
link's.
"""

from __future__ import annotations

import socket
import time

from forkchat import ipc

READ_BYTES = 65536            # below malloc's mmap threshold: no mmap per read
QUEUE_BYTES = 1 << 20         # frames held for a broker that is away
CONNECT_TIMEOUT_S = 2.0
_DELIVER = int(ipc.Kind.DELIVER)    # (a plain number: see worker._DELIVER)


class LinkLost(Exception):
    """The broker end is gone (EOF, a send error, or a bad frame stream)."""


class BrokerLink:
    def __init__(self, address: str | bytes) -> None:
        self.address = address
        self.sock: socket.socket | None = None
        self.out: list[bytes] = []
        self._offset = 0              # bytes of out[0] already written
        self._queued = 0              # bytes in out, so a check costs nothing
        self._reader = ipc.FrameReader()
        self._garbled = False         # a bad frame came: nothing after it can be trusted
        self.write_watched = False    # the owner's selector watches for writability

    @property
    def connected(self) -> bool:
        return self.sock is not None

    def connect(self, timeout: float = CONNECT_TIMEOUT_S) -> bool:
        """Open a new connection; True on success.  Queued frames are kept.

        No socket at all (ENFILE: the system is out of descriptors) is a
        failure like a refused connect: tried again later, not a crash.
        `timeout` bounds the wait of a connect that the listen queue holds
        (full: no broker accepts).
        """
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError:
            return False
        sock.settimeout(max(0.01, timeout))
        try:
            sock.connect(self.address)
        except OSError:
            sock.close()
            return False
        sock.setblocking(False)
        self.sock = sock
        self._reader = ipc.FrameReader()
        self._garbled = False
        self.write_watched = False
        if self._offset:
            self._queued -= len(self.out.pop(0))
            self._offset = 0
        return True

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None

    def queue(self, frame: bytes) -> None:
        self.out.append(frame)
        self._queued += len(frame)

    def queue_first(self, frames: list[bytes]) -> None:
        """Frames that must precede everything queued (on a new connection)."""
        self.out[:0] = frames
        self._queued += sum(map(len, frames))

    def discard(self, frames: list[bytes]) -> None:
        """Take out of the queue these frames (the very objects), where
        still unsent: a greeting queued for a connection that failed before
        it went, which the next connection's own greeting replaces."""
        start = 1 if self._offset else 0      # (one partly written stays)
        kept = self.out[:start] + [frame for frame in self.out[start:]
                                   if not any(frame is gone for gone in frames)]
        self.out = kept
        self._queued = sum(map(len, kept))

    def clear(self) -> None:
        """Drop what is queued, but for the rest of a frame partly written.

        The broker reads on from where the socket stopped: cleared with the
        rest, the frames queued next (a closing worker's BYE) were read as
        that frame's remainder, and the link as garbage (a bad frame
        header in the broker's log, the client's quit reason lost)."""
        del self.out[1 if self._offset else 0:]
        self._queued = sum(map(len, self.out))
        if not self.out:
            self._offset = 0

    def count(self, kind: int) -> int:
        """How many queued frames are of this kind."""
        return sum(1 for frame in self.out if frame[4] == kind)

    def overfull(self) -> bool:
        return self._queued > QUEUE_BYTES

    def read(self, deliver_to: bytearray | None = None) -> list[tuple[int, bytes]]:
        """The frames one read brings ([] when nothing is ready).  With
        `deliver_to` (a send queue), the payloads of the DELIVER frames
        that come first are appended to it instead of returned (see
        ipc.FrameReader.feed_into).

        Raises:
            LinkLost: EOF, a read error, or something that is not frames.
        """
        assert self.sock is not None
        try:
            data = self.sock.recv(READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError as error:
            raise LinkLost(error.strerror or str(error)) from None
        if not data:
            raise LinkLost("broker closed the link")
        try:
            if deliver_to is None:
                return self._reader.feed(data)
            return self._reader.feed_into(data, deliver_to, _DELIVER)
        except ipc.FrameError as error:
            self._garbled = True
            raise LinkLost(f"bad frame from broker: {error}") from None

    def read_rest(self) -> list[tuple[int, bytes]]:
        """Every whole frame still readable, up to EOF, an error or an empty
        buffer: what a broker wrote before it died, which the kernel keeps
        for us after the write error that may have told us of the death."""
        assert self.sock is not None
        frames: list[tuple[int, bytes]] = []
        while not self._garbled:
            try:
                data = self.sock.recv(READ_BYTES)
            except OSError:             # nothing more now, or the reset after the rest
                return frames
            if not data:
                return frames
            try:
                frames += self._reader.feed(data)
            except ipc.FrameError:
                self._garbled = True
        return frames

    def await_answer(self, token: bytes, deadline: float) -> bool | None:
        """After our last frames, wait for the broker's echo of the SYNC
        whose payload is `token`: True.  False if the link ends first,
        reset (the broker died with frames of ours unread) or closed: a
        broker that runs a BYE answers it before it closes the link, once
        the QUIT is written to the members, so an end without the answer
        is a broker that died, perhaps with the QUIT unwritten (taken for
        the answer, the client's quit was lost with it).  None at the
        deadline, or if what comes is no frames.  Other frames are passed
        over: the worker is leaving, and its client has been told goodbye.
        """
        assert self.sock is not None
        while not self._garbled:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(READ_BYTES)
            except TimeoutError:
                return None
            except OSError:
                return False
            if not data:
                return False
            try:
                frames = self._reader.feed(data)
            except ipc.FrameError:
                self._garbled = True
                break
            if (ipc.Kind.SYNC, token) in frames:
                return True
        return None

    def flush(self, deadline: float | None = None) -> None:
        """Send what is queued; with a deadline, block until sent or late.

        Raises:
            LinkLost: the broker end is gone (not raised with a deadline:
                the last flush before exit gives up quietly).
        """
        if self.sock is None or not self.out:
            return
        data = b"".join(self.out)[self._offset:]
        try:
            if deadline is not None:
                self.sock.settimeout(max(0.01, deadline - time.monotonic()))
                self.sock.sendall(data)
                sent = len(data)
            else:
                sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as error:
            if deadline is None:
                raise LinkLost(error.strerror or str(error)) from None
            return
        self._consume(sent)

    def _consume(self, sent: int) -> None:
        sent += self._offset
        while self.out and sent >= len(self.out[0]):
            frame = self.out.pop(0)
            sent -= len(frame)
            self._queued -= len(frame)
        self._offset = sent if self.out else 0
