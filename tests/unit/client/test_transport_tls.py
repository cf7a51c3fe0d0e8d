"""transport: the words a user reads when a TLS connection cannot be made."""

from __future__ import annotations

import selectors
import socket
import ssl
import subprocess
import threading
import time

import pytest

from forkchat.client import connection, transport


def refusal(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    error.verify_code, error.verify_message = code, message
    return error


@pytest.mark.parametrize("code, message, cure", [
    (10, "certificate has expired", "check the clock here"),
    (9, "certificate is not yet valid", "check the clock here"),
    (62, "Hostname mismatch, certificate is not valid for 'chat'.", "connect by a name"),
    (20, "unable to get local issuer certificate", "use --ca-file"),
])
def test_each_refusal_names_its_own_cure(code, message, cure):
    """A CA file cures an unknown issuer only; it was advised for all."""
    words = transport._untrusted_words(refusal(code, message))
    assert words.startswith(message.rstrip(".") + " (" + cure), words
    assert ("--ca-file" in words) == (code == 20), words


def test_openssl_words_lose_their_wrapping():
    error = ssl.SSLError(1, "[SSL: TLSV1_ALERT_PROTOCOL_VERSION] tlsv1 alert protocol version "
                            "(_ssl.c:1006)")
    error.reason = "TLSV1_ALERT_PROTOCOL_VERSION"
    assert transport._tls_words(error) == "tlsv1 alert protocol version"


def test_a_close_during_the_handshake_is_said_so():
    error = ssl.SSLEOFError(8, "[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in violation "
                               "of protocol (_ssl.c:1006)")
    error.reason = "UNEXPECTED_EOF_WHILE_READING"
    assert transport._tls_words(error).startswith(
        "the server closed the connection during the handshake")


def tls_listener(tmp_path) -> tuple[ssl.SSLContext, socket.socket]:
    """A server context with a fresh self-signed certificate (CN=elsewhere),
    and a listening socket on 127.0.0.1 for a test's peer thread."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=elsewhere", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    return context, listener


def test_an_unchecked_tls_link_says_so_when_connected(tmp_path):
    """--insecure: the full-screen user read 'Connected to ... as bob' as on a
    checked link, with nothing to tell them apart."""
    context, listener = tls_listener(tmp_path)

    def serve() -> None:
        raw, _ = listener.accept()
        raw.settimeout(5)
        with context.wrap_socket(raw, server_side=True) as peer:
            while b"USER " not in peer.recv(4096):
                pass
            peer.sendall(b":srv 001 bob :Welcome\r\n")
            peer.recv(4096)
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    seen: list = []
    sel = selectors.DefaultSelector()
    settings = connection.Settings(port=listener.getsockname()[1], nick="bob", tls=True,
                                   insecure=True)
    conn = connection.Connection(sel, settings, seen.append)
    conn.start()
    deadline = time.monotonic() + 5
    while not conn.ready and time.monotonic() < deadline and not conn.closed:
        for key_, mask in sel.select(0.05):
            key_.data(mask)
        conn.tick()
    conn.close_now()
    thread.join(5)
    listener.close()
    status = [event.text for event in seen if event.kind == "status"]
    assert status == [f"Connected to 127.0.0.1:{settings.port} as bob (TLS, but the server's "
                      "certificate is not checked: --insecure)"], (status, conn.fatal)


def test_a_broken_tls_record_is_said_without_openssl_wrapping(tmp_path):
    """The link broke on a bad record: the user read '[SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC]
    decryption failed or bad record mac (_ssl.c:2580)' in the 'Disconnected:' line."""
    context, listener = tls_listener(tmp_path)

    def serve() -> None:
        raw, _ = listener.accept()
        raw.settimeout(5)
        with context.wrap_socket(raw, server_side=True) as peer:
            socket.socket.sendall(peer, b"\x17\x03\x03\x00\x10" + b"not encrypted!!!")
            try:
                peer.recv(4096)
            except OSError:
                pass
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    lost: list[str] = []
    sel = selectors.DefaultSelector()
    link = transport.Link(sel, "127.0.0.1", listener.getsockname()[1],
                          transport.tls_context(None, insecure=True),
                          lambda: None, lambda line: None, lost.append)
    link.open()
    deadline = time.monotonic() + 5
    while not lost and time.monotonic() < deadline:
        for key_, mask in sel.select(0.05):
            key_.data(mask)
    link.close()
    thread.join(5)
    listener.close()
    assert lost == ["TLS error: decryption failed or bad record mac"], lost


class TlsServed:
    """A client Link opened to a TLS server thread that runs `write(peer)`,
    sets `sent`, and waits for the client's end; `lines` are what the link
    delivered."""

    def __init__(self, tmp_path, write) -> None:
        context, self.listener = tls_listener(tmp_path)
        self.sent = threading.Event()

        def serve() -> None:
            raw, _ = self.listener.accept()
            raw.settimeout(10)
            with context.wrap_socket(raw, server_side=True) as peer:
                write(peer)
                self.sent.set()
                try:
                    peer.recv(4096)
                except OSError:
                    pass
        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        self.lines: list[bytes] = []
        opened: list[bool] = []
        self.sel = selectors.DefaultSelector()
        self.link = transport.Link(self.sel, "127.0.0.1", self.listener.getsockname()[1],
                                   transport.tls_context(None, insecure=True),
                                   lambda: opened.append(True), self.lines.append,
                                   lambda reason: None)
        self.link.open()
        self.deadline = time.monotonic() + 10
        while not opened and time.monotonic() < self.deadline:
            for key_, mask in self.sel.select(0.05):
                key_.data(mask)
        assert opened

    def close(self) -> None:
        self.link.close()
        self.thread.join(5)
        self.listener.close()


def test_one_read_of_a_tls_link_takes_one_record_not_all_the_server_sent(tmp_path):
    """A TLS link was read until the socket ran dry: a server that kept
    sending (a PING storm) held the client in that loop, its screen frozen
    and every byte piling up unhandled.  One read now takes what one recv
    gives and the rest of its record; select wakes the loop for the rest."""
    line = b"PING :" + b"x" * 90 + b"\r\n"
    served = TlsServed(tmp_path, lambda peer: peer.sendall(line * 20000))  # 2 MB: many reads
    lines = served.lines
    while len(lines) < 20000 and time.monotonic() < served.deadline:
        for key_, mask in served.sel.select(0.05):
            before = len(lines)
            key_.data(mask)
            assert (len(lines) - before) * len(line) <= 2 * transport.RECV_BYTES
    assert len(lines) == 20000 and served.sent.wait(10)
    served.close()


def test_small_tls_records_are_read_many_a_turn(tmp_path):
    """A server that writes each line as a TLS record of its own: one record
    read a turn made a turn, and a full-screen redraw, of each line; 20000
    lines took a minute to show where a plain link took a second.  A turn
    now takes records up to one plain recv's worth."""
    count = 500     # some 40 kB with the records' overhead: within the socket buffers

    def write(peer) -> None:
        for number in range(count):
            peer.sendall(b":al!u@h PRIVMSG #r :line %d\r\n" % number)
    served = TlsServed(tmp_path, write)
    assert served.sent.wait(10)     # all of it here before the first read
    turns = 0
    while len(served.lines) < count and time.monotonic() < served.deadline:
        for key_, mask in served.sel.select(0.05):
            key_.data(mask)
            turns += 1
    assert len(served.lines) == count and served.lines[-1] == b":al!u@h PRIVMSG #r :line 499"
    assert turns <= 10, turns
    served.close()
