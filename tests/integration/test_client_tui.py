"""forkchat-client's full-screen interface, driven in tmux against the real server.

Design section 5: "On a terminal: a full-screen curses interface ... an input
line that incoming text never clobbers ... switching rooms ... /quit" and the
issue: "restores the terminal on every way out".  tmux gives the client a
real terminal; `send-keys` types, `capture-pane -p` reads the screen, and
every wait polls the screen against a deadline.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import psutil
import pytest

from tests.support.ircclient import IrcTestClient

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WIDTH, HEIGHT = 100, 30
WAIT_S = 10.0
POLL_S = 0.05

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is needed to drive the terminal interface")


class Terminal:
    """One tmux session on a private tmux server, running one command."""

    def __init__(self, command: str, term: str = "xterm-256color", first: str = "") -> None:
        self.socket = f"forkchat-test-{uuid.uuid4().hex[:8]}"
        self.name = "client"
        env = (f"env LANG=C.UTF-8 LC_ALL=C.UTF-8 TERM={term} "
               f"PYTHONPATH={shlex.quote(REPO)}")
        # After the client: its exit status and the terminal modes, then stay.
        modes = "$(stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e echo | tr '\\n' ,)"
        shell = (f"{first}cd {shlex.quote(REPO)} && {env} {command}; "
                 f'echo "CLIENT-EXIT=$? MODES={modes}"; sleep 600')
        self._tmux("new-session", "-d", "-s", self.name, "-x", str(WIDTH), "-y", str(HEIGHT),
                   shell)

    def _tmux(self, *args: str) -> str:
        result = subprocess.run(["tmux", "-u", "-L", self.socket, *args],
                                capture_output=True, timeout=10, check=True)
        return result.stdout.decode("utf-8", "replace")

    def keys(self, *keys: str) -> None:
        """Key names (Enter, C-n, M-1) as tmux knows them."""
        self._tmux("send-keys", "-t", self.name, *keys)

    def type(self, text: str) -> None:
        """Literal text, no key-name lookup."""
        self._tmux("send-keys", "-t", self.name, "-l", text)

    def screen(self) -> list[str]:
        return self._tmux("capture-pane", "-p", "-t", self.name).split("\n")

    def wait_for(self, predicate, what: str, timeout: float = WAIT_S) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            lines = self.screen()
            if predicate(lines):
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(f"screen never showed {what}:\n" + "\n".join(lines))
            time.sleep(POLL_S)  # polling the screen, not synchronising on time

    def wait_text(self, text: str, timeout: float = WAIT_S) -> list[str]:
        return self.wait_for(lambda lines: any(text in line for line in lines), repr(text),
                             timeout)

    def input_line(self) -> str:
        return self.screen()[HEIGHT - 1]

    def status_line(self) -> str:
        return self.screen()[HEIGHT - 2]

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       timeout=10)


@pytest.fixture
def terminal():
    made: list[Terminal] = []

    def make(*args: str, term_type: str = "xterm-256color") -> Terminal:
        command = [sys.executable, "-m", "forkchat.client.app", *args]
        term = Terminal(" ".join(shlex.quote(word) for word in command), term_type)
        made.append(term)
        return term
    yield make
    for term in made:
        term.close()


def other_user(port: int, nick: str, *rooms: str) -> IrcTestClient:
    client = IrcTestClient(port)
    client.register(nick)
    for room in rooms:
        client.join(room)
    return client


def test_asks_for_the_nickname_and_joins_the_lobby(server, terminal):
    term = terminal(f"127.0.0.1:{server.port}")
    term.wait_text("Choose your nickname:")
    term.type("tuiuser")
    term.keys("Enter")
    term.wait_text("tuiuser joined #lobby")
    # The member count comes with the NAMES reply, after the JOIN line is shown.
    status = term.wait_for(lambda lines: lines[HEIGHT - 2].rstrip().endswith("| 1 member"),
                           "the member count")[HEIGHT - 2]
    assert "tuiuser" in status and "#lobby" in status


def test_ctrl_c_at_the_nickname_question_exits_130_without_a_traceback(server, terminal):
    term = terminal(f"127.0.0.1:{server.port}")
    term.wait_text("Choose your nickname:")
    term.type("half")
    term.keys("C-c")
    lines = term.wait_text("CLIENT-EXIT=")
    assert any(line.startswith("CLIENT-EXIT=130 MODES=icanon,echo,") for line in lines), lines
    assert not any("Traceback" in line or "KeyboardInterrupt" in line for line in lines), lines


def test_half_typed_line_survives_incoming_text_then_is_sent(server, terminal):
    term = terminal("-n", "typist", f"127.0.0.1:{server.port}")
    term.wait_text("typist joined #lobby")
    alice = other_user(server.port, "alice", "#lobby")
    try:
        term.type("half typed")
        term.wait_for(lambda lines: "half typed" in lines[HEIGHT - 1], "the typed text")
        for n in range(5):
            alice.send(f"PRIVMSG #lobby :incoming {n} 日本語 text")
        term.wait_text("incoming 4 日本語 text")
        assert term.input_line().rstrip() == "[#lobby] half typed"
        term.type(" and finished")
        term.keys("Enter")
        msg = alice.expect("PRIVMSG")
        assert msg.prefix.startswith("typist!") and list(msg.params) == ["#lobby", "half typed and finished"]
        term.wait_for(lambda lines: any("<typist> half typed and finished" in line
                                        for line in lines)
                      and lines[HEIGHT - 1].rstrip() == "[#lobby]", "the line said, input cleared")
    finally:
        alice.close()


def test_editing_wide_and_combining_characters(server, terminal):
    term = terminal("-n", "writer", f"127.0.0.1:{server.port}")
    term.wait_text("writer joined #lobby")
    bob = other_user(server.port, "bob", "#lobby")
    try:
        term.type("日本 cafe\u0301!")
        term.keys("Left", "Left", "BSpace")          # over "!" and "é": delete the "f"
        term.keys("Home", "Right")
        term.type("x")                               # after the first wide char
        term.keys("End")
        term.type(" ok")
        term.keys("Enter")
        msg = bob.expect("PRIVMSG")
        assert msg.params[-1] == "日x本 cae\u0301! ok"
        term.wait_text("<writer> 日x本")
    finally:
        bob.close()


def test_switching_rooms_keeps_separate_buffers(server, terminal):
    term = terminal("-n", "switcher", "-r", "#one", f"127.0.0.1:{server.port}")
    term.wait_text("switcher joined #one")
    bob = other_user(server.port, "bob", "#one", "#two")
    try:
        term.type("/join #two")
        term.keys("Enter")
        term.wait_for(lambda lines: "3:#two" in lines[HEIGHT - 2], "#two as buffer 3")
        bob.send("PRIVMSG #one :only in one")
        term.wait_for(lambda lines: "Act: 2" in lines[HEIGHT - 2], "activity in #one")
        assert "only in one" not in "\n".join(term.screen())
        term.keys("M-2")
        # one screen for both: the status line is drawn after the pane above it
        term.wait_for(lambda lines: any("only in one" in line for line in lines)
                      and "2:#one" in lines[HEIGHT - 2], "#one's buffer and its status")
        term.keys("C-n")
        term.wait_for(lambda lines: "3:#two" in lines[HEIGHT - 2], "Ctrl+N to #two")
        term.type("/switch #one")
        term.keys("Enter")
        term.wait_for(lambda lines: "2:#one" in lines[HEIGHT - 2], "/switch to #one")
        term.type("/query bob")
        term.keys("Enter")
        term.type("private hello")
        term.keys("Enter")
        msg = bob.expect("PRIVMSG")
        assert list(msg.params) == ["bob", "private hello"]
        # the line may go out before the screen that shows the query is drawn
        term.wait_for(lambda lines: "4:bob" in lines[HEIGHT - 2], "the query buffer as 4:bob")
    finally:
        bob.close()


@pytest.mark.parametrize("term_type", ["xterm-256color", "tmux-256color"])
def test_alt_right_and_left_switch_buffers(server, terminal, term_type):
    """forkchat-client(1): Ctrl+N, Ctrl+P "Switch to the next or the previous
    buffer, as do Alt+Right and Alt+Left"; xterm-style terminals send them as
    the keys curses calls kRIT3 and kLFT3."""
    if subprocess.run(["infocmp", term_type], capture_output=True).returncode != 0:
        pytest.skip(f"no terminfo entry for {term_type}")
    term = terminal("-n", "alty", "-r", "#one", f"127.0.0.1:{server.port}",
                    term_type=term_type)
    term.wait_text("alty joined #one")
    term.type("/join #two")
    term.keys("Enter")
    term.wait_for(lambda lines: "3:#two" in lines[HEIGHT - 2], "#two joined and shown")
    term.keys("M-Left")
    term.wait_for(lambda lines: "2:#one" in lines[HEIGHT - 2], "Alt+Left to #one")
    term.keys("M-Right")
    term.wait_for(lambda lines: "3:#two" in lines[HEIGHT - 2], "Alt+Right to #two")
    term.keys("M-Right")
    term.wait_for(lambda lines: "1:(status)" in lines[HEIGHT - 2], "Alt+Right round to 1")
    assert term.input_line().rstrip() == "[(status)]"   # nothing typed by the keys


def test_quit_restores_the_terminal(server, terminal):
    term = terminal("-n", "leaver", f"127.0.0.1:{server.port}")
    term.wait_text("leaver joined #lobby")
    watcher = other_user(server.port, "watcher", "#lobby")
    try:
        term.type("/quit see you")
        term.keys("Enter")
        msg = watcher.expect("QUIT")
        assert msg.prefix.startswith("leaver!") and "see you" in msg.params[-1]
        lines = term.wait_text("CLIENT-EXIT=")
        assert "CLIENT-EXIT=0 MODES=icanon,echo," in lines  # cooked mode and echo are back
        assert not any("leaver |" in line for line in lines)   # the status bar is gone
    finally:
        watcher.close()


def test_ctrl_c_quits_and_restores_the_terminal(server, terminal):
    term = terminal("-n", "breaker", f"127.0.0.1:{server.port}")
    term.wait_text("breaker joined #lobby")
    term.type("unsent text")
    term.keys("C-c")
    lines = term.wait_text("CLIENT-EXIT=")
    assert any(line.startswith("CLIENT-EXIT=0 MODES=icanon,echo,") for line in lines), lines


def test_sigterm_quits_and_restores_the_terminal(server, terminal):
    """`kill PID` (a logout script, systemd ending the session): the others
    read a QUIT with a reason, not a dropped link."""
    term = terminal("-n", "stopped", f"127.0.0.1:{server.port}")
    term.wait_text("stopped joined #lobby")
    client = client_process(term)
    watcher = other_user(server.port, "watcher", "#lobby")
    try:
        client.terminate()
        msg = watcher.expect("QUIT")
        assert msg.prefix.startswith("stopped!") and msg.params[-1].endswith("Terminated")
    finally:
        watcher.close()
    lines = term.wait_text("CLIENT-EXIT=")
    assert any(line.startswith("CLIENT-EXIT=0 MODES=icanon,echo,") for line in lines), lines


def test_page_up_and_down_scroll_back(server, terminal):
    term = terminal("-n", "reader", f"127.0.0.1:{server.port}")
    term.wait_text("reader joined #lobby")
    talker = other_user(server.port, "talker", "#lobby")
    try:
        for n in range(40):
            talker.send(f"PRIVMSG #lobby :scroll line {n:02d}")
        lines = term.wait_text("scroll line 39")
        assert not any("scroll line 00" in line for line in lines)
        # one screen for both: the status line is drawn after the pane above it
        term.keys("PPage")
        term.wait_for(lambda lines: any("scroll line 00" in line for line in lines)
                      and "more below" in lines[HEIGHT - 2], "line 00 and 'more below'")
        term.keys("NPage")
        term.wait_for(lambda lines: any("scroll line 39" in line for line in lines)
                      and "more below" not in lines[HEIGHT - 2], "line 39 and no 'more below'")
    finally:
        talker.close()


def test_resize_redraws_the_layout(server, terminal):
    term = terminal("-n", "resizer", f"127.0.0.1:{server.port}")
    term.wait_text("resizer joined #lobby")
    term.type("still here")
    term._tmux("resize-window", "-t", term.name, "-x", "60", "-y", "20")
    lines = term.wait_for(lambda lines: len(lines) >= 20 and "still here" in lines[19]
                          and "resizer" in lines[18], "the input line on row 20")
    assert "resizer joined #lobby" in "\n".join(lines)


def restarted_under(make_server, terminal, nick: str, **second_server):
    """A full-screen client `nick` in #ops, its server stopped (the client
    says it is reconnecting) and another started on the same port with
    `second_server`: (the client's terminal, the second server)."""
    first = make_server()
    port = first.port
    term = terminal("-n", nick, "-r", "#ops", f"127.0.0.1:{port}")
    term.wait_text(f"{nick} joined #ops")
    first.stop()
    term.wait_text("reconnecting")
    return term, make_server(listen=[f"127.0.0.1:{port}"], **second_server)


def test_reconnects_after_the_server_restarts(make_server, terminal):
    term, second = restarted_under(make_server, terminal, "comeback")
    term.wait_for(lambda lines: sum("comeback joined #ops" in line for line in lines) == 2,
                  "the rejoin", timeout=30)
    watcher = other_user(second.port, "watcher", "#ops")
    try:
        term.type("back again")
        term.keys("Enter")
        msg = watcher.expect("PRIVMSG")
        assert list(msg.params) == ["#ops", "back again"]
    finally:
        watcher.close()


def test_a_refused_rejoin_says_so_in_the_room(make_server, terminal):
    """Banned while connected, the ban kept over a restart: the rejoin is
    refused, and the room's buffer says why and that it is not joined."""
    with tempfile.TemporaryDirectory(prefix="forkchat-state-") as state_dir:
        os.chmod(state_dir, 0o777)   # the server drops root to nobody
        state = ["--state-dir", state_dir]
        first = make_server(extra_args=state)
        port = first.port
        owner = other_user(port, "owner", "#vault")
        try:
            term = terminal("-n", "banned", "-r", "#vault", f"127.0.0.1:{port}")
            term.wait_text("banned joined #vault")
            owner.send("MODE #vault +b banned!*@*")
            term.wait_text("owner sets mode +b banned!*@* on #vault")
        finally:
            owner.close()
        first.stop()
        term.wait_text("reconnecting")
        make_server(listen=[f"127.0.0.1:{port}"], extra_args=state)
        term.wait_text("#vault: Cannot join channel (+b)", timeout=30)
        term.wait_for(lambda lines: "2:#vault | not joined" in lines[HEIGHT - 2],
                      "'not joined' in the status line")


def test_refused_connection_leaves_a_clean_terminal_and_one_line(make_server, terminal):
    dead = make_server()
    port = dead.port
    dead.stop()
    term = terminal("-n", "early", f"127.0.0.1:{port}")
    lines = term.wait_text("CLIENT-EXIT=")
    assert any("cannot connect" in line and "Connection refused" in line for line in lines)
    assert any(line.startswith("CLIENT-EXIT=1 MODES=icanon,echo,") for line in lines), lines
    assert not any("Traceback" in line for line in lines)


def test_part_closes_the_buffer_of_a_secret_room_we_were_kicked_from(server, terminal):
    """Kicked from a +s room, its buffer stays ("not joined"); the server
    answers a PART there with 403, so /part must close the buffer itself,
    and a line typed there is refused at once, not shown as said."""
    owner = other_user(server.port, "owner", "#hush")
    try:
        owner.send("MODE #hush +s")
        owner.expect("MODE")
        term = terminal("-n", "kicked", "-r", "#hush", f"127.0.0.1:{server.port}")
        term.wait_text("kicked joined #hush")
        owner.send("KICK #hush kicked :out")
        term.wait_for(lambda lines: "not joined" in lines[HEIGHT - 2], "the kick")
        term.type("still here?")
        term.keys("Enter")
        term.wait_text("you are not in #hush")
        term.type("/part")
        term.keys("Enter")
        term.wait_for(lambda lines: "1:(status)" in lines[HEIGHT - 2], "the buffer closed")
        assert "No such channel" not in "\n".join(term.screen())
    finally:
        owner.close()



def client_process(term: Terminal) -> psutil.Process:
    """The forkchat-client process running in the terminal."""
    pane_pid = int(term._tmux("list-panes", "-t", term.name, "-F", "#{pane_pid}").split()[0])
    [client] = [p for p in psutil.Process(pane_pid).children(recursive=True)
                if "forkchat.client.app" in " ".join(p.cmdline())]
    return client


def test_closing_the_terminal_quits_without_a_traceback(server, tmp_path):
    """The window closed (SIGHUP, the tty gone): curses.wrapper's restore
    failed on the dead tty and left a traceback (`nocbreak() returned ERR`)
    in a redirected stderr.  Now: QUIT, and no traceback."""
    errors = tmp_path / "stderr"
    client = " ".join(shlex.quote(word) for word in (
        sys.executable, "-m", "forkchat.client.app", "-n", "hungup", f"127.0.0.1:{server.port}"))
    term = Terminal(f"{client} 2>{errors}; sleep 600")
    watcher = process = None
    try:
        term.wait_text("hungup joined #lobby")
        process = client_process(term)
        watcher = other_user(server.port, "watcher", "#lobby")
        term.close()                      # the tmux server goes: the terminal hangs up
        msg = watcher.expect("QUIT")
        assert msg.prefix.startswith("hungup!") and "Terminated" in msg.params[-1]
        process.wait(WAIT_S)
        assert "Traceback" not in errors.read_text()
    finally:
        if watcher is not None:
            watcher.close()
        term.close()
        if process is not None and process.is_running():
            process.kill()


def test_a_terminal_gone_without_a_sighup_still_quits(server, tmp_path):
    """The kernel sends SIGHUP to the session leader only: under a shell
    that ignores it (or does not pass it on) the client never got one,
    spun at full CPU on a stdin readable forever and stayed connected.
    Now the hang-up seen on stdin is a SIGHUP: QUIT, exit status 0."""
    errors, status = tmp_path / "stderr", tmp_path / "status"
    client = " ".join(shlex.quote(word) for word in (
        sys.executable, "-m", "forkchat.client.app", "-n", "orphan", f"127.0.0.1:{server.port}"))
    # The shell, the session leader, ignores the SIGHUP and lives on, so the
    # kernel sends none to the client (it would when the leader exits).
    term = Terminal(f"{client} 2>{errors}; echo $? >{status}", first="trap '' HUP; ")
    watcher = process = None
    try:
        term.wait_text("orphan joined #lobby")
        process = client_process(term)
        watcher = other_user(server.port, "watcher", "#lobby")
        term._tmux("kill-session", "-t", term.name)     # the window closes
        msg = watcher.expect("QUIT")
        assert msg.prefix.startswith("orphan!") and "Terminated" in msg.params[-1]
        process.wait(WAIT_S)
        assert "Traceback" not in errors.read_text()
        deadline = time.monotonic() + WAIT_S
        while not (status.exists() and status.read_text().strip()):
            assert time.monotonic() < deadline, "the shell never wrote the exit status"
            time.sleep(POLL_S)  # polling for the file the shell writes
        assert status.read_text().strip() == "0"
    finally:
        if watcher is not None:
            watcher.close()
        term.close()
        if process is not None and process.is_running():
            process.kill()


def test_typing_shows_on_a_narrow_terminal_in_a_long_named_room(server, terminal):
    """The `[#room] ` prompt used to take the whole 45-column row, and the
    name in the status line pushed `Act:` off its end."""
    room = "#a_very_long_room_name_for_testing_purposes"
    term = terminal("-n", "narrow", "-r", room, f"127.0.0.1:{server.port}")
    term.wait_text("narrow joined")
    term._tmux("resize-window", "-t", term.name, "-x", "45", "-y", "12")
    term.type("can you see me")
    term.wait_for(lambda lines: len(lines) >= 12 and "can you see me" in lines[11],
                  "the typed text on the input row")
    caller = other_user(server.port, "caller")
    try:
        caller.send("PRIVMSG narrow :psst")     # opens buffer 3: Act: 3*
        term.wait_for(lambda lines: len(lines) >= 12 and "Act: 3*" in lines[10],
                      "the activity at the end of the status line")
    finally:
        caller.close()


def test_quitting_with_pasted_lines_still_queued_says_they_were_not_sent(server, terminal):
    """Sending is paced (8, then one per 0.6 s): a pasted block then /quit
    showed every line as said, sent 8 and dropped the rest in silence."""
    term = terminal("-n", "paster", f"127.0.0.1:{server.port}")
    term.wait_text("paster joined #lobby")
    block = "".join(f"pasted line {n}\r" for n in range(20)) + "/quit\r"
    term._tmux("set-buffer", "--", block)
    term._tmux("paste-buffer", "-t", term.name)
    lines = term.wait_text("CLIENT-EXIT=")
    [notice] = [line for line in lines if "shown as sent had not gone out" in line]
    assert notice.startswith("forkchat-client: ") and notice.endswith(": not sent")
    assert any(line.startswith("CLIENT-EXIT=0 ") for line in lines), lines


def test_a_pasted_tab_is_a_space_and_the_paste_mode_is_undone(server, terminal):
    """A tab pasted from a table ran Tab completion (the columns were glued
    together, or a nick was put in): the terminal now marks pastes, and a
    pasted tab is a space.  Once the client is gone the marks are off."""
    client = " ".join(shlex.quote(word) for word in (
        sys.executable, "-m", "forkchat.client.app", "-n", "paster", f"127.0.0.1:{server.port}"))
    term = Terminal(f"{client}; cat -v")
    watcher = other_user(server.port, "watcher", "#lobby")
    try:
        term.wait_text("2 members")          # the NAMES reply: Tab has a nick to offer
        term._tmux("set-buffer", "--", "w\tb\tc\r")
        term._tmux("paste-buffer", "-p", "-t", term.name)
        assert list(watcher.expect("PRIVMSG").params) == ["#lobby", "w b c"]
        term.type("w")
        term.keys("Tab")                     # typed, it still completes
        term.wait_for(lambda lines: lines[HEIGHT - 1].rstrip() == "[#lobby] watcher:",
                      "the completed nick")
        term.keys("C-u")
        term.type("/quit")
        term.keys("Enter")
        term.wait_for(lambda lines: not any("paster |" in line for line in lines), "the exit")
        term._tmux("set-buffer", "--", "after\r")
        term._tmux("paste-buffer", "-p", "-t", term.name)
        lines = term.wait_for(lambda lines: sum("after" in line for line in lines) == 2,
                              "the shell's echo and cat's copy of the paste")
        assert not any("200~" in line for line in lines), lines
    finally:
        watcher.close()
        term.close()


def test_paste_marks_are_asked_for_again_after_a_suspend(server, terminal):
    """bash switches the paste marks off before `fg`: after Ctrl+Z and fg a
    pasted tab completed a nick again.  Here the shell's part is played by
    writing its mode switch to the terminal, and fg's by SIGCONT."""
    term = terminal("-n", "paster", f"127.0.0.1:{server.port}")
    watcher = other_user(server.port, "watcher", "#lobby")
    try:
        term.wait_text("2 members")
        client = client_process(term)
        with open(term._tmux("display", "-p", "-t", term.name, "#{pane_tty}").strip(),
                  "wb", buffering=0) as tty:
            tty.write(b"\x1b[?2004l")
        client.send_signal(signal.SIGCONT)
        term.type("x")           # the signal woke the loop before this key was sent
        term.wait_for(lambda lines: lines[HEIGHT - 1].rstrip() == "[#lobby] x", "the key")
        term.keys("C-u")
        term._tmux("set-buffer", "--", "w\tb\r")
        term._tmux("paste-buffer", "-p", "-t", term.name)
        assert list(watcher.expect("PRIVMSG").params) == ["#lobby", "w b"]
    finally:
        watcher.close()


def test_an_unknown_terminal_type_is_one_clear_line_not_a_traceback(server, terminal):
    """ssh from a terminal whose terminfo entry is not installed there
    (xterm-kitty, alacritty): initscr() failed with a traceback, and only
    after the nickname question."""
    term = terminal(f"127.0.0.1:{server.port}", term_type="no-such-terminal")
    lines = term.wait_text("CLIENT-EXIT=")
    text = "\n".join(lines)
    assert "Traceback" not in text and "Choose your nickname" not in text
    assert "forkchat-client: terminal type 'no-such-terminal' is not known" in text
    assert any(line.startswith("CLIENT-EXIT=1 ") for line in lines), lines


def test_accents_and_wide_characters_are_typed_under_lc_all_c(server):
    """LC_ALL=C: Python works in UTF-8 but curses read keys as ASCII, and
    dropped é and 漢 without a word ('hé漢 ok' went out as 'h ok')."""
    client = " ".join(shlex.quote(word) for word in (
        sys.executable, "-m", "forkchat.client.app", "-n", "plain", f"127.0.0.1:{server.port}"))
    term = Terminal(f"env LC_ALL=C {client}")
    watcher = other_user(server.port, "watcher", "#lobby")
    try:
        term.wait_text("2 members")
        term.type("hé漢 ok")
        term.keys("Enter")
        assert list(watcher.expect("PRIVMSG").params) == ["#lobby", "hé漢 ok"]
        term.wait_text("hé漢 ok")
    finally:
        watcher.close()
        term.close()



def test_a_nick_starting_with_a_colon_is_an_error_line_not_a_crash(server, terminal):
    """`/msg :alice hi` raised ValueError: the interface vanished with a
    traceback.  Now it says why, and the next line goes out as usual."""
    term = terminal("-n", "colon", f"127.0.0.1:{server.port}")
    term.wait_text("colon joined #lobby")
    watcher = other_user(server.port, "watcher", "#lobby")
    try:
        for typed in ("/msg :alice hi", "/query :alice"):
            term.type(typed)
            term.keys("Enter")
        term.wait_for(lambda lines: sum("cannot be a nick, room or other word" in line
                                        for line in lines) == 2, "two error lines")
        term.type("still here")
        term.keys("Enter")
        msg = watcher.expect("PRIVMSG")
        assert list(msg.params) == ["#lobby", "still here"]
    finally:
        watcher.close()


class HeldScanServer:
    """An IRC server of a few lines, as a busy forkchat-server looks from
    the client: it registers and joins, answers PING, and holds every LIST
    until the test answers it (forkchat holds a scan up to 30 s)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conn: socket.socket | None = None
        self.lists = threading.Semaphore(0)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.conn, _ = self.listener.accept()
        nick = "someone"
        for raw in self.conn.makefile("rb"):
            words = raw.decode().split()
            command = words[0].upper() if words else ""
            if command == "NICK":
                nick = words[1]
            elif command == "USER":
                self.send(f":fake 001 {nick} :Welcome")
            elif command == "JOIN":
                self.send(f":{nick}!u@h JOIN {words[1]}")
                self.send(f":fake 366 {nick} {words[1]} :End of /NAMES list")
            elif command == "PING":
                self.send(f":fake PONG fake :{words[-1].lstrip(':')}")
            elif command == "LIST":
                self.lists.release()

    def send(self, line: str) -> None:
        assert self.conn is not None
        self.conn.sendall(line.encode() + b"\r\n")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()


def test_a_held_list_is_shown_as_waited_for_and_its_refusal_where_it_was_typed(terminal):
    """A busy forkchat-server holds a /list up to 30 s before it answers or
    refuses it (263): the screen showed nothing at all meanwhile, and the
    refusal went to buffer 1, leaving only the list's end in the room."""
    fake = HeldScanServer()
    term = terminal("-n", "lister", f"127.0.0.1:{fake.port}")
    try:
        term.wait_text("lister joined #lobby")
        term.type("/list")
        term.keys("Enter")
        assert fake.lists.acquire(timeout=WAIT_S)
        term.wait_for(lambda lines: "waiting for /list: " in lines[HEIGHT - 2],
                      "the wait in the status line")
        fake.send(":fake 263 lister LIST :Please wait a while and try again.")
        fake.send(":fake 323 lister :End of /LIST")
        lines = term.wait_for(lambda lines: any("End of /LIST" in line for line in lines)
                              and "waiting for" not in lines[HEIGHT - 2],
                              "the list's end, and the wait gone from the status line")
        assert any("LIST: Please wait a while and try again." in line for line in lines)
    finally:
        fake.close()


def test_a_password_asked_only_at_a_reconnect_is_shown_and_retried(make_server, terminal):
    """A server restarted with a password refused the reconnect, and the
    full-screen interface ended there with its scrollback; it says why and
    keeps trying (the man page: it keeps trying), until /quit."""
    term, _second = restarted_under(make_server, terminal, "locked",
                                    extra_args=["--password", "sesame"])
    term.keys("M-1")
    term.wait_text("the server wants a password", timeout=30)
    term.wait_for(lambda lines: "reconnecting in" in lines[HEIGHT - 2],
                  "'reconnecting in' in the status line")
    assert not any("CLIENT-EXIT" in line for line in term.screen())
    term.type("/quit")
    term.keys("Enter")
    term.wait_text("CLIENT-EXIT=0")
