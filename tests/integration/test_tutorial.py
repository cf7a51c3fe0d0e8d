"""The tutorial dialect, driven as the classic chat-room client drives it."""

import socket
import time

import pytest

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
    first.close()
    second.close()
