"""The tutorial dialect, driven as the classic chat-room client drives it."""

import signal
import socket
import time

import pytest

from tests.conftest import TEST_LIMITS
from tests.integration.chat_helpers import OPER_CONFIG, drain
from tests.support.ircclient import IrcTestClient


class TutorialClient:
    """Speaks like the tutorial's client: raw chunks, no line ends."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.received = b""

    def recv_until(self, wanted: bytes, timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        while wanted not in self.received:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"never got {wanted!r}; got {self.received!r}")
            self.sock.settimeout(left)
            chunk = self.sock.recv(1024)
            if not chunk:
                raise AssertionError(f"closed before {wanted!r}; got {self.received!r}")
            self.received += chunk
        return self.received

    def recv_until_eof(self, timeout: float = 5.0) -> bytes:
        """Everything the server sends before it closes the connection."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"connection not closed; got {self.received!r}")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1024)
            except TimeoutError:
                raise AssertionError(f"connection not closed; got {self.received!r}") from None
            if not chunk:
                return self.received
            self.received += chunk

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def tutorial_server(make_server):
    return make_server(listen=["127.0.0.1:0"],
                       extra_args=["--tutorial-listen", "127.0.0.1:0"])


def join_tutorial(server, nick: bytes) -> TutorialClient:
    client = TutorialClient(server.port_of("tutorial"))
    assert client.recv_until(b"NICK") == b"NICK"
    client.sock.sendall(nick)
    return client


def test_handshake_byte_for_byte(tutorial_server):
    """The server sends NICK, then `nick joined!` and `Connected to server!`."""
    tina = join_tutorial(tutorial_server, b"tina")
    received = tina.recv_until(b"Connected to server!")
    assert received == b"NICKtina joined!Connected to server!"
    tina.close()


def test_tutorial_and_irc_users_talk(tutorial_server):
    alice = IrcTestClient(tutorial_server.port)
    alice.register("alice")
    alice.join("#lobby")
    tina = join_tutorial(tutorial_server, b"tina")
    tina.recv_until(b"Connected to server!")
    join = alice.expect("JOIN")
    assert join.prefix.startswith("tina!") and join.params[0] == "#lobby"

    tina.sock.sendall(b"tina: hello irc")
    said = alice.expect("PRIVMSG")
    assert said.prefix.startswith("tina!") and said.params == ["#lobby", "hello irc"]
    tina.recv_until(b"tina: hello irc")

    alice.send("PRIVMSG #lobby :hi tina, caf\u00e9")
    tina.recv_until(b"alice: hi tina, caf?")

    tina.close()
    quit_msg = alice.expect("QUIT")
    assert quit_msg.prefix.startswith("tina!")
    alice.close()


def test_tutorial_users_see_each_other(tutorial_server):
    tina = join_tutorial(tutorial_server, b"tina")
    tina.recv_until(b"Connected to server!")
    tom = join_tutorial(tutorial_server, b"tom")
    tom.recv_until(b"Connected to server!")
    tina.recv_until(b"tom joined!")
    tom.sock.sendall(b"tom: hey")
    tina.recv_until(b"tom: hey")
    tom.close()
    tina.recv_until(b"tom left!")
    tina.close()


def test_taken_nick_gets_a_suffix(tutorial_server):
    first = join_tutorial(tutorial_server, b"sam")
    first.recv_until(b"Connected to server!")
    second = join_tutorial(tutorial_server, b"sam")
    assert b"sam_1 joined!Connected to server!" in second.recv_until(b"Connected to server!")
    first.recv_until(b"sam_1 joined!")
    second.sock.sendall(b"sam: hello")         # the client knows only the name it typed
    assert first.recv_until(b"sam_1: hello").endswith(b"sam_1 joined!sam_1: hello")
    first.close()
    second.close()


@pytest.mark.parametrize("first, nick, text", [
    (b"tinatina: hello", b"tina", "hello"),          # the name and the first message at once
    (b"tom\r\nhi all\r\n", b"tom", "hi all"),        # a telnet or netcat user's two lines
])
def test_a_message_read_with_the_name_is_relayed(tutorial_server, first, nick, text):
    """The name ends where the client's own message begins, not at the end of the read."""
    alice = op_of_lobby(tutorial_server)
    client = join_tutorial(tutorial_server, first)
    welcome = b"NICK" + nick + b" joined!Connected to server!"
    assert client.recv_until(welcome).startswith(welcome)
    said = alice.expect(lambda m: m.command == "PRIVMSG")
    assert said.prefix.startswith(nick.decode() + "!") and said.params == ["#lobby", text]
    client.close()
    alice.close()


def test_a_message_typed_ahead_of_the_name_is_relayed(tutorial_server):
    """The classic client fed from a pipe sends its first line before it answers NICK."""
    alice = op_of_lobby(tutorial_server)
    tina = join_tutorial(tutorial_server, b"tina: first words")
    tina.recv_until(b"tina joined!Connected to server!")
    said = alice.expect(lambda m: m.command == "PRIVMSG")
    assert said.prefix.startswith("tina!") and said.params == ["#lobby", "first words"]
    tina.sock.sendall(b"tina")                         # its answer to NICK: not a message
    tina.sock.sendall(b"tina: second")
    said = alice.expect(lambda m: m.command == "PRIVMSG")
    assert said.prefix.startswith("tina!") and said.params == ["#lobby", "second"]
    tina.close()
    alice.close()


def test_long_message_loses_nothing_behind_a_long_prefix(make_server):
    """A long nick and room leave less than 400 bytes of a line for text: the
    pieces are cut to fit, where the broker cut each one at 512 bytes."""
    room = "#" + "r" * 40
    server = make_server(listen=["127.0.0.1:0"],
                         config_text=f'[server]\ndefault_room = "{room}"\n'
                                     + TEST_LIMITS + "nicklen = 64\n",
                         extra_args=["--tutorial-listen", "127.0.0.1:0"])
    alice = IrcTestClient(server.port)
    alice.register("alice")
    alice.join(room)
    nick = b"n" * 64
    tina = join_tutorial(server, nick)
    tina.recv_until(b"Connected to server!")
    text = "".join(f"{index:04d}" for index in range(250))
    tina.sock.sendall(text.encode())
    pieces = []
    while not "".join(pieces).endswith("0249"):
        pieces.append(alice.expect(lambda m: m.command == "PRIVMSG"
                                   and m.prefix.startswith(nick.decode() + "!")).params[1])
    assert "".join(pieces) == text
    tina.close()
    alice.close()


def op_of_lobby(server) -> IrcTestClient:
    """An IRC user who joins #lobby first, and so is its operator."""
    alice = IrcTestClient(server.port)
    alice.register("alice")
    alice.join("#lobby")
    return alice


def test_kicked_tutorial_client_is_told_and_closed(tutorial_server):
    """Out of the room it cannot rejoin: one plain line says why, then EOF."""
    alice = op_of_lobby(tutorial_server)
    tk = join_tutorial(tutorial_server, b"tk")
    tk.recv_until(b"Connected to server!")
    alice.expect(lambda m: m.command == "JOIN" and m.prefix.startswith("tk!"))
    alice.send("KICK #lobby tk :out")
    alice.expect("KICK")
    received = tk.recv_until_eof()
    assert received == b"NICKtk joined!Connected to server!" \
        b"You were kicked from #lobby by alice: out"
    tk.close()
    alice.close()


def test_an_irc_client_on_the_tutorial_port_is_told_and_says_nothing(tutorial_server):
    """An IRC client pointed at the tutorial port became 'CAP_LS_302', and
    its NICK, USER, PASS and later lines (an identify to NickServ) were
    said to the room.  It is told in an IRC ERROR line, on a line of its
    own after the handshake's NICK, and the room hears nothing of it."""
    alice = op_of_lobby(tutorial_server)
    irc = TutorialClient(tutorial_server.port_of("tutorial"))
    irc.recv_until(b"NICK")
    irc.sock.sendall(b"CAP LS 302\r\nPASS hunter2\r\nNICK irssi\r\nUSER irssi 0 * :Irssi\r\n")
    assert irc.recv_until_eof() == b"NICK\r\nERROR :Closing Link: 127.0.0.1 (This port " \
        b"speaks the tutorial chat protocol, not IRC: use the IRC port)\r\n"
    irc.close()
    assert drain(alice) == []
    alice.close()


def test_an_http_request_on_the_tutorial_port_is_told_and_says_nothing(tutorial_server):
    """A browser, or a scanner trying every port, became a user
    'GET__HTTP11' who joined the room and said the request's headers
    there.  It is told in one plain line and closed; the room hears
    nothing."""
    alice = op_of_lobby(tutorial_server)
    browser = TutorialClient(tutorial_server.port_of("tutorial"))
    browser.recv_until(b"NICK")
    browser.sock.sendall(b"GET / HTTP/1.1\r\nHost: chat\r\nCookie: session=1\r\n\r\n")
    assert browser.recv_until_eof() == \
        b"NICKThis port speaks the tutorial chat protocol, not HTTP"
    browser.close()
    assert drain(alice) == []
    alice.close()


def test_keyed_lobby_refuses_tutorial_client_plainly(tutorial_server):
    """A tutorial client cannot give a key: it is told so and closed, not left mute."""
    alice = op_of_lobby(tutorial_server)
    alice.send("MODE #lobby +k sekrit")
    alice.expect("MODE")
    tk = join_tutorial(tutorial_server, b"tk")
    assert tk.recv_until_eof() == b"NICKCannot join #lobby: the room needs a key"
    tk.close()
    alice.close()


def test_silenced_tutorial_client_is_told_its_line_was_not_sent(tutorial_server):
    """In a moderated room the echo is not the end of it: the refusal follows."""
    alice = op_of_lobby(tutorial_server)
    tk = join_tutorial(tutorial_server, b"tk")
    tk.recv_until(b"Connected to server!")
    alice.send("MODE #lobby +m")
    alice.expect("MODE")
    tk.sock.sendall(b"tk: anyone?")
    assert tk.recv_until(b" now").endswith(
        b"Connected to server!tk: anyone?Not sent: you cannot talk in #lobby now")
    tk.close()
    alice.close()


def test_killed_tutorial_client_is_told_why(make_server):
    """An operator's KILL: the reason an IRC client reads in ERROR, as one plain line, then EOF."""
    server = make_server(listen=["127.0.0.1:0"], config_text=OPER_CONFIG + TEST_LIMITS,
                         extra_args=["--tutorial-listen", "127.0.0.1:0"])
    ircop = IrcTestClient(server.port)
    ircop.register("ircop")
    ircop.send("OPER admin pw")
    ircop.expect("381")
    tk = join_tutorial(server, b"tk")
    tk.recv_until(b"Connected to server!")
    ircop.send("KILL tk :spam")
    assert tk.recv_until_eof() == b"NICKtk joined!Connected to server!" \
        b"Disconnected by the server: Killed (ircop (spam))"
    tk.close()
    ircop.close()


def test_tutorial_client_is_told_the_server_stops(tutorial_server):
    """SIGTERM: the IRC client's "ERROR :Server shutting down" as a plain line, then EOF."""
    tk = join_tutorial(tutorial_server, b"tk")
    tk.recv_until(b"Connected to server!")
    tutorial_server.signal(signal.SIGTERM)
    assert tk.recv_until_eof() == b"NICKtk joined!Connected to server!Server shutting down"
    tk.close()


def test_refused_tutorial_client_gets_the_irc_error_line(make_server):
    """Refused before any worker exists: the IRC ERROR line, then EOF (forkchat(7))."""
    server = make_server(listen=["127.0.0.1:0"],
                         config_text=TEST_LIMITS + "max_clients_per_ip = 1\n",
                         extra_args=["--tutorial-listen", "127.0.0.1:0"])
    first = join_tutorial(server, b"first")
    first.recv_until(b"Connected to server!")
    second = TutorialClient(server.port_of("tutorial"))
    assert second.recv_until_eof() == \
        b"ERROR :Closing Link: 127.0.0.1 (Too many connections from your address)\r\n"
    second.close()
    first.close()


# Four lines at once, then one every 2 s: plenty of time for a round trip
# to show that the fifth line is held, not sent with the first four.
# A token every 5 s: the marker in the pacing test has that long to come back
# before a fifth line could be relayed, whatever the machine's load.
PACED = "[limits]\nflood_burst = 4\nflood_rate = 0.2\n"


@pytest.fixture
def paced_server(make_server):
    return make_server(listen=["127.0.0.1:0"], config_text=PACED,
                       extra_args=["--tutorial-listen", "127.0.0.1:0"])


# A token every 2 s where nothing races the next token but the few
# milliseconds from the fourth line's arrival to the close: two tokens
# waited for cost 4 s, not 10.
PACED_QUICKER = PACED.replace("flood_rate = 0.2", "flood_rate = 0.5")


@pytest.fixture
def quicker_paced_server(make_server):
    return make_server(listen=["127.0.0.1:0"], config_text=PACED_QUICKER,
                       extra_args=["--tutorial-listen", "127.0.0.1:0"])


def numbered_chunk(count: int) -> bytes:
    """One chunk that the server relays as `count` PRIVMSGs of 400 bytes."""
    return b"".join(b"%03d" % index + b"y" * 397 for index in range(count))


def tina_and_alice(server) -> tuple[TutorialClient, IrcTestClient]:
    alice = IrcTestClient(server.port)
    alice.register("alice")              # NICK, USER, JOIN: one token left
    alice.join("#lobby")
    tina = join_tutorial(server, b"tina")
    tina.recv_until(b"Connected to server!")
    alice.expect(lambda m: m.command == "JOIN" and m.prefix.startswith("tina!"))
    return tina, alice


def expect_from_tina(alice: IrcTestClient, timeout: float = 10) -> str:
    said = alice.expect(lambda m: m.command in ("PRIVMSG", "QUIT")
                        and m.prefix.startswith("tina!"), timeout)
    return said.command if said.command == "QUIT" else said.params[-1][:3]


def test_a_long_chunk_is_paced_like_irc_lines(paced_server):
    """Each PRIVMSG a chunk becomes takes a flood token, as an IRC line does."""
    tina, alice = tina_and_alice(paced_server)
    tina.sock.sendall(numbered_chunk(10))
    assert [expect_from_tina(alice) for _ in range(4)] == ["000", "001", "002", "003"]
    alice.send("PRIVMSG #lobby :marker")
    received = tina.recv_until(b"alice: marker")
    assert received.count(b"tina: ") == 4      # the rest waits for tokens
    assert expect_from_tina(alice) == "004"     # held, not dropped
    tina.close()
    alice.close()


def test_chunks_read_before_eof_are_relayed_then_quit(quicker_paced_server):
    """What the server read before the client closed reaches the room first."""
    tina, alice = tina_and_alice(quicker_paced_server)
    tina.sock.sendall(numbered_chunk(5))
    assert [expect_from_tina(alice) for _ in range(4)] == ["000", "001", "002", "003"]
    tina.sock.sendall(b"last words")              # held whole: no token left
    tina.sock.shutdown(socket.SHUT_WR)
    assert tina.recv_until_eof(timeout=30).endswith(b"tina: last words")
    assert expect_from_tina(alice) == "004"
    said = alice.expect(lambda m: m.command in ("PRIVMSG", "QUIT")
                        and m.prefix.startswith("tina!"), 10)
    assert (said.command, said.params[-1]) == ("PRIVMSG", "last words")
    assert expect_from_tina(alice) == "QUIT"
    tina.close()
    alice.close()
