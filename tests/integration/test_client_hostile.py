"""forkchat-client against an odd or hostile server: a scripted fake.

A user may point the client at any IRC server, and anyone on ours can send
what other users' clients show.  The fake here registers the client, then
sends the lines a test gives it, raw bytes and all; the full-screen
interface runs in tmux (as in test_client_tui), line mode as a child with
its output read as bytes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading

import pytest

from tests.integration.test_client_tui import HEIGHT, WAIT_S, terminal  # noqa: F401  (a fixture)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLIENT = [sys.executable, "-m", "forkchat.client.app"]
# What must never reach a terminal raw: ESC, the C1 controls (as UTF-8, and
# the CSI byte alone), BEL, and Unicode's bidirectional overrides.
RAW_CONTROLS = ("\x1b", "\x07", "\x9b", "\u202e", "\u2066")

RAW, CLOSE = b"<raw>", b"<close>"
needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is needed to drive the terminal interface")


class FakeServer:
    """One client at a time: NICK and USER get a 001 for `welcome_nick`
    (the client's own when None), then `script`'s lines go out as bytes,
    `{nick}` replaced by that nick; PING gets its PONG.  A script line
    starting with RAW goes out as it is, without CRLF; CLOSE closes the
    connection there.  A line received that is a key of `answers` gets
    that list of lines back.  Lines received are kept."""

    def __init__(self, script: list[bytes], welcome_nick: bytes | None = None,
                 answers: dict[bytes, list[bytes]] | None = None) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.script = script
        self.welcome_nick = welcome_nick
        self.answers = answers or {}
        self.received: list[str] = []
        self.scripted = threading.Event()
        self.conn: socket.socket | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            self.conn, _ = self.listener.accept()
            nick = b"someone"
            for raw in self.conn.makefile("rb"):
                self.received.append(raw.decode("utf-8", "replace").rstrip("\r\n"))
                words = raw.split()
                command = words[0].upper() if words else b""
                if command == b"NICK":
                    nick = words[1]
                elif command == b"USER":
                    nick = self.welcome_nick or nick
                    self._send(b":fake 001 " + nick + b" :Welcome")
                    self._play(nick)
                elif command == b"PING":
                    self._send(b":fake PONG fake :" + words[-1].lstrip(b":"))
                elif command == b"QUIT":
                    break
                for line in self.answers.get(raw.rstrip(b"\r\n"), []):
                    self._send(line.replace(b"{nick}", nick))
        except OSError:
            pass
        finally:
            if self.conn is not None:
                self.conn.close()

    def _play(self, nick: bytes) -> None:
        """Send the script.  CLOSE shuts our side only, and what the client
        sends is still read, until its close: closed with its lines unread,
        the socket would reset, and the client lose what it had not read."""
        assert self.conn is not None
        for line in self.script:
            if line == CLOSE:
                self.conn.shutdown(socket.SHUT_WR)
                break
            if line.startswith(RAW):
                self.conn.sendall(line[len(RAW):].replace(b"{nick}", nick))
            else:
                self._send(line.replace(b"{nick}", nick))
        self.scripted.set()

    def _send(self, line: bytes) -> None:
        assert self.conn is not None
        self.conn.sendall(line + b"\r\n")

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.listener.close()
        self.thread.join(5)


@pytest.fixture
def fake_server():
    made: list[FakeServer] = []

    def make(script: list[bytes], welcome_nick: bytes | None = None,
             answers: dict[bytes, list[bytes]] | None = None) -> FakeServer:
        server = FakeServer(script, welcome_nick, answers)
        made.append(server)
        return server
    yield make
    for server in made:
        server.close()


# Escapes where a server or its users can put them: the server's name, a
# nick, a room's topic, a message, a CTCP, a notice, a numeric's words, the
# 005 tokens, an invalid UTF-8 byte that decodes (as Latin-1) to a C1 CSI.
ESCAPE_LADEN = [
    b":fake\x1b[31m 005 {nick} CHANMODES=\x1b[2J PREFIX=(ov)@+ :are supported \x1b[5m",
    b":{nick}!u@h JOIN #lobby",
    b":fake 332 {nick} #lobby :topic \x1b]0;PWNED\x07 \xe2\x80\xaereversed",
    b":fake 353 {nick} = #lobby :{nick} ev\x1b[1mil @op",
    b":fake 366 {nick} #lobby :End of /NAMES list",
    b":ev\x1b[1mil!u@h PRIVMSG #lobby :hello \x1b[2J\x1b[H \x07 \xc2\x9b32m \xe2\x81\xa6x",
    b":evil!u@h PRIVMSG #lobby :\x01ACTION dances \x1b[7m\x01",
    b":evil!u@h NOTICE #lobby :notice \x1b]2;title\x07",
    b":evil!u@h TOPIC #lobby :new \x1b[35m topic",
    b":fake 401 {nick} \x1b[31mbad :No such nick \x1b[0m",
    b":evil!u@h PRIVMSG #lobby :latin \xe9\x9b[31m",
    b":evil!u@h PRIVMSG #lobby :last scripted line",
]


@needs_tmux
def test_escapes_from_the_server_never_reach_the_screen_raw(fake_server, terminal):
    """Nothing the server sends reaches the terminal as a control: in talk,
    topics, numerics, and in the nick the 001 gives us (the status line
    showed a bidi override raw, which curses passes on)."""
    fake = fake_server(ESCAPE_LADEN, welcome_nick=b"me\xe2\x80\xae\x1b]0;PWNED\x07")
    term = terminal("-n", "me", f"127.0.0.1:{fake.port}")
    lines = term.wait_text("last scripted line")
    screen = "\n".join(lines)
    assert not any(char in screen for char in RAW_CONTROLS), repr(screen)
    assert "^[" not in screen, lines[HEIGHT - 2]      # curses' picture of a raw ESC
    assert "<ev[1mil> hello [2J[H  32m x" in screen
    term.type("/quit")
    term.keys("Enter")
    term.wait_text("CLIENT-EXIT=0")


@contextlib.contextmanager
def line_mode(port: int):
    """forkchat-client in line mode as "me" against the fake server on
    `port`, its three streams piped; killed after if still running."""
    proc = subprocess.Popen(CLIENT + ["--line", "-n", "me", f"127.0.0.1:{port}"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=REPO))
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_escapes_from_the_server_never_reach_line_modes_output(fake_server):
    fake = fake_server(ESCAPE_LADEN, welcome_nick=b"me\xe2\x80\xae\x1b]0;PWNED\x07")
    with line_mode(fake.port) as proc:
        assert fake.scripted.wait(WAIT_S)
        out, err = proc.communicate(b"", timeout=WAIT_S * 2)
    text = (out + err).decode("utf-8")
    assert "last scripted line" in text
    assert not any(char in text for char in RAW_CONTROLS), repr(text)
    assert "Traceback" not in text


# The odd rather than the wicked: a line of 3 MB, invalid UTF-8, numerics
# short of parameters, rooms we never joined, people we do not know, a
# second welcome for another nick, a CTCP request from no one, then a close
# in the middle of a line.  None may end the client in a traceback.
ODD_LINES = [
    b":{nick}!u@h JOIN #lobby",
    b":evil!u@h PRIVMSG #lobby :" + b"A" * 3_000_000,
    b":evil!u@h PRIVMSG #lobby :after the big one",
    b":evil!u@h PRIVMSG #lobby :\xff\xfe bad \xed\xa0\x80 bytes",
    b":fake 001", b":fake 332", b":fake 353 {nick}", b":fake 366", b":fake 311 {nick} who",
    b":fake 352 {nick}", b":fake 322 {nick}", b":fake 433", b":fake 401", b":fake 005",
    b":x!u@h JOIN #never", b":x!u@h PART #never :bye", b":ghost!u@h NICK :ghost2",
    b":{nick}!u@h PART #notjoined", b":{nick}!u@h KICK #notjoined {nick} :out",
    b"PRIVMSG {nick} :\x01VERSION\x01", b":!@h PRIVMSG {nick} :\x01PING 1\x01",
    b":fake 001 other :Welcome again",
    b":evil!u@h PRIVMSG #lobby :last whole line",
    RAW + b":evil!u@h PRIVMSG #lobby :cut in the mid",
    CLOSE,
]


@needs_tmux
def test_odd_lines_and_a_close_mid_line_leave_the_interface_running(fake_server, terminal):
    fake = fake_server(ODD_LINES)
    term = terminal("-n", "me", f"127.0.0.1:{fake.port}")
    lines = term.wait_text("reconnecting in")
    screen = "\n".join(lines)
    assert "after the big one" in screen and "last whole line" in screen
    assert "cut in the mid" not in screen and "AAAA" not in screen
    term.type("/quit")
    term.keys("Enter")
    lines = term.wait_text("CLIENT-EXIT=0")
    assert "Traceback" not in "\n".join(lines)


def test_odd_lines_and_a_close_mid_line_in_line_mode(fake_server):
    fake = fake_server(ODD_LINES)
    with line_mode(fake.port) as proc:
        assert fake.scripted.wait(WAIT_S)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=WAIT_S * 2)
    text = (out + err).decode("utf-8")
    assert "after the big one" in text and "last whole line" in text
    assert "Traceback" not in text and "cut in the mid" not in text


# A NAMES of every room as servers answer it: forkchat-server ends the
# rooms' rows with one 366 for `*`; miniircd ends each room
# with its own 366 and sends none for `*`; some may send both.
IN_LOBBY = [b":{nick}!u@h JOIN #lobby", b":fake 353 {nick} = #lobby :{nick} @op",
            b":fake 366 {nick} #lobby :End of /NAMES list"]
ROWS = {"#a": b":fake 353 {nick} = #a :x y", "#lobby": b":fake 353 {nick} = #lobby :{nick} @op"}
ROOM_ENDS = {room: b":fake 366 {nick} " + room.encode() + b" :End of /NAMES list"
             for room in ROWS}
STAR_END = b":fake 366 {nick} * :End of /NAMES list"
EVERY_ROOM_ANSWERS = {
    "one end for *": [ROWS["#a"], ROWS["#lobby"], STAR_END],
    "an end per room": [ROWS["#a"], ROOM_ENDS["#a"], ROWS["#lobby"], ROOM_ENDS["#lobby"]],
    "both": [ROWS["#a"], ROOM_ENDS["#a"], ROWS["#lobby"], ROOM_ENDS["#lobby"], STAR_END],
}


@pytest.mark.parametrize("shape", list(EVERY_ROOM_ANSWERS))
def test_a_names_of_every_room_prints_its_rows_and_no_end_in_line_mode(fake_server, shape):
    """`/raw NAMES`, whichever way the server ends it: each room's rows,
    and no `End of /NAMES list` among or after them."""
    fake = fake_server(IN_LOBBY, answers={b"NAMES": EVERY_ROOM_ANSWERS[shape]})
    with line_mode(fake.port) as proc:
        out, err = proc.communicate(b"/raw NAMES\n", timeout=WAIT_S * 2)
    text = out.decode("utf-8")
    assert "NAMES" in fake.received, fake.received
    assert "Members of #a: x y" in text and "Members of #lobby: me @op" in text, text
    assert "End of /NAMES" not in text, text
    assert proc.returncode == 0, err


@needs_tmux
def test_a_names_of_every_room_ended_room_by_room_is_one_answer_on_screen(fake_server, terminal):
    """A server that ends each room of a NAMES of every room with its own
    366 (miniircd): each end was shown, `#a: End of /NAMES list`, before
    the rows."""
    fake = fake_server(IN_LOBBY, answers={b"NAMES": EVERY_ROOM_ANSWERS["an end per room"]})
    term = terminal("-n", "me", f"127.0.0.1:{fake.port}")
    term.wait_text("me joined #lobby")
    term.type("/raw NAMES")
    term.keys("Enter")
    lines = term.wait_text("Members of #lobby: me @op")
    shown = [line for line in lines if "Members of" in line or "End of" in line]
    assert [line.split("-!- ", 1)[-1].rstrip() for line in shown] == [
        "Members of #a: x y", "Members of #lobby: me @op"], lines
    term.type("/quit")
    term.keys("Enter")
    term.wait_text("CLIENT-EXIT=0")
