"""forkchat-client in line mode against the real server.

Design section 5: "Not on a terminal (pipes, cron, scripts): line mode. Each
stdin line is sent to the current room; what arrives is printed one event per
line on stdout ... at EOF it quits cleanly after its lines are sent ... and
its exit status says whether it did."
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from tests.conftest import TEST_LIMITS
from tests.support import signals
from tests.support.ircclient import IrcTestClient

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLIENT = [sys.executable, "-m", "forkchat.client.app", "--line"]
WAIT_S = 10.0
STAMP = r"\d\d:\d\d"


def client_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


class LineClient:
    """forkchat-client --line as a child; stdout/stderr lines collected by threads."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(CLIENT + args, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=client_env(), cwd=REPO,
                                     preexec_fn=signals.as_started_by_hand)
        self.out: list[str] = []
        self.err: list[str] = []
        self._cond = threading.Condition()
        for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._collect, args=(stream, lines), daemon=True).start()

    def _collect(self, stream, lines: list[str]) -> None:
        for raw in stream:
            with self._cond:
                lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def wait_for(self, pattern: str, where: str = "out", count: int = 1,
                 timeout: float = WAIT_S) -> list[str]:
        """Wait until `count` lines of stdout (or stderr) match the regex."""
        lines = self.out if where == "out" else self.err
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [line for line in lines if re.search(pattern, line)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {pattern!r} in {where}; out={self.out} err={self.err}")
                self._cond.wait(left)

    def finish(self, timeout: float = 20.0) -> int:
        """Close stdin (EOF) and wait for the exit status."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def line_client():
    made: list[LineClient] = []

    def make(*args: str) -> LineClient:
        client = LineClient(list(args))
        made.append(client)
        return client
    yield make
    for client in made:
        client.kill()


def run_client(args: list[str], stdin: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run(CLIENT + args, input=stdin.encode(), capture_output=True,
                          env=client_env(), cwd=REPO, timeout=timeout)


def watcher_in(registered, room: str, nick: str = "watcher") -> IrcTestClient:
    client = registered(nick)
    client.join(room)
    return client


def expect_privmsg(client: IrcTestClient, sender: str, room: str, text: str) -> None:
    msg = client.expect("PRIVMSG")
    assert (msg.prefix.split("!")[0], msg.params[0], msg.params[-1]) == (sender, room, text)


def test_piped_lines_arrive_in_order_from_the_right_nick(server, registered):
    watcher = watcher_in(registered, "#ops")
    lines = [f"line {n}: backup step done" for n in range(1, 13)]
    result = run_client(["-n", "cron", "-r", "#ops", f"127.0.0.1:{server.port}"],
                        "\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    for text in lines:
        expect_privmsg(watcher, "cron", "#ops", text)
    quit_msg = watcher.expect("QUIT")
    assert quit_msg.prefix.startswith("cron!")


def test_echo_into_a_room_just_works(server, registered):
    """`echo "backup done" | forkchat-client -n cron -r '#ops' host`"""
    watcher = watcher_in(registered, "#ops")
    result = run_client(["-n", "cron", "-r", "ops", f"127.0.0.1:{server.port}"], "backup done")
    assert result.returncode == 0, result.stderr
    expect_privmsg(watcher, "cron", "#ops", "backup done")


def test_room_traffic_is_printed_one_event_per_line(server, registered, line_client):
    client = line_client("-n", "reader", "-r", "#ops", f"127.0.0.1:{server.port}")
    client.wait_for(rf"^{STAMP} \* reader joined #ops$")
    alice = watcher_in(registered, "#ops", "alice")
    client.wait_for(rf"^{STAMP} \* alice joined #ops$")
    alice.send("PRIVMSG #ops :hello there")
    alice.send("PRIVMSG reader :just for you")
    alice.send("NOTICE #ops :a notice")
    alice.send("PRIVMSG #ops :\x01ACTION waves\x01")
    alice.send("NICK alicia")
    alice.send("PART #ops :see you")
    client.wait_for(rf"^{STAMP} <alice> hello there$")
    client.wait_for(rf"^{STAMP} <alice> \[private\] just for you$")
    client.wait_for(rf"^{STAMP} -alice- a notice$")
    client.wait_for(rf"^{STAMP} \* alice waves$")
    client.wait_for(rf"^{STAMP} \* alice is now known as alicia$")
    client.wait_for(rf"^{STAMP} \* alicia left #ops \(see you\)$")
    assert client.finish() == 0


def test_commands_in_line_mode(server, registered, line_client):
    bob = watcher_in(registered, "#other", "bob")
    client = line_client("-n", "scripter", f"127.0.0.1:{server.port}")
    client.wait_for(r"\* scripter joined #lobby")
    client.send("/join #other")
    client.send("now in other")
    client.send("/msg bob private word")
    client.send("/me nods")
    expect_privmsg(bob, "scripter", "#other", "now in other")
    expect_privmsg(bob, "scripter", "bob", "private word")
    expect_privmsg(bob, "scripter", "#other", "\x01ACTION nods\x01")
    client.send("/names #other")
    client.wait_for(r"\* Members of #other: .*bob")
    assert client.finish() == 0


def test_names_of_a_room_of_rooms_and_of_every_room_against_forkchat(server, registered,
                                                                     line_client):
    """forkchat-server ends each room asked for with its 366 and a NAMES
    of every room with one for `*`: the rows print, and an end only for a
    room that listed no one."""
    watcher_in(registered, "#other", "bob")
    client = line_client("-n", "lister", f"127.0.0.1:{server.port}")
    client.wait_for(r"\* lister joined #lobby")
    client.send("/names #other")
    client.wait_for(r"\* Members of #other: @?bob$")
    client.send("/raw NAMES #other,#nowhere,#lobby")
    client.wait_for(r"\* Members of #lobby: @?lister$")
    client.send("/raw NAMES")
    client.wait_for(r"\* Members of #lobby: @?lister$", count=2)
    client.wait_for(r"\* Members of #other: @?bob$", count=3)
    assert client.finish() == 0
    ends = [line for line in client.out if "End of" in line]
    assert len(ends) == 1 and ends[0].endswith(" * #nowhere: End of /NAMES list"), client.out


def test_part_makes_the_next_room_current_at_once(server, registered):
    """forkchat-client(1) LINE MODE: "Leaving the current room makes the next
    joined room current" and nothing is lost: the line after /part goes to
    #lobby although the PART echo comes after it has been read."""
    watcher = watcher_in(registered, "#lobby")
    watcher.join("#x")
    result = run_client(["-n", "lm", f"127.0.0.1:{server.port}"],
                        "ok line\n/join #x\nin x\n/part\nback?\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    expect_privmsg(watcher, "lm", "#lobby", "ok line")
    expect_privmsg(watcher, "lm", "#x", "in x")
    expect_privmsg(watcher, "lm", "#lobby", "back?")


def test_input_from_a_file_or_dev_null(server, registered, tmp_path):
    """`forkchat-client ... < message.txt`: epoll will not watch a regular file
    (nor /dev/null); the lines still go out, and no traceback."""
    watcher = watcher_in(registered, "#lobby")
    message = tmp_path / "message.txt"
    message.write_text("first from a file\nsecond from a file")
    for path in (str(message), os.devnull):
        with open(path, "rb") as stdin:
            result = subprocess.run(CLIENT + ["-n", "filer", f"127.0.0.1:{server.port}"],
                                    stdin=stdin, capture_output=True, env=client_env(),
                                    cwd=REPO, timeout=30)
        assert (result.returncode, result.stderr) == (0, b""), path
    expect_privmsg(watcher, "filer", "#lobby", "first from a file")
    expect_privmsg(watcher, "filer", "#lobby", "second from a file")


def test_closed_stdin_reads_as_empty_input(server, registered):
    """`forkchat-client ... <&-`: no sys.stdin, and fd 0 free for the next file
    opened; it must read as empty input (like /dev/null), not crash."""
    watcher = watcher_in(registered, "#lobby")
    result = subprocess.run(CLIENT + ["-n", "closed", f"127.0.0.1:{server.port}"],
                            stdin=subprocess.DEVNULL, preexec_fn=lambda: os.close(0),
                            capture_output=True, env=client_env(), cwd=REPO, timeout=30)
    assert (result.returncode, result.stderr) == (0, b"")
    got = watcher.expect(lambda m: m.command in ("JOIN", "QUIT") and m.prefix.startswith("closed!"))
    assert got.command == "JOIN"


def test_connection_refused_exits_non_zero_with_one_line():
    # A port held bound but not listening refuses connections, and unlike a
    # stopped server's port, nothing else on the machine can bind it meanwhile.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        result = run_client(["-n", "cron", f"127.0.0.1:{port}"], "lost\n")
    assert result.returncode == 1
    err = result.stderr.decode()
    assert err.count("\n") == 1 and "cannot connect" in err and "Traceback" not in err


def test_wrong_password_is_a_registration_failure(make_server, tmp_path):
    server = make_server(config_text=TEST_LIMITS + '\n[server]\npassword = "sekrit"\n')
    result = run_client(["-n", "cron", f"127.0.0.1:{server.port}"], "hi\n")
    assert result.returncode == 1
    assert result.stderr.decode().count("\n") == 1
    secret = tmp_path / "pw"
    secret.write_text("sekrit\n")
    result = run_client(["-n", "cron", "--password-file", str(secret),
                         f"127.0.0.1:{server.port}"], "hi\n")
    assert result.returncode == 0, result.stderr


def test_the_tutorial_port_is_one_line_naming_the_irc_port_and_nothing_on_stdout(make_server):
    # The tutorial port greets with a bare `NICK`, then refuses the IRC
    # client; the greeting was printed as `HH:MM *  is now known as `.
    server = make_server(extra_args=["--tutorial-listen", "127.0.0.1:0"])
    result = run_client(["-n", "cron", f"127.0.0.1:{server.port_of('tutorial')}"], "hi\n")
    assert result.returncode == 1
    assert result.stdout.decode() == ""
    err = result.stderr.decode()
    assert err.count("\n") == 1 and "use the IRC port" in err and "Traceback" not in err


def test_a_name_starting_with_a_colon_is_refused_and_the_run_goes_on(server, registered):
    # `/msg :alice hi` ended the client with a ValueError traceback.
    watcher = watcher_in(registered, "#lobby")
    result = run_client(["-n", "cron", f"127.0.0.1:{server.port}"],
                        "/msg :alice hi\nstill here\n")
    err = result.stderr.decode()
    assert result.returncode == 1 and "Traceback" not in err
    assert "':alice' cannot be a nick, room or other word of PRIVMSG" in err
    expect_privmsg(watcher, "cron", "#lobby", "still here")


def test_nick_collision_takes_a_suffix(server, registered):
    watcher = watcher_in(registered, "#lobby", "cron")
    result = run_client(["-n", "cron", f"127.0.0.1:{server.port}"], "from the twin\n")
    assert result.returncode == 0, result.stderr
    assert "already in use" in result.stderr.decode()
    msg = watcher.expect("PRIVMSG")
    assert msg.prefix.startswith("cron_!") and msg.params[-1] == "from the twin"


def test_nickname_from_the_first_line_without_n(server, registered):
    watcher = watcher_in(registered, "#lobby")
    result = run_client([f"127.0.0.1:{server.port}"], "piped\nhello from piped\n")
    assert result.returncode == 0, result.stderr
    expect_privmsg(watcher, "piped", "#lobby", "hello from piped")


def test_undeliverable_line_makes_the_exit_status_non_zero(server):
    result = run_client(["-n", "cron", f"127.0.0.1:{server.port}"], "/msg nobody-here hi\n")
    assert result.returncode == 1
    assert "nobody-here" in result.stderr.decode()


def test_reconnects_and_rejoins_after_a_server_restart(make_server, line_client):
    """Design section 5: "Reconnects with backoff and rejoins its rooms"."""
    first = make_server()
    port = first.port
    client = line_client("-n", "stayer", "-r", "#ops", f"127.0.0.1:{port}")
    client.wait_for(r"\* stayer joined #ops")
    first.stop()
    client.wait_for(r"Disconnected: .*reconnecting", where="err")
    second = make_server(listen=[f"127.0.0.1:{port}"])
    client.wait_for(r"\* stayer joined #ops", count=2, timeout=30)
    watcher = IrcTestClient(second.port)
    try:
        watcher.register("watcher")
        watcher.join("#ops")
        client.send("after the restart")
        expect_privmsg(watcher, "stayer", "#ops", "after the restart")
    finally:
        watcher.close()
    assert client.finish() == 0


@pytest.fixture
def state_dir():
    """A room store directory that outlives one server (and that the server,
    having dropped root to nobody, may write)."""
    with tempfile.TemporaryDirectory(prefix="forkchat-state-") as path:
        os.chmod(path, 0o777)
        yield path


def test_rejoins_rooms_with_their_keys_after_a_server_restart(make_server, line_client,
                                                              state_dir):
    """forkchat-client(1): "registers again and rejoins the rooms it was in"; the
    restarted server restores the rooms' keys, so the rejoin must give them: the
    key of our own `/join #vault sesame`, and the one we set with MODE +k."""
    state = ["--state-dir", state_dir]
    first = make_server(extra_args=state)
    port = first.port
    owner = IrcTestClient(port)
    try:
        owner.register("owner")
        owner.join("#vault")
        owner.send("MODE #vault +k sesame")
        owner.expect("MODE")
        client = line_client("-n", "keeper", "-r", "#safe", f"127.0.0.1:{port}")
        client.wait_for(r"\* keeper joined #safe")
        client.send("/join #vault sesame")
        client.wait_for(r"\* keeper joined #vault")
        # The server's reply to this line comes after the PONG that confirms the
        # JOIN above, so the JOIN is not among the lines sent again on return.
        client.send("/raw MODE #safe +k lock")
        client.wait_for(r"\* keeper sets mode \+k lock on #safe")
    finally:
        owner.close()
    first.stop()
    client.wait_for(r"Disconnected: .*reconnecting", where="err")
    make_server(listen=[f"127.0.0.1:{port}"], extra_args=state)
    client.wait_for(r"\* keeper joined #vault", count=2, timeout=30)
    client.wait_for(r"\* keeper joined #safe", count=2)
    assert client.finish() == 0
    assert not [line for line in client.err if "Cannot join" in line], client.err


# ---- TLS: forkchat-server has no TLS listener yet, so a minimal TLS IRC
# ---- server in a thread stands in (it also shows the client needs nothing
# ---- forkchat-specific).

class TinyTlsIrcServer:
    """Registers anyone, answers PING, records PRIVMSG lines; one client at a time."""

    def __init__(self, cert: str, key: str) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.received: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            raw.settimeout(10)
            try:
                with self.context.wrap_socket(raw, server_side=True) as conn:
                    self._session(conn.makefile("rwb"))
            except (ssl.SSLError, OSError):
                pass  # the client refused our certificate: that is a test case

    def _session(self, stream) -> None:
        nick = "*"
        for raw in stream:
            words = raw.decode().rstrip("\r\n").split(" ")
            reply = ""
            if words[0] == "NICK":
                nick = words[1]
            elif words[0] == "USER":
                reply = f":tiny 001 {nick} :Welcome\r\n"
            elif words[0] == "JOIN":
                reply = f":{nick}!u@h JOIN {words[1]}\r\n"
            elif words[0] == "PING":
                reply = f":tiny PONG tiny :{words[-1].lstrip(':')}\r\n"
            elif words[0] == "PRIVMSG":
                self.received.append(" ".join(words))
            elif words[0] == "QUIT":
                reply = "ERROR :bye\r\n"
            if reply:
                stream.write(reply.encode())
                stream.flush()
            if words[0] == "QUIT":
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listener.close()


@pytest.fixture
def tls_server(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    server = TinyTlsIrcServer(cert, key)
    yield server, cert
    server.close()


def test_tls_with_the_server_certificate_trusted(tls_server):
    server, cert = tls_server
    result = run_client(["-n", "secure", "--tls", "--ca-file", cert,
                         f"127.0.0.1:{server.port}"], "over tls\n")
    assert result.returncode == 0, result.stderr
    assert server.received == ["PRIVMSG #lobby :over tls"]


def test_tls_refuses_an_untrusted_certificate(tls_server):
    server, _ = tls_server
    result = run_client(["-n", "secure", "--tls", f"127.0.0.1:{server.port}"], "leak?\n")
    assert result.returncode == 1
    err = result.stderr.decode()
    assert "certificate" in err and err.count("\n") == 1
    assert server.received == []


def test_tls_insecure_skips_the_check(tls_server):
    server, _ = tls_server
    result = run_client(["-n", "secure", "--tls", "--insecure", f"127.0.0.1:{server.port}"],
                        "unchecked\n")
    assert result.returncode == 0, result.stderr
    assert server.received == ["PRIVMSG #lobby unchecked"]


def test_a_raw_quit_ends_the_client_cleanly(server, registered):
    """`/raw QUIT :reason` is leaving, not a dropped link: the user's QUIT
    goes out, the lines behind it do not, and the exit status is 0."""
    watcher = watcher_in(registered, "#lobby")
    result = run_client(["-n", "cron", f"127.0.0.1:{server.port}"],
                        "before\n/raw QUIT :done by hand\nafter\n")
    assert result.returncode == 0, result.stderr
    assert "reconnecting" not in result.stderr.decode()
    expect_privmsg(watcher, "cron", "#lobby", "before")
    msg = watcher.expect("QUIT")
    assert msg.prefix.startswith("cron!") and msg.params[-1] == "Quit: done by hand"


def test_a_refused_oper_names_oper_and_the_reason(make_server):
    """A wrong OPER password, then the server's back-off refusal: each says on
    stderr that OPER was refused and why, and the exit status is 1."""
    server = make_server(config_text=TEST_LIMITS + '\n[[operators]]\nname = "admin"\n'
                                                   'password = "pw"\n')
    result = run_client(["-n", "cron", f"127.0.0.1:{server.port}"],
                        "/oper admin wrong\n/oper admin pw\n")
    assert result.returncode == 1
    err = result.stderr.decode().splitlines()
    assert err[0] == "forkchat-client: OPER refused: Password incorrect", err
    assert re.fullmatch(r"forkchat-client: OPER refused: Too soon after a failed OPER"
                        r" attempt, try again in \d+ s", err[1]), err
    assert err[2:] == ["forkchat-client: 2 line(s) refused or not delivered"], err


@pytest.mark.timeout(120)
def test_a_restart_in_the_middle_of_a_long_input_repeats_only_a_few_lines(make_server,
                                                                          line_client):
    """A block of input read in one go had one confirmation at its end, so a
    restart part-way resent every line sent so far; now only the last few.
    (16 lines sent before the restart: more than the 10 allowed again, so
    a resend of all still fails; each line past the client's burst of 8
    costs 0.6 s of its pacing, twice.)"""
    total, cut = 26, 16
    first = make_server()
    port = first.port
    client = line_client("-n", "bulk", "-r", "#ops", f"127.0.0.1:{port}")
    client.wait_for(r"\* bulk joined #ops")
    watcher = IrcTestClient(first.port)
    try:
        watcher.register("watcher")
        watcher.join("#ops")
        assert client.proc.stdin is not None
        client.proc.stdin.write(b"".join(b"line %d\n" % n for n in range(1, total + 1)))
        client.proc.stdin.flush()
        for number in range(1, cut + 1):
            expect_privmsg(watcher, "bulk", "#ops", f"line {number}")
    finally:
        watcher.close()
    first.stop()
    # After two refused retries the next is 4 s away: time for the watcher
    # to be in #ops before the client is back and resends (else it sees less).
    client.wait_for(r"Connection refused; reconnecting in 4 s", where="err")
    second = make_server(listen=[f"127.0.0.1:{port}"])
    watcher = IrcTestClient(second.port)
    try:
        watcher.register("watcher")
        watcher.join("#ops")
        again: list[str] = []
        while f"line {total}" not in again:
            msg = watcher.expect(lambda m: m.command == "PRIVMSG", 30)
            again.append(msg.params[-1])
    finally:
        watcher.close()
    repeated = [line for line in again if int(line.split()[1]) <= cut]
    assert len(repeated) <= 10, again   # a barrier every 8 lines, and one in flight
    assert client.finish() == 0


def start_piped(line_client, server, watcher, lines: list[str]) -> LineClient:
    """A client whose stdin stays open, the lines written in one go; back
    once the watcher has the first, so the client has read them all."""
    client = line_client("-n", "cron", "-r", "#ops", f"127.0.0.1:{server.port}")
    client.wait_for(r"\* cron joined #ops")
    assert client.proc.stdin is not None
    client.proc.stdin.write("".join(line + "\n" for line in lines).encode())
    client.proc.stdin.flush()
    expect_privmsg(watcher, "cron", "#ops", lines[0])
    return client


def received_until_quit(watcher: IrcTestClient, nick: str = "cron") -> tuple[list[str], str]:
    """The texts the watcher gets from `nick`, and the reason of its QUIT."""
    texts: list[str] = []
    while True:
        msg = watcher.expect(lambda m: m.command in ("PRIVMSG", "QUIT"), 20)
        assert msg.prefix.startswith(nick + "!"), msg
        if msg.command == "QUIT":
            return texts, msg.params[-1]
        texts.append(msg.params[-1])


@pytest.mark.parametrize("signum, status, reason", [
    (signal.SIGTERM, 0, "Terminated"), (signal.SIGINT, 130, "Interrupted")])
def test_a_signal_sends_the_queued_lines_then_quits(server, registered, line_client,
                                                   signum, status, reason):
    """`timeout 60 forkchat-client ... < file`: SIGTERM ended the client at
    once, the lines still paced in its queue lost and no QUIT; Ctrl+C sent
    the QUIT but dropped the queue too.  Now both end as EOF does."""
    watcher = watcher_in(registered, "#ops")
    lines = [f"line {n}" for n in range(1, 13)]     # 8 at once, 4 paced: within DRAIN_S
    client = start_piped(line_client, server, watcher, lines)
    client.proc.send_signal(signum)
    texts, said = received_until_quit(watcher)
    assert texts == lines[1:]
    assert said.endswith(reason)
    assert client.proc.wait(WAIT_S) == status
    assert not any("Traceback" in line for line in client.err), client.err


def test_a_signal_counts_the_lines_it_could_not_send(server, registered, line_client):
    """What the paced queue cannot send within DRAIN_S is dropped, counted on
    stderr, and the exit status is 1: the run did not deliver everything."""
    watcher = watcher_in(registered, "#ops")
    lines = [f"line {n}" for n in range(1, 41)]     # 40 lines take ~20 s at the pace
    client = start_piped(line_client, server, watcher, lines)
    client.proc.send_signal(signal.SIGTERM)
    texts, said = received_until_quit(watcher)
    assert said.endswith("Terminated")
    assert client.proc.wait(WAIT_S) == 1
    [complaint] = client.wait_for(r"not sent", where="err")
    dropped = int(re.search(r"(\d+) line\(s\) not sent: SIGTERM", complaint).group(1))
    assert texts == lines[1:len(lines) - dropped] and dropped > 0


@pytest.mark.parametrize("stdout", ["full", "closed pipe"])
def test_output_that_cannot_be_written_fails_the_run_but_sends_the_lines(server, registered,
                                                                         stdout):
    """`forkchat-client ... > /dev/full` and `... | head -0` lost every event
    without a word and exited 0; the lines piped in still go out."""
    watcher = watcher_in(registered, "#ops")
    if stdout == "full":
        target, reason = os.open("/dev/full", os.O_WRONLY), "No space left on device"
    else:
        reader, target = os.pipe()
        os.close(reader)
        reason = "Broken pipe"
    try:
        result = subprocess.run(CLIENT + ["-n", "lost", "-r", "#ops", f"127.0.0.1:{server.port}"],
                                input=b"one\ntwo\n", stdout=target, stderr=subprocess.PIPE,
                                env=client_env(), cwd=REPO, timeout=30)
    finally:
        os.close(target)
    assert (result.returncode, result.stderr.decode()) == (
        1, f"forkchat-client: cannot write to standard output: {reason}\n")
    expect_privmsg(watcher, "lost", "#ops", "one")
    expect_privmsg(watcher, "lost", "#ops", "two")
