"""Socket activation with several sockets: each serves the [[listen]] entry of its port.

systemd names every ListenStream= of one .socket unit alike, so the common
pair ListenStream=6667 plus ListenStream=6697 passes two sockets named "irc".
The server here is started as systemd would start it: the listening sockets
at fds 3 and up, LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES set by a small
launcher that then executes the server.
"""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import sys
import threading

import pytest

from tests.integration.test_tutorial import TutorialClient
from tests.integration.test_tls import TlsClient, certs, make_cert   # noqa: F401 (fixture)
from tests.support.ircclient import IrcTestClient
from tests.support.server import ServerProcess, run_forkchat

# Moves the inherited sockets (fds in argv[1]) to 3, 4, ... out of each
# other's way, sets the variables sd_listen_fds(3) reads, and becomes the server.
LAUNCHER = """\
import fcntl, os, sys
fds = [int(fd) for fd in sys.argv[1].split(",")]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
for number, fd in enumerate(high, start=3):
    os.dup2(fd, number)
    os.close(fd)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(len(fds)),
                  LISTEN_FDNAMES=sys.argv[2])
os.execv(sys.executable, [sys.executable] + sys.argv[3:])
"""


class ActivatedServer(ServerProcess):
    """A ServerProcess handed `sockets` as systemd would, named `names`."""

    def __init__(self, sockets: list[socket.socket], names: str, config_text: str) -> None:
        super().__init__(config_text=config_text, listen=[])
        self.sockets = sockets
        self.names = names

    def command(self) -> list[str]:
        fds = ",".join(str(sock.fileno()) for sock in self.sockets)
        server = super().command()[1:]           # without the interpreter
        return [sys.executable, "-c", LAUNCHER, fds, self.names] + server

    def start(self, expect_listeners: int | None = None) -> "ActivatedServer":
        self.proc = subprocess.Popen(self.command(), stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     pass_fds=[sock.fileno() for sock in self.sockets])
        for sock in self.sockets:
            sock.close()                         # the server's now, as systemd's would be
        threading.Thread(target=self._read_stderr, daemon=True).start()
        wanted = expect_listeners or len(self.sockets)
        self.wait_for_log(lambda: len(self.ports) >= wanted, "listening on")
        return self


def listening_socket() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock, sock.getsockname()[1]


def entry(port: int, tls: tuple[str, str] | None = None) -> str:
    text = f'[[listen]]\naddress = "127.0.0.1"\nport = {port}\n'
    if tls:
        text += f'tls_cert = "{tls[0]}"\ntls_key = "{tls[1]}"\n'
    return text


@pytest.fixture
def activated():
    started: list[ActivatedServer] = []

    def start(sockets, names, config_text) -> ActivatedServer:
        server = ActivatedServer(sockets, names, config_text)
        started.append(server)
        return server.start()
    yield start
    for server in started:
        server.stop()


def speaks_tls_and_plain(cert: str, tls_port: int, plain_port: int) -> None:
    """A TLS client registers on one port, a plain one on the other, and they talk."""
    secure = TlsClient(tls_port, cert)
    secure.register("secure")
    secure.join("#pair")
    plain = IrcTestClient(plain_port)
    plain.register("plain")
    plain.join("#pair")
    secure.expect("JOIN")
    plain.send("PRIVMSG #pair :over tcp")
    assert secure.expect("PRIVMSG").params[-1] == "over tcp"
    secure.close()
    plain.close()


@pytest.mark.parametrize("tls_first", [False, True], ids=["plain-entry-first", "tls-entry-first"])
def test_two_sockets_named_irc_take_the_entries_of_their_ports(activated, certs, tls_first):
    """ListenStream=6667 and ListenStream=6697 in one unit: both sockets are
    named irc.  They took the first irc entry, so the TLS port spoke plain
    text (plain entry first) or the plain port TLS (TLS entry first); each
    serves the entry of its own port, and still does after a reload."""
    cert, key = make_cert(certs, "pair")
    plain_sock, plain_port = listening_socket()
    tls_sock, tls_port = listening_socket()
    entries = [entry(plain_port), entry(tls_port, (cert, key))]
    text = "[server]\nallow_root = true\n" + "".join(entries[::-1] if tls_first else entries)
    server = activated([plain_sock, tls_sock], "irc:irc", text)
    assert sorted(server.ports) == sorted([("127.0.0.1", plain_port, "irc"),
                                           ("127.0.0.1", tls_port, "irc+tls")])
    speaks_tls_and_plain(cert, tls_port, plain_port)
    mark = server.log_length()
    server.signal(signal.SIGHUP)         # the certificates are read again, of the same entries
    server.wait_for_text("configuration reloaded", start=mark)
    speaks_tls_and_plain(cert, tls_port, plain_port)


def test_a_socket_whose_port_no_entry_names_is_not_given_another_sockets_tls(activated, certs):
    """A [[listen]] entry only for the TLS port (the plain one was the
    default before): the plain port took that entry by name and spoke TLS."""
    cert, key = make_cert(certs, "alone")
    plain_sock, plain_port = listening_socket()
    tls_sock, tls_port = listening_socket()
    text = "[server]\nallow_root = true\n" + entry(tls_port, (cert, key))
    server = activated([plain_sock, tls_sock], "irc:irc", text)
    assert ("127.0.0.1", plain_port, "irc") in server.ports
    speaks_tls_and_plain(cert, tls_port, plain_port)


def test_unnamed_sockets_take_protocol_and_tls_from_the_entry_of_their_port(activated, certs):
    """Without FileDescriptorName= one unit can hold every kind of listener:
    each socket is matched by its port, whatever the order of the entries."""
    cert, key = make_cert(certs, "mixed")
    sockets, ports = zip(*(listening_socket() for _ in range(3)))
    text = ("[server]\nallow_root = true\n" + entry(ports[2], (cert, key))
            + f'[[listen]]\nport = {ports[1]}\nprotocol = "tutorial"\n' + entry(ports[0]))
    server = activated(list(sockets), "forkchat.socket", text)
    assert sorted(server.ports) == sorted([("127.0.0.1", ports[0], "irc"),
                                           ("127.0.0.1", ports[1], "tutorial"),
                                           ("127.0.0.1", ports[2], "irc+tls")])
    speaks_tls_and_plain(cert, ports[2], ports[0])
    tutorial = TutorialClient(ports[1])
    assert tutorial.recv_until(b"NICK") == b"NICK"      # the tutorial dialect's greeting
    tutorial.close()


def test_a_plain_socket_refuses_a_tls_handshake_after_the_match(activated, certs):
    """The other half of the mix-up, seen from a TLS client: the plain port
    does not speak TLS, however many TLS entries the file has."""
    cert, key = make_cert(certs, "refused")
    plain_sock, plain_port = listening_socket()
    tls_sock, tls_port = listening_socket()
    text = "[server]\nallow_root = true\n" + entry(tls_port, (cert, key)) + entry(plain_port)
    activated([plain_sock, tls_sock], "irc:irc", text)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        TlsClient(plain_port, cert)


def test_a_passed_descriptor_that_is_not_a_socket_is_a_clear_error(tmp_path):
    """A hand-made environment (or a unit with ListenFIFO=) passing a file as
    fd 3 stopped the start with a traceback (OSError: not a socket)."""
    with open(tmp_path / "not-a-socket", "w") as handle:
        proc = subprocess.run([sys.executable, "-c", LAUNCHER, str(handle.fileno()), "irc",
                               "-m", "forkchat", "--state-dir", str(tmp_path / "state")],
                              pass_fds=[handle.fileno()], capture_output=True, text=True,
                              timeout=30)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        "forkchat-server: fd 3 passed by systemd is not a socket (Socket operation on "
        "non-socket)"], proc.stderr


def test_a_passed_unix_socket_is_refused_at_start(tmp_path):
    """ListenStream=/path: the server said "listening on /:t (irc)", and the
    first client stopped it with a traceback (its address has no host)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "forkchat.sock"))
        sock.listen(4)
        proc = subprocess.run([sys.executable, "-c", LAUNCHER, str(sock.fileno()), "irc",
                               "-m", "forkchat", "--state-dir", str(tmp_path / "state")],
                              pass_fds=[sock.fileno()], capture_output=True, text=True,
                              timeout=30)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        "forkchat-server: fd 3 passed by systemd is not a TCP socket (AF_UNIX SOCK_STREAM): "
        "forkchat serves TCP only, give the .socket unit ListenStream=PORT or "
        "ListenStream=ADDRESS:PORT"], proc.stderr


def test_an_empty_listen_serves_the_passed_sockets_as_plain_irc(activated, tmp_path):
    """forkchat.toml(5): `listen = []` names no entry, so a socket systemd
    passes under another name than irc or tutorial is plain IRC.  It was an
    error of the file (which bound nothing outside socket activation), and
    such a server did not start; a reload of the file keeps serving."""
    sock, port = listening_socket()
    server = activated([sock], "forkchat.socket", "listen = []\n[server]\nallow_root = true\n")
    assert server.ports == [("127.0.0.1", port, "irc")]
    client = IrcTestClient(port)
    client.register("passed")
    mark = server.log_length()
    server.signal(signal.SIGHUP)
    assert server.wait_for_text("configuration reloaded", start=mark).endswith(
        " INFO configuration reloaded")
    client.send("PING :still")
    assert client.expect("PONG").params[-1] == "still"
    client.close()


def test_an_empty_listen_without_passed_sockets_stops_the_start_with_why(tmp_path):
    """Outside socket activation it binds nothing: the start says so in one
    line and exits 2, a configuration error no restart cures (the shipped
    unit does not restart on 2); --check-config, run where no socket is
    passed, warns of it without failing a file a socket unit serves."""
    path = tmp_path / "forkchat.toml"
    path.write_text(f'listen = []\n[server]\nallow_root = true\nstate_dir = "{tmp_path}"\n')
    started = run_forkchat("-c", str(path))
    assert (started.returncode, started.stderr) == (2, f"forkchat-server: {EMPTY}\n")
    checked = run_forkchat("-c", str(path), "--check-config")
    assert checked.returncode == 0 and "configuration OK" in checked.stdout
    assert checked.stderr == f"forkchat-server: warning: {EMPTY}\n"


EMPTY = ("listen = [] names no listener: the server serves only the sockets systemd passes, "
         "and without them it does not start (leave listen out for the default, "
         "127.0.0.1:6667)")
