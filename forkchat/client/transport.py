"""One TCP (optionally TLS) link inside the caller's selector: lines in and out.

The IRC session (`connection.Connection`) never touches a socket: it asks a
Link to open, write lines and close, and hears back through three callbacks:
`on_open()` once connected (and TLS-verified), `on_line(bytes)` per received
line, `on_lost(reason)` when the link is gone or could not be made, with a
sentence fit for the user.  Nothing blocks except name resolution: connect
and the TLS handshake are driven by selector events, and writes go through a
buffer flushed when the socket is writable.
"""

from __future__ import annotations

import errno
import os
import re
import selectors
import socket
import ssl
from typing import Any, Callable

RECV_BYTES = 65536
MAX_INBUF_BYTES = 65536        # a "line" longer than this is garbage: dropped
# Bytes written and not yet taken by the socket, past which the server is
# taken as not reading (our lines are paced: a live server never lets this
# much wait); its PINGs' answers piled up here without end.
MAX_OUTBUF_BYTES = 1 << 20
STALLED = "the server stopped reading what the client sends"


def tls_context(ca_file: str | None, insecure: bool) -> ssl.SSLContext:
    """A verifying client context, or a non-verifying one with --insecure."""
    context = ssl.create_default_context(cafile=ca_file)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


# OpenSSL's reasons that have a usual cause, in words; the others lose
# their "[SSL: CODE]" and "(_ssl.c:1006)" wrapping.
TLS_REASONS = {
    "WRONG_VERSION_NUMBER":
        "the server does not speak TLS on this port (drop --tls, or use its TLS port)",
    # A close before the server's hello: forkchat-server refusing a connection
    # on a TLS port (max_clients_per_ip, say) can tell it no reason in clear.
    "UNEXPECTED_EOF_WHILE_READING":
        "the server closed the connection during the handshake (it may be "
        "refusing connections now)",
}


def _tls_words(exc: ssl.SSLError) -> str:
    """OpenSSL's reason in words an IRC user can act on."""
    if exc.reason in TLS_REASONS:
        return TLS_REASONS[exc.reason]
    if isinstance(exc, ssl.SSLEOFError):     # (OpenSSL 1.1: no reason code)
        return TLS_REASONS["UNEXPECTED_EOF_WHILE_READING"]
    text = re.sub(r"^\[SSL: [A-Z0-9_]+\] |\s*\(_ssl\.c:\d+\)$", "", str(exc))
    return text or str(exc)


# What to do about a certificate that did not verify, by OpenSSL's verify
# code: a CA file cures only an unknown issuer, not a wrong name or a date.
NAME_ADVICE = "connect by a name the certificate is for, or use --insecure to skip the check"
DATE_ADVICE = "check the clock here; else the server's certificate needs renewing"
VERIFY_ADVICE = {
    9: DATE_ADVICE,             # X509_V_ERR_CERT_NOT_YET_VALID
    10: DATE_ADVICE,            # X509_V_ERR_CERT_HAS_EXPIRED
    62: NAME_ADVICE,            # X509_V_ERR_HOSTNAME_MISMATCH
    64: NAME_ADVICE,            # X509_V_ERR_IP_ADDRESS_MISMATCH
}
CA_ADVICE = "use --ca-file, or --insecure to skip the check"


def _untrusted_words(exc: ssl.SSLCertVerificationError) -> str:
    """Why the certificate was refused, and what cures that."""
    reason = (exc.verify_message or _tls_words(exc)).rstrip(".")
    return f"{reason} ({VERIFY_ADVICE.get(exc.verify_code, CA_ADVICE)})"


# A name that cannot even be asked for: a label empty or over 63 bytes.
BAD_NAME = "not a host name (an empty part, or a part over 63 letters)"


class Link:
    """A connection attempt and, once made, the connection."""

    def __init__(self, sel: selectors.BaseSelector, host: str, port: int,
                 tls: ssl.SSLContext | None, on_open: Callable[[], None],
                 on_line: Callable[[bytes], None], on_lost: Callable[[str], None]) -> None:
        self._sel = sel
        self._host, self._port = host, port
        self._tls = tls
        self._on_open, self._on_line, self._on_lost = on_open, on_line, on_lost
        self._sock: socket.socket | None = None
        self._addrs: list[tuple[Any, ...]] = []
        self._inbuf = bytearray()
        self._skipping = False      # dropping the rest of an over-long line
        self._out = bytearray()
        self._ready = False

    @property
    def address(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self._port}"

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    # ---- connecting -------------------------------------------------------------

    def open(self) -> None:
        """Resolve the host and start a non-blocking connect to its first address."""
        self.close()
        try:
            self._addrs = socket.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)
        except OSError as exc:  # socket.gaierror and friends
            self._on_lost(f"cannot resolve {self._host}: {exc.strerror or exc}")
            return
        except UnicodeError:    # the IDNA encoding of the name: 'chat..example.org'
            self._on_lost(f"cannot resolve {self._host}: {BAD_NAME}")
            return
        self._try_next_address("no address")

    def _try_next_address(self, reason: str) -> None:
        """Connect to the next resolved address, or report the last failure."""
        self.close()
        if not self._addrs:
            self._on_lost(f"cannot connect to {self.address}: {reason}")
            return
        family, kind, proto, _, addr = self._addrs.pop(0)
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        # Each line is sent as it is written: with Nagle's algorithm, the
        # second of two lines in quick succession (a paste, a command and
        # its follow-up) waited for the server's acknowledgement of the
        # first, which a server that talks back delays by some 40 ms.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(addr)
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self._try_next_address(os.strerror(err))
            return
        self._sock = sock
        self._sel.register(sock, selectors.EVENT_WRITE, self._on_connected)

    def _on_connected(self, mask: int) -> None:
        assert self._sock is not None
        err = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._try_next_address(os.strerror(err))
        elif self._tls is not None:
            self._start_tls(self._tls)
        else:
            self._opened()

    def _start_tls(self, context: ssl.SSLContext) -> None:
        assert self._sock is not None
        self._sel.unregister(self._sock)
        try:
            self._sock = context.wrap_socket(self._sock, server_hostname=self._host,
                                             do_handshake_on_connect=False)
        except (ssl.SSLError, OSError) as exc:
            self._lose(f"TLS setup failed: {exc}")
            return
        self._sel.register(self._sock, selectors.EVENT_WRITE, self._on_handshake)

    def _on_handshake(self, mask: int) -> None:
        """Drive the TLS handshake one step; it wants read or write next."""
        assert isinstance(self._sock, ssl.SSLSocket)
        try:
            self._sock.do_handshake()
        except ssl.SSLWantReadError:
            self._sel.modify(self._sock, selectors.EVENT_READ, self._on_handshake)
        except ssl.SSLWantWriteError:
            self._sel.modify(self._sock, selectors.EVENT_WRITE, self._on_handshake)
        except ssl.SSLCertVerificationError as exc:
            self._lose(f"TLS certificate of {self.address} not trusted: {_untrusted_words(exc)}")
        except ssl.SSLError as exc:
            self._lose(f"TLS handshake with {self.address} failed: {_tls_words(exc)}")
        except OSError as exc:
            self._lose(f"TLS handshake with {self.address} failed: {exc.strerror or exc}")
        else:
            self._opened()

    def _opened(self) -> None:
        assert self._sock is not None
        self._ready = True
        self._sel.modify(self._sock, selectors.EVENT_READ, self._on_io)
        self._on_open()

    # ---- closing -------------------------------------------------------------------

    def close(self) -> None:
        """Drop the socket and anything buffered; no callback."""
        if self._sock is not None:
            if self._sock in self._sel.get_map():
                self._sel.unregister(self._sock)
            self._sock.close()
            self._sock = None
        self._ready = False
        self._inbuf.clear()
        self._skipping = False
        self._out.clear()

    def _lose(self, reason: str) -> None:
        self.close()
        self._on_lost(reason)

    # ---- reading -------------------------------------------------------------------

    def _on_io(self, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            self._read()
        if mask & selectors.EVENT_WRITE and self._sock is not None:
            self._flush()

    def _read(self) -> None:
        """Read what is there, hand over the complete lines, then report EOF
        if it came.

        One recv; for TLS, whose recv gives one record (16 KiB at most, a
        single line from a server that writes each on its own), records
        until RECV_BYTES are taken, as one plain recv takes, and never less
        than the whole of the last (pending: bytes select cannot see).
        Reading TLS until the socket ran dry read as long as the server kept
        sending: a fast one (a PING storm, a never-ending list) held the
        loop there, the screen frozen, every byte piling up in the buffer
        before a single line was handled.  One record a turn, though, was a
        redraw for each line of such a server: 20000 lines took a minute
        to show, against a second over a plain link.
        """
        assert self._sock is not None
        gone = ""
        taken = 0
        try:
            while True:
                data = self._sock.recv(RECV_BYTES)
                if not data:
                    gone = "server closed the connection"
                    break
                self._inbuf += data
                taken += len(data)
                if not isinstance(self._sock, ssl.SSLSocket):
                    break
                if taken >= RECV_BYTES and not self._sock.pending():
                    break
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except ssl.SSLZeroReturnError:
            gone = "server closed the connection"
        except ssl.SSLError as exc:     # a bad record, an alert: OpenSSL's words, unwrapped
            gone = f"TLS error: {_tls_words(exc)}"
        except OSError as exc:  # reset, timeout: all mean "gone"
            gone = exc.strerror or str(exc)
        self._deliver_lines()
        if gone and self._sock is not None:
            self._lose(gone)

    def _read_last_words(self, reason: str) -> None:
        """A write failed (EPIPE, ECONNRESET): a server that refuses or drops
        us sends `ERROR :why` before closing, and those bytes are still
        readable; deliver them, so the user reads the server's reason rather
        than "Broken pipe"."""
        self._read()
        if self._sock is not None:
            self._lose(reason)

    def _deliver_lines(self) -> None:
        """Hand over complete lines one at a time, taking each out of the
        buffer first: a line whose handling writes, fails and reads the
        server's last words (`_read_last_words`) finds the lines behind it
        still there, in order."""
        while self._sock is not None:  # None: the session closed the link; the rest is moot
            end = self._inbuf.find(b"\n")
            if end < 0:
                break
            raw = bytes(self._inbuf[:end])
            del self._inbuf[:end + 1]
            if self._skipping:
                self._skipping = False     # the tail of the garbage: no line of its own
                continue
            self._on_line(raw.rstrip(b"\r"))
        if len(self._inbuf) > MAX_INBUF_BYTES:
            # Dropped up to its end, not just what has come: the tail that
            # came later was shown as a message of its own (`HELLO world ...`).
            self._inbuf.clear()
            self._skipping = True

    # ---- writing -------------------------------------------------------------------

    def write(self, line: str) -> None:
        """Send one line (CRLF added) as soon as the socket takes it."""
        if self._sock is None or not self._ready:
            return  # not connected yet or any more: the session re-sends what matters
        self._out += (line + "\r\n").encode("utf-8")
        self._flush()
        if self._sock is not None and len(self._out) > MAX_OUTBUF_BYTES:
            self._lose(STALLED)

    def _flush(self) -> None:
        assert self._sock is not None
        try:
            del self._out[:self._sock.send(self._out)]
        except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            pass
        except OSError as exc:  # peer gone: first read what it said before going
            self._read_last_words(exc.strerror or str(exc))
            return
        wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._out else 0)
        if self._sel.get_key(self._sock).events != wanted:
            self._sel.modify(self._sock, wanted, self._on_io)
