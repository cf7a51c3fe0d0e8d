"""A test IRC client: send lines, expect messages, with deadlines, never sleeps."""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Callable

from forkchat import protocol

DEFAULT_TIMEOUT = 5.0


class IrcTestClient:
    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = DEFAULT_TIMEOUT,
                 source: str | None = None) -> None:
        self.sock = socket.create_connection(
            (host, port), timeout=timeout, source_address=(source, 0) if source else None)
        self.timeout = timeout
        self.buffer = b""
        self.nick = ""
        self.history: list[protocol.Message] = []

    def send(self, line: str | bytes) -> None:
        data = line.encode() if isinstance(line, str) else line
        if not data.endswith(b"\n"):
            data += b"\r\n"
        self.sock.sendall(data)

    def read_line(self, timeout: float | None = None) -> bytes | None:
        """One raw line, or None at EOF.  Raises TimeoutError at the deadline."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no line in time")
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError("no line in time") from None
            except ConnectionResetError:
                data = b""
            if not data:
                return None
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.rstrip(b"\r")

    def read_msg(self, timeout: float | None = None) -> protocol.Message | None:
        line = self.read_line(timeout)
        if line is None:
            return None
        msg = protocol.parse_line(line)
        self.history.append(msg)
        if msg.command == "PING" and msg.params and not msg.prefix.startswith("test"):
            pass
        return msg

    def expect(self, command: str | Callable[[protocol.Message], bool],
               timeout: float | None = None, *params: str) -> protocol.Message:
        """Read until a message with this command (and leading params) arrives."""
        deadline = time.monotonic() + (timeout or self.timeout)
        seen: list[str] = []
        while True:
            left = deadline - time.monotonic()
            try:
                msg = self.read_msg(max(left, 0.001))
            except TimeoutError:
                raise AssertionError(f"expected {command} {params}; got {seen}") from None
            if msg is None:
                raise AssertionError(f"connection closed while expecting {command}; got {seen}")
            seen.append(f"{msg.command} {msg.params}")
            if _matches(msg, command, params):
                return msg

    def collect_until(self, command: str, timeout: float | None = None) -> list[protocol.Message]:
        """Every message up to and including the first `command`."""
        got: list[protocol.Message] = []
        self.expect(lambda m: got.append(m) or m.command == command, timeout)
        return got

    def expect_closed(self, timeout: float | None = None) -> list[protocol.Message]:
        """Read until EOF; returns what came before it."""
        got: list[protocol.Message] = []
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"connection not closed; got {got}")
            try:
                line = self.read_line(left)
            except TimeoutError:
                raise AssertionError(f"connection not closed; got {got}") from None
            if line is None:
                return got
            got.append(protocol.parse_line(line))

    def register(self, nick: str, user: str | None = None, password: str | None = None,
                 timeout: float | None = None) -> list[protocol.Message]:
        """NICK/USER, then everything through the end of the MOTD."""
        if password is not None:
            self.send(f"PASS {password}")
        self.send(f"NICK {nick}")
        self.send(f"USER {user or nick} 0 * :Test {nick}")
        burst = []
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            msg = self.expect(lambda m: True, max(0.01, deadline - time.monotonic()))
            burst.append(msg)
            if msg.command in ("376", "422"):
                break
            if msg.command in ("433", "432", "464", "ERROR"):
                raise AssertionError(f"registration failed: {msg}")
        self.nick = nick
        return burst

    def join(self, room: str) -> list[protocol.Message]:
        self.send(f"JOIN {room}")
        return self.collect_until("366")

    def sync(self, token: str = "sync") -> None:
        """Round trip through the worker: everything before it has been read."""
        self.send(f"PING :{token}")
        self.expect(lambda m: m.command == "PONG" and m.params[-1] == token)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


@contextlib.contextmanager
def client_factory(port: int, on_close: Callable[[IrcTestClient], None] = IrcTestClient.close):
    """connect() -> a new client to `port`; every one is closed (on_close) at exit."""
    made: list[IrcTestClient] = []

    def connect(other_port: int | None = None) -> IrcTestClient:
        client = IrcTestClient(other_port or port)
        made.append(client)
        return client
    try:
        yield connect
    finally:
        for client in made:
            on_close(client)


def _matches(msg: protocol.Message, command, params: tuple[str, ...]) -> bool:
    if callable(command):
        return bool(command(msg))
    if msg.command != command:
        return False
    return list(msg.params[:len(params)]) == list(params)
