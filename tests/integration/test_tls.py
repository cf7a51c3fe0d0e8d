"""IRC over TLS: the handshake happens in the worker, so a bad one costs one worker."""

import os
import shutil
import tempfile
import signal
import socket
import ssl
import struct
import subprocess

import pytest

from tests.integration.chat_helpers import SMALL_SENDQ, flood_until_dropped
from tests.support.ircclient import IrcTestClient


def make_cert(directory, name: str, common_name: str = "localhost") -> tuple[str, str]:
    cert = os.path.join(directory, f"{name}.pem")
    key = os.path.join(directory, f"{name}.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={common_name}", "-addext", f"subjectAltName=DNS:{common_name}",
                    "-keyout", key, "-out", cert], check=True, capture_output=True, timeout=60)
    os.chmod(cert, 0o644)
    os.chmod(key, 0o644)      # read by the server after its drop to nobody
    return cert, key


def tls_config(cert: str, key: str) -> str:
    return (f'[[listen]]\naddress = "127.0.0.1"\nport = 0\ntls_cert = "{cert}"\n'
            f'tls_key = "{key}"\n[[listen]]\naddress = "127.0.0.1"\nport = 0\n')


class TlsClient(IrcTestClient):
    def __init__(self, port: int, cafile: str, rcvbuf: int = 0) -> None:
        """`rcvbuf`: a small kernel receive buffer, for a client that stops reading."""
        context = ssl.create_default_context(cafile=cafile)
        raw = socket.socket()
        if rcvbuf:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(5)
        raw.connect(("127.0.0.1", port))
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        self.timeout = 5.0
        self.buffer = b""
        self.nick = ""
        self.history = []


@pytest.fixture
def certs():
    """A directory the server can still read after its drop to nobody."""
    directory = tempfile.mkdtemp(prefix="forkchat-tls-")
    os.chmod(directory, 0o755)
    yield directory
    shutil.rmtree(directory)


def start_tls_server(make_server, cert, key, extra_config: str = ""):
    """A TLS and a plain IRC listener, from the file (no -l flags)."""
    server = make_server(config_text=tls_config(cert, key) + extra_config, listen=[])
    server.wait_for_log(lambda: len(server.ports) >= 2, "two listeners")
    return server


def tls_port(server) -> int:
    return server.port_of("irc+tls")


def test_tls_happy_path_talks_with_plain_clients(make_server, certs):
    cert, key = make_cert(certs, "one")
    server = start_tls_server(make_server, cert, key)
    secure = TlsClient(tls_port(server), cert)
    secure.register("secure")
    secure.join("#mixed")
    plain = IrcTestClient(server.port_of("irc"))
    plain.register("plain")
    plain.join("#mixed")
    secure.expect("JOIN")
    plain.send("PRIVMSG #mixed :hello over tcp")
    assert secure.expect("PRIVMSG").params[-1] == "hello over tcp"
    secure.send("PRIVMSG #mixed :" + "x" * 400)
    assert plain.expect("PRIVMSG").params[-1] == "x" * 400
    secure.close()
    plain.close()


def test_bad_handshake_and_plain_text_cost_only_their_worker(make_server, certs):
    cert, key = make_cert(certs, "one")
    server = start_tls_server(make_server, cert, key)
    port = tls_port(server)
    witness = TlsClient(port, cert)
    witness.register("witness")
    garbage = socket.create_connection(("127.0.0.1", port), timeout=5)
    garbage.sendall(b"\x16\x03\x01\x00\x05hello-not-tls" * 10)
    garbage.settimeout(5)
    try:
        while garbage.recv(1024):       # an alert at most, then the close
            pass
    except ConnectionResetError:
        pass
    garbage.close()
    plain = IrcTestClient(port)
    # One write: the server closes at the first line, and on a busy machine
    # a second send came after the close and failed with EPIPE.
    plain.send("NICK plain\r\nUSER p 0 * :P")
    with pytest.raises(AssertionError):
        plain.expect("001", 3)
    plain.close()
    server.wait_for_text("TLS handshake failed")
    witness.sync()
    witness.close()


def test_sighup_reloads_the_certificate_for_new_connections(make_server, certs):
    cert, key = make_cert(certs, "one")
    server = start_tls_server(make_server, cert, key)
    port = tls_port(server)
    before = TlsClient(port, cert)
    before.register("before")
    new_cert, new_key = make_cert(certs, "two")
    os.replace(new_cert, cert)
    os.replace(new_key, key)
    mark = server.log_length()
    server.signal(signal.SIGHUP)
    server.wait_for_text("configuration reloaded", start=mark)
    after = TlsClient(port, cert)        # verifies against the new certificate
    after.register("after")
    before.sync()                        # the old connection is untouched
    before.close()
    after.close()


def reset_at_once(port: int, first: bytes) -> None:
    """Connect, maybe send a little, and close with a reset (SO_LINGER 0)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.connect(("127.0.0.1", port))
    if first:
        sock.send(first)
    sock.close()


def test_a_reset_before_the_handshake_costs_nothing(make_server, certs):
    """A reset may reach the worker before it wraps the socket: a failed
    handshake like any other, one log line, no traceback."""
    cert, key = make_cert(certs, "one")
    server = start_tls_server(make_server, cert, key)
    port = tls_port(server)
    witness = TlsClient(port, cert)
    witness.register("witness")
    resets = 12
    for index in range(resets):
        reset_at_once(port, b"\x16\x03\x01\x00\x05hello" if index % 2 else b"")
    server.wait_for_log(lambda: server.log_text().count("TLS handshake failed") >= resets,
                        f"{resets} failed handshakes")
    witness.sync()
    again = TlsClient(port, cert)
    again.register("again")
    witness.close()
    again.close()
    assert "Traceback" not in server.log_text()
    assert "exited with status" not in server.log_text()


def test_stuck_tls_reader_gets_the_error_line_and_whole_lines(make_server, certs):
    """A TLS write that has to wait is retried with the same bytes, so the
    stream is never cut mid-line and the drop is told as on plain IRC."""
    cert, key = make_cert(certs, "one")
    server = start_tls_server(make_server, cert, key, SMALL_SENDQ)
    stuck = TlsClient(tls_port(server), cert, rcvbuf=4096)
    stuck.register("stuck")
    stuck.join("#room")
    alice = IrcTestClient(server.port_of("irc"))
    alice.register("alice")
    alice.join("#room")
    flood_until_dropped(alice, server, "stuck")
    closing = stuck.expect_closed(timeout=10)
    assert stuck.buffer == b"", f"stream cut mid-line: {stuck.buffer[-80:]!r}"
    assert closing[-1].command == "ERROR" and "Max SendQ exceeded" in closing[-1].params[0]
    assert "BAD_LENGTH" not in server.log_text()
    alice.close()
    stuck.close()


def test_the_server_ends_a_tls_session_with_close_notify(make_server, certs):
    """A close without the alert reads as a cut connection: 'unexpected eof'
    (OpenSSL), 'non-properly terminated' (GnuTLS, so WeeChat)."""
    cert, key = make_cert(certs, "one")
    server = start_tls_server(make_server, cert, key)
    context = ssl.create_default_context(cafile=cert)
    raw = socket.create_connection(("127.0.0.1", tls_port(server)), timeout=5)
    with context.wrap_socket(raw, server_hostname="localhost",
                             suppress_ragged_eofs=False) as sock:
        sock.sendall(b"NICK tidy\r\nUSER tidy 0 * :tidy\r\nQUIT :bye\r\n")
        received = b""
        while chunk := sock.recv(4096):       # SSLEOFError without the alert
            received += chunk
    assert b"ERROR :Closing Link: 127.0.0.1 (Quit: bye)" in received


def test_a_plain_text_client_is_told_the_port_speaks_tls(make_server, certs):
    """irssi without -tls, forkchat-client without --tls: one plain ERROR line
    says why, instead of a bare 'connection lost'."""
    cert, key = make_cert(certs, "one")
    server = start_tls_server(make_server, cert, key)
    plain = socket.create_connection(("127.0.0.1", tls_port(server)), timeout=5)
    plain.sendall(b"CAP LS 302\r\nNICK plain\r\nUSER p 0 * :P\r\n")
    received = b""
    while chunk := plain.recv(1024):
        received += chunk
    plain.close()
    assert received == b"ERROR :Closing Link: 127.0.0.1 (This port speaks TLS: connect with TLS)\r\n"
    server.wait_for_text("from 127.0.0.1: TLS handshake failed: WRONG_VERSION_NUMBER")


def test_a_silent_tls_client_is_closed_by_the_registration_timeout(make_server, certs):
    """The handshake counts as registration: a client that never starts it
    (or a plain tutorial client waiting for NICK) is closed, without a
    plain-text word on the TLS port."""
    cert, key = make_cert(certs, "one")
    server = start_tls_server(make_server, cert, key, "[limits]\nregistration_timeout = 1\n")
    silent = socket.create_connection(("127.0.0.1", tls_port(server)), timeout=10)
    assert silent.recv(1024) == b""
    silent.close()
    server.wait_for_text("closing: Registration timed out")


def client_hello() -> bytes:
    """The first flight of a real TLS client."""
    context = ssl.create_default_context()
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO(),
                           server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize("proto", ["irc", "tutorial"])
def test_a_tls_hello_on_a_plain_port_is_refused_at_once(make_server, proto):
    """It drew 'NUL byte' notices and waited out the registration timeout;
    on a tutorial port it became a garbled nickname that joined #lobby."""
    server = make_server(listen=["127.0.0.1:0"], extra_args=["--tutorial-listen", "127.0.0.1:0"])
    hello = socket.create_connection(("127.0.0.1", server.port_of(proto)), timeout=5)
    hello.sendall(client_hello())
    received = b""
    while chunk := hello.recv(1024):
        received += chunk
    hello.close()
    told = b"Closing Link: 127.0.0.1 (This port does not speak TLS: connect without TLS)"
    assert received == (b"ERROR :" + told + b"\r\n" if proto == "irc" else b"NICK" + told)
    server.wait_for_text("closing: TLS handshake on a plain-text port")
    assert "registered as" not in server.log_text()


def test_a_tcp_half_close_under_tls_still_gets_the_replies(make_server, certs):
    """A client that ends its input with a FIN and no close_notify (a relay, a
    script) is answered as on a plain port: OpenSSL 3 took the FIN for an
    attack, failed the session with a decode_error alert, and the client got
    neither its welcome nor its QUIT's ERROR line."""
    cert, key = make_cert(certs, "one")
    server = start_tls_server(make_server, cert, key)
    context = ssl.create_default_context(cafile=cert)
    raw = socket.create_connection(("127.0.0.1", tls_port(server)), timeout=5)
    with context.wrap_socket(raw, server_hostname="localhost",
                             suppress_ragged_eofs=False) as sock:
        sock.sendall(b"NICK halfway\r\nUSER h 0 * :H\r\nQUIT :input done\r\n")
        socket.socket.shutdown(sock, socket.SHUT_WR)     # TCP only: TLS reads on
        received = b""
        while chunk := sock.recv(4096):       # an SSLError with the alert
            received += chunk
    assert b" 001 halfway " in received, received
    assert received.endswith(b"ERROR :Closing Link: 127.0.0.1 (Quit: input done)\r\n")
    assert "Traceback" not in server.log_text()


def test_a_handshake_stalled_midway_is_timed_out_and_logged_so(make_server, certs):
    """A client that sends part of its hello (or all of it, and never its
    Finished) is bounded by registration_timeout like a silent one; the log
    says the handshake was unfinished, where it read as an IRC client that
    never sent NICK."""
    cert, key = make_cert(certs, "one")
    server = start_tls_server(make_server, cert, key, "[limits]\nregistration_timeout = 1\n")
    hello = client_hello()
    halves = []
    for first in (hello[:20], hello):
        stalled = socket.create_connection(("127.0.0.1", tls_port(server)), timeout=10)
        stalled.sendall(first)
        halves.append(stalled)
    for stalled in halves:
        while stalled.recv(4096):         # the server's hello, for the whole one
            pass
        stalled.close()
    server.wait_for_log(lambda: server.log_text().count(
        "closing: Registration timed out (TLS handshake unfinished)") == 2, "two timeouts")
