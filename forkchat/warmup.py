"""The server's warm-up: whole connections run through a Worker in the
supervisor at its start, before it forks its children.

Each first use of a function or class in a worker wrote to the pages of
its code and type objects (CPython counts a function's first calls, then
rewrites its bytecode in place, specialised to what it met), which every
worker then copied from the spawner; and copying pages is most of what a
connection costs the server.  Run enough in an ancestor, that code is only
read in the workers and its pages stay shared (an idle worker copied some
750 pages, 690 with this).

A TLS client's worker runs more that is new to it: the handshake, through
the listener's context, and its reads and writes through OpenSSL.  Its
first use wrote to ssl.py's code, to what OpenSSL fetches and caches once
per process (ciphers, digests, key exchange), and to the context's own
certificate and key: an idle TLS worker copied some 790 pages where a
plain one copied 610.  So as many rounds again go over TLS, through each
TLS listener's own context in turn (720-735 pages; the rest is mostly C
heap, a session's own state in OpenSSL).

A reload (SIGHUP) builds a new context for each TLS listener, and the
spawner it starts forks every later TLS worker from it: warm_reloaded runs
a few rounds through each new context in the supervisor, before that
fork, or each such worker copied some 10-25 pages more than one forked
before the reload (the new certificate and key, and what OpenSSL fetches
for a key of another type).
"""

from __future__ import annotations

import array
import contextlib
import dataclasses
import os
import selectors
import socket
import ssl
import time
from collections.abc import Sequence

from forkchat import config, ipc, log as logsetup
from forkchat.worker import READ_BYTES, Worker

_READ = selectors.EVENT_READ

# WARM_UP_ROUNDS whole connections, in-process: a socket pair for the
# client, and for the broker a listener of our own that _WarmBroker
# answers from the worker's own loop.  The warm-up leaves nothing behind:
# its descriptors are closed, its log lines written to the null device,
# its objects garbage.
WARM_UP_ROUNDS = 16
_WARM_UP_INPUT = (b"NICK warm\r\nUSER warm 0 * :up\r\nJOIN #warm\r\n"
                  b"PRIVMSG #warm :up\r\nPING :warm\r\nQUIT\r\n")
# A round's bound, should its loop ever wait (it never has to): its
# timers are due by then, and close the connection.
_WARM_UP_LIMIT_S = 1.0
# At a reload, RELOAD_ROUNDS rounds through each new TLS context (some
# 3 ms each; one saved as many pages as four), run by the serving
# supervisor: a context whose round ever waited is left at RELOAD_LIMIT_S (its
# timers), and no round starts after RELOAD_BUDGET_S.
RELOAD_ROUNDS = 1
RELOAD_LIMIT_S = 0.1
RELOAD_BUDGET_S = 0.2
# A TLS connection ended without the server's word on it: no alert, no
# refusal to report.
_CUT = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


def warm_up(rounds: int = WARM_UP_ROUNDS, cfg: config.Config | None = None,
            tls: Sequence[ssl.SSLContext] = (), limit_s: float = _WARM_UP_LIMIT_S,
            budget_s: float | None = None) -> list[tuple[ssl.SSLContext, str]]:
    """Run `rounds` connections through a Worker (see WARM_UP_ROUNDS),
    then, given the TLS listeners' contexts, as many over TLS, through
    each context in turn (each at least once).  The contexts are only
    used, as a worker uses its own: no setting of theirs changes, and no
    reference to them is kept.

    Out of descriptors, the rest are skipped (all of them, if the null
    device its lines go to cannot be opened): it only saves memory.  So
    are they once a round failed otherwise or has taken as long as its
    timers, `limit_s` (it waited, as it never has to), for the server's
    start waits for them all; and with a `budget_s`, once the rounds have
    taken that long together.

    Returns the contexts whose round the server's side refused the
    handshake through, each with OpenSSL's reason (a certificate no
    client can use, such as a DSA one: no cipher to share).  The later
    rounds of a refused context are skipped, the other contexts' run, so
    that each one is warmed or told of, the first one refused or not."""
    cfg = cfg or config.Config()
    limits = dataclasses.replace(cfg.limits, registration_timeout=limit_s,
                                 ping_interval=limit_s, ping_timeout=limit_s)
    cfg = dataclasses.replace(cfg, limits=limits)
    tls_rounds = [tls[index % len(tls)] for index in range(max(rounds, len(tls)))] if tls else []
    refused: list[tuple[ssl.SSLContext, str]] = []
    first = time.monotonic()
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(logsetup.written_nowhere())
        except OSError:     # no descriptor left even for the null device
            return refused
        client_tls = _client_context() if tls_rounds else None
        for context in [None] * rounds + tls_rounds:
            if context is not None and any(context is done for done, _ in refused):
                continue
            started = time.monotonic()
            try:
                _warm_connection(cfg, context, client_tls)
            except _CUT:
                return refused      # (closed amid it, as at its deadline: not refused)
            except ssl.SSLError as error:   # (the client's side, told the server's alert)
                assert context is not None
                refused.append((context, error.reason or str(error)))
            except OSError:
                return refused
            now = time.monotonic()
            if now - started >= limit_s or (budget_s is not None and now - first >= budget_s):
                return refused
    return refused


def warm_reloaded(contexts: Sequence[ssl.SSLContext]) -> list[tuple[ssl.SSLContext, str]]:
    """The new contexts of a reload, warmed in the serving supervisor
    before it forks the spawner that serves them (see RELOAD_ROUNDS):
    the code is warm already, only their TLS rounds run.  Returns those
    refused, as warm_up does."""
    return warm_up(rounds=0, tls=[context for context in contexts for _ in range(RELOAD_ROUNDS)],
                   limit_s=RELOAD_LIMIT_S, budget_s=RELOAD_BUDGET_S)


def _client_context() -> ssl.SSLContext:
    """The context of the TLS rounds' clients: a socket pair has no name
    to check the certificate against, and the server's side is what is
    warmed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _warm_connection(cfg: config.Config, tls: ssl.SSLContext | None = None,
                     client_tls: ssl.SSLContext | None = None) -> bytes:
    """One client's connection, over the real loop: registration and the
    welcome, a JOIN, a message each way, a PING, the QUIT; with `tls`
    (the listener's context) over TLS, its client using `client_tls`.
    Returns what its client was sent."""
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        listener.bind(f"\0forkchat-warm-{os.getpid()}-{os.urandom(8).hex()}")
        listener.listen(1)
        client, ours = socket.socketpair()
        stack.enter_context(client)
        stack.enter_context(ours)
        lifeline, held = os.pipe()      # (its write end held open: no EOF)
        stack.callback(os.close, lifeline)
        stack.callback(os.close, held)
        worker = Worker(ours, "127.0.0.1", "irc", 0, cfg, listener.getsockname(), tls)
        stack.callback(worker.link.close)
        stack.callback(worker.selector.close)
        stack.callback(lambda: worker.sock.close())     # the TLS socket start wraps it in
        broker = stack.enter_context(_WarmBroker(worker, listener))
        if tls is None:
            client.sendall(_WARM_UP_INPUT)
        else:
            client = stack.enter_context(_WarmTlsClient(worker, client, client_tls))
        worker.start(lifeline)
        if worker.link.sock is None:
            # Out of descriptors for the link (or a stranger filled the
            # listener's queue): the round would only wait for its timers.
            raise OSError("warm-up: no broker link")
        limit_s = min(cfg.limits.registration_timeout, _WARM_UP_LIMIT_S)     # (its timers)
        deadline = time.monotonic() + 2 * limit_s
        while not worker.done and time.monotonic() < deadline:
            worker._step()
        if not worker.done:
            # Its timers are late: the process was not run for a while (a
            # busy machine, a paused VM).  Nobody waits for its QUIT, so
            # _finish waits for no answer to it (a second, else).
            worker.stopping = True
            worker.close("warm-up over")
        worker._flush_link()       # its BYE, answered before _finish waits for that
        broker.on_frames(_READ)
        worker._finish()
        if isinstance(client, _WarmTlsClient):
            return client.rest()
        client.setblocking(False)
        return client.recv(READ_BYTES)


class _WarmTlsClient:
    """The client of a TLS warm-up connection: its handshake and its lines,
    driven in the worker's own loop as the worker answers."""

    def __init__(self, worker: Worker, sock: socket.socket,
                 context: ssl.SSLContext | None) -> None:
        assert context is not None
        sock.setblocking(False)
        self.worker = worker
        # No server name: ssl.py would encode it with the idna codec, a
        # module first imported then, and the supervisor may no longer read
        # the interpreter's files (it dropped root).  The server has no use
        # for the name a real client sends.
        self.sock = context.wrap_socket(sock, do_handshake_on_connect=False)
        self.handshaking = True
        self.received = bytearray()
        self.on_ready(_READ)            # its hello, before the worker starts
        worker.selector.register(self.sock, _READ, self.on_ready)

    def __enter__(self) -> _WarmTlsClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.sock.close()

    def on_ready(self, mask: int) -> None:
        if self.handshaking:
            try:
                self.sock.do_handshake()
            except ssl.SSLWantReadError:
                return
            self.handshaking = False
            self.sock.sendall(_WARM_UP_INPUT)
        self._read()

    def _read(self) -> None:
        """Take what was sent; out of the worker's loop once it ends."""
        while True:
            try:
                data = self.sock.recv(READ_BYTES)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                data = b""
            if not data:
                self.worker.selector.unregister(self.sock)
                return
            self.received += data

    def rest(self) -> bytes:
        """All the client was sent, once the worker has closed.

        Raises:
            ssl.SSLError: the worker's side refused the handshake (its
                alert, which the worker sent as it closed, read now).
            OSError: the handshake never finished otherwise.
        """
        if self.handshaking:
            with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLWantWriteError, *_CUT):
                self.sock.do_handshake()
            raise OSError("warm-up: the TLS handshake failed")
        with contextlib.suppress(KeyError):     # (out of the loop already)
            self._read()
        return bytes(self.received)


class _WarmBroker:
    """The broker's side of a warm-up connection: each frame answered as
    the broker answers a client's first steps, in the worker's own loop."""

    def __init__(self, worker: Worker, listener: socket.socket) -> None:
        self.worker = worker
        self.listener = listener
        self.conn: socket.socket | None = None
        self.reader = ipc.FrameReader()
        self.nick = b"*"
        worker.selector.register(listener, _READ, self.on_accept)

    def __enter__(self) -> _WarmBroker:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.conn is not None:
            self.conn.close()

    def on_accept(self, mask: int) -> None:
        conn, _ = self.listener.accept()
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        if array.array("i", creds)[0] != os.getpid():
            conn.close()                # not our worker's link: someone else's connect
            return
        self.worker.selector.unregister(self.listener)
        # Read once more after the loop, whatever its worker sent: a
        # blocking read of a link with nothing more to come never returned.
        conn.setblocking(False)
        self.conn = conn
        self.worker.selector.register(conn, _READ, self.on_frames)

    def on_frames(self, mask: int) -> None:
        if self.conn is None:
            return
        try:
            data = self.conn.recv(READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        out = b"".join(self.answer(kind, payload) for kind, payload in self.reader.feed(data))
        if out:
            self.conn.sendall(out)

    def answer(self, kind: int, payload: bytes) -> bytes:
        if kind == ipc.Kind.SYNC:
            return ipc.encode(ipc.Kind.SYNC, payload)
        if kind == ipc.Kind.REGISTER:
            lines = [self.numeric(code, b":warm") for code in _WARM_WELCOME]
            return b"".join(ipc.encode(ipc.Kind.REPLY, line) for line in lines) \
                + ipc.encode_json(ipc.Kind.UPDATE, {"registered": True})
        if kind != ipc.Kind.REQUEST:
            return b""
        command, _, rest = payload.partition(b" ")
        if command == b"NICK":
            self.nick = rest
            return ipc.encode_json(ipc.Kind.UPDATE, {"nick": rest.decode()})
        if command == b"JOIN":
            prefix = b":" + self.nick + b"!warm@127.0.0.1 "
            return (ipc.encode(ipc.Kind.DELIVER, prefix + payload + b"\r\n")
                    + ipc.encode(ipc.Kind.REPLY, self.numeric("353", b"= " + rest + b" :@warm"))
                    + ipc.encode(ipc.Kind.REPLY, self.numeric("366", rest + b" :End"))
                    + ipc.encode_json(ipc.Kind.UPDATE, {"rooms": {rest.decode(): "@"}}))
        if command == b"PRIVMSG":
            return ipc.encode(ipc.Kind.DELIVER, b":other!o@127.0.0.1 " + payload + b"\r\n")
        return b""

    def numeric(self, code: str, text: bytes) -> bytes:
        return b":warm.up " + code.encode() + b" " + self.nick + b" " + text + b"\r\n"


# The welcome burst's numerics, as the broker sends them after REGISTER.
_WARM_WELCOME = ("001", "002", "003", "004", "005", "005", "251", "252", "254", "255",
                 "265", "266", "375", "372", "376")
