"""Real IRC clients against the real server: irssi in tmux, weechat-headless.

Issue 2 point 3: "A client such as irssi or weechat must register, join, talk,
change nick, set topics and modes, and quit without a single error reply it
did not provoke."  A plain IrcTestClient sits in the room and sees each step
happen (that is also how the test waits: never a sleep); the real client's
own raw traffic log is then read for error numerics (400-599).  Skipped when
the client program (or tmux, for irssi) is not installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import psutil
import pytest

from tests.integration.chat_helpers import drain, nick_of
from tests.support.ircclient import IrcTestClient

STEP_TIMEOUT = 15.0        # a real client on a loaded 2-core machine may be slow to start
IRSSI_CONFIG = """servers = ( { address = "127.0.0.1"; port = "{port}"; chatnet = "fc"; autoconnect = "yes"; } );
chatnets = { fc = { type = "IRC"; }; };
channels = ( { name = "#real"; chatnet = "fc"; autojoin = "yes"; } );
settings = {
  core = { real_name = "Irssi Tester"; user_name = "irssiu"; rawlog_lines = "2000"; };
  "irc/core" = { cmds_max_at_once = "1000"; cmd_queue_speed = "10msec"; };
  "fe-text" = { paste_detect_time = "0"; };
};
"""


def error_numerics(lines: list[str]) -> list[str]:
    """Server lines that are error numerics (4xx, 5xx)."""
    found = []
    for line in lines:
        words = line.split()
        if len(words) > 1 and words[1].isdigit() and words[1][0] in "45":
            found.append(line)
    return found


class Tmux:
    """A private tmux server (its own socket) running one program in one pane."""

    def __init__(self, directory: str) -> None:
        self.socket = os.path.join(directory, "tmux.sock")
        self.pane_pid = 0

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True,
                              text=True, timeout=10, env=dict(os.environ, TERM="xterm"))

    def start(self, command: str) -> None:
        self.run("new-session", "-d", "-x", "160", "-y", "48", command).check_returncode()
        self.pane_pid = int(self.run("list-panes", "-F", "#{pane_pid}").stdout.split()[0])

    def type(self, text: str) -> None:
        self.run("send-keys", "-t", "0", "-l", text)
        self.run("send-keys", "-t", "0", "Enter")

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "0").stdout

    def stop(self) -> None:
        """Kill this tmux server (and so the program), then wait for the program to go."""
        victims = []
        if self.pane_pid:
            try:
                victims = [psutil.Process(self.pane_pid)]
            except psutil.NoSuchProcess:
                pass
        self.run("kill-server")
        gone, alive = psutil.wait_procs(victims, timeout=5)
        for process in alive:
            process.kill()


class RecordingProxy:
    """A TCP relay between one client and the server that keeps the server's lines.

    The server's side of the conversation, byte for byte, whatever the client is:
    the test reads it for error numerics.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.from_server = bytearray()
        self.sockets: list[socket.socket] = [self.listener]
        self.threads: list[threading.Thread] = []
        self._start(self._accept)

    def _start(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        self.sockets += [client, upstream]
        self._start(self._pump, client, upstream, None)
        self._start(self._pump, upstream, client, self.from_server)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, record: bytearray | None) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                try:
                    sink.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            if record is not None:
                record += data
            try:
                sink.sendall(data)
            except OSError:
                return

    def server_lines(self) -> list[str]:
        return bytes(self.from_server).decode("utf-8", "replace").splitlines()

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        for thread in self.threads:
            thread.join(5)


def expect_from(watcher: IrcTestClient, nick: str, command: str):
    """The next `command` sent by `nick`, as the watcher sees it."""
    try:
        return watcher.expect(lambda m: m.command == command and nick_of(m) == nick, STEP_TIMEOUT)
    except AssertionError as error:
        raise AssertionError(f"watcher never saw {command} from {nick}: {error}") from None


@pytest.mark.skipif(not (shutil.which("irssi") and shutil.which("tmux")),
                    reason="irssi and tmux are needed")
def test_irssi_session_without_unprovoked_errors(server, registered):
    """irssi registers, joins, sets topic and modes, talks, acts, changes nick and
    quits; the room sees each step, and irssi's raw log holds no error numeric but
    the 451 its own pre-registration `JOIN :` probe asks for."""
    workdir = tempfile.mkdtemp(prefix="forkchat-irssi-")
    home = os.path.join(workdir, "home")
    os.makedirs(home)
    with open(os.path.join(home, "config"), "w") as handle:
        handle.write(IRSSI_CONFIG.replace("{port}", str(server.port)))
    rawlog = os.path.join(workdir, "raw.log")
    watcher = registered("watcher")
    tmux = Tmux(workdir)
    try:
        watcher.join("#real")
        # irssi joins #real by itself once connected: typing before it has read the
        # welcome would be refused by irssi ("Not connected to server")
        tmux.start(f"irssi --home={home} -n fcirssi")
        assert expect_from(watcher, "fcirssi", "JOIN").params == ["#real"]
        watcher.send("MODE #real +o fcirssi")
        expect_from(watcher, "watcher", "MODE")
        tmux.type("/msg watcher ready")
        assert expect_from(watcher, "fcirssi", "PRIVMSG").params == ["watcher", "ready"]
        tmux.type("/topic #real A real topic")
        assert expect_from(watcher, "fcirssi", "TOPIC").params == ["#real", "A real topic"]
        tmux.type("/mode #real +v watcher")
        assert expect_from(watcher, "fcirssi", "MODE").params == ["#real", "+v", "watcher"]
        tmux.type("/mode #real +mk sesame")
        assert expect_from(watcher, "fcirssi", "MODE").params == ["#real", "+mk", "sesame"]
        tmux.type("/msg #real hello from irssi")
        assert expect_from(watcher, "fcirssi", "PRIVMSG").params == ["#real", "hello from irssi"]
        tmux.type("/action #real waves")
        assert expect_from(watcher, "fcirssi", "PRIVMSG").params == ["#real", "\x01ACTION waves\x01"]
        watcher.send("PRIVMSG #real :hi irssi")
        # irssi answers a CTCP PING by itself: its answer shows it has read what
        # the watcher sent before, so the raw log saved below holds "hi irssi"
        watcher.send("PRIVMSG fcirssi :\x01PING 1459\x01")
        assert expect_from(watcher, "fcirssi", "NOTICE").params == ["watcher", "\x01PING 1459\x01"]
        tmux.type("/nick fcirssi2")
        assert expect_from(watcher, "fcirssi", "NICK").params == ["fcirssi2"]
        tmux.type("/msg #real renamed")
        assert expect_from(watcher, "fcirssi2", "PRIVMSG").params == ["#real", "renamed"]
        tmux.type(f"/rawlog save {rawlog}")
        tmux.type("/msg watcher saved")
        expect_from(watcher, "fcirssi2", "PRIVMSG")
        tmux.type("/quit leaving now")
        quit_line = expect_from(watcher, "fcirssi2", "QUIT")
        assert "leaving now" in quit_line.params[0]
        with open(rawlog) as handle:
            log = handle.read().splitlines()
        received = [line[3:] for line in log if line.startswith(">> ")]
        sent = [line[3:] for line in log if line.startswith("<< ")]
        assert any(" 001 " in line for line in received), log
        welcome = next(i for i, line in enumerate(received) if " 001 " in line)
        assert error_numerics(received[welcome:]) == [], log
        early = error_numerics(received[:welcome])
        assert all(" 451 " in line for line in early), early
        assert len(early) <= sum(1 for line in sent if line.startswith("JOIN")), (early, sent)
        assert any("hi irssi" in line for line in received)
        assert drain(watcher) == []
    except AssertionError:
        print(tmux.screen())
        raise
    finally:
        tmux.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.skipif(not shutil.which("weechat-headless"), reason="weechat-headless is needed")
def test_weechat_session_without_unprovoked_errors(server, registered):
    """weechat-headless, driven through its FIFO, does the same session; every line
    the server sent it (recorded by a relay in between) is free of error numerics."""
    workdir = tempfile.mkdtemp(prefix="forkchat-weechat-")
    fifo = os.path.join(workdir, "fifo")
    proxy = RecordingProxy(server.port)
    watcher = registered("watcher")
    watcher.join("#real")       # weechat autojoins once connected: commands before that would fail
    setup = ";".join([
        f"/set fifo.file.path {fifo}",
        f"/server add t 127.0.0.1/{proxy.port} -notls",
        "/set irc.server.t.nicks fcweechat", "/set irc.server.t.username wcu",
        "/set irc.server.t.realname WeeChat_Tester",
        "/set irc.server.t.anti_flood_prio_high 0", "/set irc.server.t.anti_flood_prio_low 0",
        "/set irc.server.t.autojoin #real", "/connect t"])
    process = subprocess.Popen(["weechat-headless", "--dir", workdir, "--run-command", setup],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)

    def command(line: str, buffer: str = "irc.server.t") -> None:
        with open(fifo, "w") as handle:
            handle.write(f"{buffer} *{line}\n")
    try:
        assert expect_from(watcher, "fcweechat", "JOIN").params == ["#real"]
        watcher.send("MODE #real +o fcweechat")
        expect_from(watcher, "watcher", "MODE")
        command("/topic #real A weechat topic")
        assert expect_from(watcher, "fcweechat", "TOPIC").params == ["#real", "A weechat topic"]
        command("/mode #real +v watcher")
        assert expect_from(watcher, "fcweechat", "MODE").params == ["#real", "+v", "watcher"]
        command("/mode #real +ml 10")
        assert expect_from(watcher, "fcweechat", "MODE").params == ["#real", "+ml", "10"]
        command("/msg #real hello from weechat")
        assert expect_from(watcher, "fcweechat", "PRIVMSG").params == ["#real", "hello from weechat"]
        command("/me waves", "irc.t.#real")
        assert expect_from(watcher, "fcweechat", "PRIVMSG").params == ["#real", "\x01ACTION waves\x01"]
        watcher.send("PRIVMSG #real :hi weechat")
        command("/nick fcweechat2")
        assert expect_from(watcher, "fcweechat", "NICK").params == ["fcweechat2"]
        command("/msg #real renamed")
        assert expect_from(watcher, "fcweechat2", "PRIVMSG").params == ["#real", "renamed"]
        command("/quit leaving now")
        # weechat closes right after its QUIT line: the reason must survive that
        assert "leaving now" in expect_from(watcher, "fcweechat2", "QUIT").params[0]
        process.wait(STEP_TIMEOUT)
        lines = proxy.server_lines()
        assert any(" 001 fcweechat " in line for line in lines), lines
        assert error_numerics(lines) == [], lines
        assert any("hi weechat" in line for line in lines)
        assert drain(watcher) == []
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
            process.wait(5)
        proxy.close()
        shutil.rmtree(workdir, ignore_errors=True)


def wait_for_line(proxy: RecordingProxy, needle: str) -> str:
    """The first line the server sent through `proxy` that holds `needle`,
    waited for as it arrives."""
    deadline = time.monotonic() + STEP_TIMEOUT
    while time.monotonic() < deadline:
        found = [line for line in proxy.server_lines() if needle in line]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"the server never sent {needle!r}: {proxy.server_lines()}")


@pytest.mark.skipif(not (shutil.which("irssi") and shutil.which("tmux")
                         and shutil.which("weechat-headless")),
                    reason="irssi, tmux and weechat-headless are needed")
def test_irssi_long_multibyte_topic_reaches_a_later_weechat_joiner(server, registered):
    """irssi cuts a TOPIC line over 510 bytes at byte 510 itself, here inside a
    euro sign: the topic is set all the same (the cut character dropped), and
    weechat, joining later, is shown the topic the members were told."""
    typed = "\U0001f389" + "\u20ac" * 200
    assert len(f"TOPIC #real :{typed}".encode()[:510].decode("utf-8", "ignore").encode()) < 510
    workdir = tempfile.mkdtemp(prefix="forkchat-topic-")
    home = os.path.join(workdir, "home")
    os.makedirs(home)
    with open(os.path.join(home, "config"), "w") as handle:
        handle.write(IRSSI_CONFIG.replace("{port}", str(server.port)))
    watcher = registered("watcher")
    watcher.join("#real")
    tmux = Tmux(workdir)
    proxy = RecordingProxy(server.port)
    process = None
    try:
        tmux.start(f"irssi --home={home} -n fcirssi")
        expect_from(watcher, "fcirssi", "JOIN")
        watcher.send("MODE #real +o fcirssi")
        expect_from(watcher, "watcher", "MODE")
        tmux.type(f"/topic #real {typed}")
        topic = expect_from(watcher, "fcirssi", "TOPIC").params[1]
        assert len(topic) > 100 and typed.startswith(topic)
        setup = ";".join([f"/server add t 127.0.0.1/{proxy.port} -notls",
                          "/set irc.server.t.nicks fcweechat", "/set irc.server.t.autojoin #real",
                          "/connect t"])
        process = subprocess.Popen(["weechat-headless", "--dir", workdir, "--run-command", setup],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        expect_from(watcher, "fcweechat", "JOIN")
        assert wait_for_line(proxy, " 332 fcweechat #real :").endswith(f" :{topic}")
    except AssertionError:
        print(tmux.screen())
        raise
    finally:
        tmux.stop()
        if process is not None and process.poll() is None:
            os.killpg(process.pid, 9)
            process.wait(5)
        proxy.close()
        shutil.rmtree(workdir, ignore_errors=True)


# What common GUI clients (HexChat, mIRC, Konversation) send on connect and join,
# replayed by hand: none of it may draw an error numeric.
EVERYDAY_SESSION = [
    "USERHOST scripted", "MODE scripted +i", "JOIN #everyday", "MODE #everyday",
    "WHO #everyday %chtsunfra,152", "MODE #everyday b", "PRIVMSG #everyday :hi there",
    "TOPIC #everyday", "TOPIC #everyday :a topic", "NAMES #everyday", "WHOIS scripted scripted",
    "AWAY :lunch", "AWAY", "PING LAG1234567", "ISON scripted", "LIST", "WHO scripted",
    "MODE #everyday +v scripted", "NOTICE #everyday :notice", "PART #everyday :bye",
]


def test_everyday_gui_client_commands_draw_no_errors(clients):
    """Issue 2 point 3: the commands a GUI client sends without being asked (CAP
    negotiation with a capability refused, USERHOST, MODE/WHO/ban list on join,
    WHOIS with the nick twice, lag PINGs) get answers, not errors."""
    client = clients()
    client.send("CAP LS 302")
    client.send("NICK scripted")
    client.send("USER scripted 0 * :Scripted Client")
    client.expect("CAP")
    client.send("CAP REQ :multi-prefix away-notify")
    assert client.expect("CAP").params[1] == "NAK"
    client.send("CAP END")
    client.expect("376")
    client.nick = "scripted"
    for line in EVERYDAY_SESSION:
        client.send(line)
    got = drain(client)
    assert error_numerics([f":{m.prefix} {m.command} {' '.join(m.params)}" for m in client.history]) == []
    assert "JOIN" in [m.command for m in got] and "PART" in [m.command for m in got]
