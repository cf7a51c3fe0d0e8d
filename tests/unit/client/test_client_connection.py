"""The IRC session against a scripted peer on a local socket (no real server).

Each test plays the server's side by hand, so registration, nick collision,
PING, pacing and the flush barrier are checked line by line.
"""

from __future__ import annotations

import select
import selectors
import socket
import threading
import time

import pytest

from forkchat.client import connection, events, ircmsg

DEADLINE_S = 5.0


class Peer:
    """The server side: accept the client, read and write raw lines."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sock: socket.socket | None = None
        self.buffer = b""

    def accept(self) -> None:
        self.listener.settimeout(DEADLINE_S)
        self.sock, _ = self.listener.accept()
        self.sock.setblocking(False)

    def send(self, line: str) -> None:
        assert self.sock is not None
        self.sock.sendall((line + "\r\n").encode())

    def lines(self) -> list[str]:
        """Whatever complete lines have arrived so far."""
        assert self.sock is not None
        try:
            self.buffer += self.sock.recv(65536)
        except BlockingIOError:
            pass
        *done, self.buffer = self.buffer.split(b"\r\n")
        return [line.decode() for line in done]

    def close(self) -> None:
        for sock in (self.sock, self.listener):
            if sock is not None:
                sock.close()


class Harness:
    def __init__(self, peer: Peer, resend: bool = False, confirm: bool = False,
                 **settings) -> None:
        self.sel = selectors.DefaultSelector()
        self.events: list[events.UiEvent] = []
        self.conn = connection.Connection(
            self.sel, connection.Settings(port=peer.port, **settings), self.events.append,
            resend_unconfirmed=resend, confirm_typed=confirm)
        self.peer = peer
        self.seen: list[str] = []

    def turn(self, timeout: float = 0.0) -> None:
        for key, mask in self.sel.select(timeout):
            key.data(mask)
        self.conn.tick()

    def until(self, predicate, what: str) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"never: {what}; peer saw {self.seen}")
            self.turn(0.05)
            if self.peer.sock is not None:
                self.seen += self.peer.lines()

    def expect_line(self, line: str) -> None:
        self.until(lambda: line in self.seen, line)

    def register(self) -> None:
        self.conn.start()
        self.turn(0.1)
        self.peer.accept()
        self.expect_line("USER forkchat 0 * :forkchat client")
        self.peer.send(":srv 001 bob :Welcome")
        self.expect_line("JOIN #lobby")


@pytest.fixture
def peer():
    made = Peer()
    yield made
    made.close()


def test_registration_sends_nick_user_then_joins(peer):
    harness = Harness(peer, nick="bob")
    harness.register()
    assert harness.seen[:2] == ["NICK bob", "USER forkchat 0 * :forkchat client"]
    assert harness.conn.ready
    assert [e.other for e in harness.events if e.kind == "status"] == ["connected"]


def test_password_goes_first(peer):
    harness = Harness(peer, nick="bob", password="s3cret")
    harness.conn.start()
    harness.turn(0.1)
    peer.accept()
    harness.expect_line("USER forkchat 0 * :forkchat client")
    assert harness.seen[0] == "PASS s3cret"


def test_nick_in_use_tries_suffixes(peer):
    harness = Harness(peer, nick="bob")
    harness.conn.start()
    harness.turn(0.1)
    peer.accept()
    harness.expect_line("NICK bob")
    peer.send(":srv 433 * bob :Nickname is already in use")
    harness.expect_line("NICK bob_")
    peer.send(":srv 433 * bob_ :Nickname is already in use")
    harness.expect_line("NICK bob2")
    peer.send(":srv 001 bob2 :Welcome")
    harness.until(lambda: harness.conn.ready, "registered")
    assert harness.conn.nick == "bob2"


def test_ping_is_answered(peer):
    harness = Harness(peer, nick="bob")
    harness.register()
    peer.send("PING :abc123")
    harness.expect_line("PONG abc123")


def test_lines_are_paced_after_a_burst(peer, monkeypatch):
    monkeypatch.setattr(connection, "SEND_INTERVAL_S", 0.02)
    harness = Harness(peer, nick="bob")
    harness.register()
    for n in range(20):
        harness.conn.send(f"PRIVMSG #lobby :{n}")
    harness.turn(0.0)
    harness.seen += peer.lines()
    sent_at_once = [line for line in harness.seen if line.startswith("PRIVMSG")]
    assert len(sent_at_once) < 20
    assert harness.conn.next_timeout() is not None   # the next token is scheduled
    harness.expect_line("PRIVMSG #lobby :19")
    assert [line for line in harness.seen if line.startswith("PRIVMSG")] == [
        f"PRIVMSG #lobby :{n}" for n in range(20)]


def test_flush_waits_for_the_pong_behind_the_lines(peer):
    harness = Harness(peer, nick="bob")
    harness.register()
    flushed: list[bool] = []
    harness.conn.send("PRIVMSG #lobby :last words")
    harness.conn.flush(lambda: flushed.append(True))
    harness.expect_line("PING forkchat-flush-1")
    assert harness.seen.index("PRIVMSG #lobby :last words") < harness.seen.index(
        "PING forkchat-flush-1")
    assert not flushed
    peer.send(":srv PONG srv :forkchat-flush-1")
    harness.until(lambda: flushed, "the flush callback")


def test_failure_before_registration_is_fatal(peer):
    harness = Harness(peer, nick="bob", password="guess")
    harness.conn.start()
    harness.turn(0.1)
    peer.accept()
    peer.send(":srv 464 * :Password incorrect")
    harness.until(lambda: harness.conn.closed, "closed")
    assert "password incorrect" in harness.conn.fatal


def test_loss_after_registration_schedules_a_retry(peer):
    harness = Harness(peer, nick="bob")
    harness.register()
    assert peer.sock is not None
    peer.sock.close()
    peer.sock = None
    harness.until(lambda: harness.conn.state == "waiting", "waiting to reconnect")
    assert not harness.conn.closed
    assert harness.events[-1].other == connection.STATUS_DISCONNECTED


def test_unconfirmed_lines_are_sent_again_after_a_reconnect(peer, monkeypatch):
    monkeypatch.setattr(connection, "RECONNECT_DELAYS_S", (0.01,))
    harness = Harness(peer, resend=True, nick="bob")
    harness.register()
    harness.conn.send("PRIVMSG #lobby :confirmed")
    harness.conn.flush(lambda: None)
    harness.expect_line("PING forkchat-flush-1")
    peer.send(":srv PONG srv :forkchat-flush-1")
    harness.until(lambda: not harness.conn.flush_pending, "the barrier")
    harness.conn.send("PRIVMSG #lobby :maybe lost")
    harness.expect_line("PRIVMSG #lobby :maybe lost")
    assert peer.sock is not None
    peer.sock.close()
    peer.sock, peer.buffer, harness.seen = None, b"", []
    harness.until(lambda: harness.conn.state == "waiting", "waiting to reconnect")
    harness.until(lambda: harness.conn.state == "registering" or peer.listener.fileno() < 0,
                  "a new attempt")
    peer.accept()
    harness.expect_line("USER forkchat 0 * :forkchat client")
    peer.send(":srv 001 bob :Welcome back")
    harness.expect_line("PRIVMSG #lobby :maybe lost")
    assert harness.seen.index("JOIN #lobby") < harness.seen.index("PRIVMSG #lobby :maybe lost")
    assert "PRIVMSG #lobby :confirmed" not in harness.seen


def test_typed_lines_a_dead_link_swallowed_are_sent_again_and_said(peer, monkeypatch):
    """The full-screen interface (confirm_typed): a line written into a
    connection already dead, before the ping timeout notices, was lost
    without a word; line mode resent it.  The connection now puts a barrier
    behind typed lines itself, one at a time, and resends what no PONG
    confirmed, saying how many lines with the loss."""
    monkeypatch.setattr(connection, "RECONNECT_DELAYS_S", (0.01,))
    harness = Harness(peer, confirm=True, nick="bob")
    harness.register()
    harness.conn.send("PRIVMSG #lobby :confirmed")
    harness.expect_line("PING forkchat-flush-1")
    peer.send(":srv PONG srv :forkchat-flush-1")
    harness.until(lambda: not harness.conn.flush_pending, "the barrier's PONG")
    for text in ("into the void", "and this"):
        harness.conn.send(f"PRIVMSG #lobby :{text}")
    harness.expect_line("PRIVMSG #lobby :and this")
    assert [line for line in harness.seen if line.startswith("PING")] == [
        "PING forkchat-flush-1", "PING forkchat-flush-2"], "one barrier in flight at a time"
    register_again(harness, peer)
    harness.expect_line("PRIVMSG #lobby :and this")
    assert harness.seen.index("PRIVMSG #lobby :into the void") < harness.seen.index(
        "PRIVMSG #lobby :and this")
    assert "PRIVMSG #lobby :confirmed" not in harness.seen
    lost = [e.text for e in harness.events if e.other == connection.STATUS_DISCONNECTED]
    assert lost[-1].endswith("; 2 lines not confirmed by the server will be sent again")


def test_lines_typed_behind_another_barrier_get_one_of_their_own(peer):
    """A barrier of the interface's own (the PING behind a /names) held
    back the one that confirms typed lines; its PONG called back and put
    none behind the lines typed meanwhile, left unconfirmed: sent twice
    if the link was lost later."""
    harness = Harness(peer, confirm=True, nick="bob")
    harness.register()
    answered: list[bool] = []
    harness.conn.flush(lambda: answered.append(True))
    harness.expect_line("PING forkchat-flush-1")
    harness.conn.send("PRIVMSG #lobby :typed meanwhile")
    harness.expect_line("PRIVMSG #lobby :typed meanwhile")
    peer.send(":srv PONG srv :forkchat-flush-1")
    harness.until(lambda: answered, "the callback")
    harness.expect_line("PING forkchat-flush-2")
    peer.send(":srv PONG srv :forkchat-flush-2")
    harness.until(lambda: not harness.conn.unconfirmed, "the typed line confirmed")


@pytest.fixture
def bob(peer, monkeypatch) -> Harness:
    """A registered connection as bob that reconnects at once."""
    monkeypatch.setattr(connection, "RECONNECT_DELAYS_S", (0.01,))
    harness = Harness(peer, nick="bob")
    harness.register()
    return harness


def register_again(harness: Harness, peer: Peer) -> None:
    """Drop the link and let the client reconnect, up to the server's 001;
    what it sends from then on lands in harness.seen."""
    assert peer.sock is not None
    peer.sock.close()
    peer.sock, peer.buffer, harness.seen = None, b"", []
    harness.until(lambda: harness.conn.state == "waiting", "waiting to reconnect")
    harness.until(lambda: harness.conn.state == "registering", "a new attempt")
    peer.accept()
    harness.expect_line("USER forkchat 0 * :forkchat client")
    peer.send(":srv 001 bob :Welcome back")


def reconnect(harness: Harness, peer: Peer) -> None:
    """Drop the link and register again: the rejoin lines land in harness.seen."""
    register_again(harness, peer)
    harness.until(lambda: any(line.startswith("JOIN") for line in harness.seen), "the rejoin")


def joins_sent(harness: Harness) -> list[str]:
    """The rooms joined since the reconnect, sorted, as `JOIN #room [key]`
    each, from the rejoin's lines (which name several rooms at once)."""
    joins = []
    for line in harness.seen:
        if line.startswith("JOIN "):
            _, rooms, *keys = line.split(" ")
            given = keys[0].split(",") if keys else []
            for index, room in enumerate(rooms.split(",")):
                joins.append(f"JOIN {room} {given[index]}" if index < len(given)
                             else f"JOIN {room}")
    return sorted(joins)


def expect_join(harness: Harness, join: str) -> None:
    """Wait for a rejoin of one room (`JOIN #room [key]`), in whichever line."""
    harness.until(lambda: join in joins_sent(harness), join)


def test_rejoin_gives_the_key_of_our_own_join(peer, bob):
    """A restarted server asks the first one back for the room's key."""
    harness = bob
    harness.conn.send("JOIN #vault,#open,#wrong sesame,,guess")
    harness.expect_line("JOIN #vault,#open,#wrong sesame,,guess")
    peer.send(":bob!u@h JOIN #vault")
    peer.send(":bob!u@h JOIN #open")
    peer.send(":srv 475 bob #wrong :Cannot join channel (+k)")
    harness.conn.send("JOIN #wrong")                  # later, once the key is gone
    peer.send(":bob!u@h JOIN #wrong")
    harness.until(lambda: "#wrong" in harness.conn.rooms, "the joins")
    reconnect(harness, peer)
    expect_join(harness, "JOIN #wrong")
    assert joins_sent(harness) == [
        "JOIN #lobby", "JOIN #open", "JOIN #vault sesame", "JOIN #wrong"]


def test_rejoin_follows_key_modes_seen_in_the_room(peer, bob):
    harness = bob
    for room in ("#a", "#b", "#c", "#gone"):
        peer.send(f":bob!u@h JOIN {room}")
    peer.send(":srv 005 bob CHANMODES=beI,k,lf,imnpst PREFIX=(qov)~@+ :are supported")
    peer.send(":op!u@h MODE #a +qlfk owner 10 flood akey")   # key after three parameters
    peer.send(":op!u@h MODE #b +k first")
    peer.send(":op!u@h MODE #b -k *")                         # key removed
    peer.send(":op!u@h MODE #c +k old")
    peer.send(":op!u@h MODE #c -l+k new")                     # -l takes no parameter
    peer.send(":op!u@h MODE #gone +k secret")
    peer.send(":bob!u@h PART #gone")
    peer.send(":op!u@h MODE #elsewhere +k notours")
    harness.until(lambda: "#gone" not in harness.conn.rooms, "the part")
    reconnect(harness, peer)
    expect_join(harness, "JOIN #c new")
    assert joins_sent(harness) == [
        "JOIN #a akey", "JOIN #b", "JOIN #c new", "JOIN #lobby"]


def test_a_rejoin_of_many_rooms_does_not_hold_back_what_was_typed(peer, bob):
    """One JOIN per room went out at the pace (8, then one every 0.6 s):
    in 26 rooms, a line typed while the server was away waited 11 s."""
    harness = bob
    rooms = [f"#room{number}" for number in range(25)]
    for room in rooms:
        peer.send(f":bob!u@h JOIN {room}")
    peer.send(":op!u@h MODE #room7 +k sesame")
    harness.until(lambda: len(harness.conn.rooms) == 26, "the joins")
    register_again(harness, peer)
    harness.conn.send("PRIVMSG #room3 :typed meanwhile")   # before the 001 is read
    harness.expect_line("PRIVMSG #room3 :typed meanwhile")
    joins = [line for line in harness.seen if line.startswith("JOIN")]
    assert harness.seen.index(joins[-1]) < harness.seen.index("PRIVMSG #room3 :typed meanwhile")
    assert joins[0] == "JOIN #room7 sesame"
    assert len(joins) == 4 and all(len(line) < 510 for line in joins)
    assert joins_sent(harness) == sorted(
        ["JOIN #lobby"] + [f"JOIN {room}" for room in rooms if room != "#room7"]
        + ["JOIN #room7 sesame"])


def test_rejoin_lines_keep_within_an_irc_line():
    long_rooms = [f"#{'x' * 45}{number}" for number in range(12)]
    lines = connection.join_lines(long_rooms, {ircmsg.casefold(long_rooms[0]): "k" * 20})
    assert lines[0] == f"JOIN {long_rooms[0]} {'k' * 20}"
    assert all(len(line) <= connection.REJOIN_BYTES + 10 for line in lines)
    assert ",".join(line.split(" ")[1] for line in lines[1:]) == ",".join(long_rooms[1:])


def test_away_is_set_again_after_a_reconnect_and_back_is_not(peer, bob):
    """A restarted server knows everyone as back: away for lunch, the user
    came back to find the client reconnected and shown as present."""
    harness = bob
    harness.conn.send("AWAY :gone to lunch")
    harness.expect_line("AWAY :gone to lunch")
    peer.send(":srv 306 bob :You have been marked as being away")
    harness.until(lambda: harness.conn.away == "gone to lunch", "away noted")
    reconnect(harness, peer)
    harness.expect_line("AWAY :gone to lunch")
    assert harness.seen.index("JOIN #lobby") < harness.seen.index("AWAY :gone to lunch")
    peer.send(":srv 306 bob :You have been marked as being away")
    harness.conn.send("AWAY")
    harness.expect_line("AWAY")
    peer.send(":srv 305 bob :You are no longer marked as being away")
    harness.until(lambda: harness.conn.away == "", "back noted")
    reconnect(harness, peer)
    harness.conn.send("PRIVMSG #lobby :after")
    harness.expect_line("PRIVMSG #lobby :after")
    assert not [line for line in harness.seen if line.startswith("AWAY")]


def test_a_refused_rejoin_forgets_the_room(peer, bob):
    """Banned (or the key changed) while away: no retry after every reconnect."""
    harness = bob
    peer.send(":bob!u@h JOIN #lobby")
    peer.send(":bob!u@h JOIN #banned")
    harness.until(lambda: "#banned" in harness.conn.rooms, "the join")
    reconnect(harness, peer)
    expect_join(harness, "JOIN #banned")
    peer.send(":srv 474 bob #banned :Cannot join channel (+b)")
    peer.send(":bob!u@h JOIN #lobby")
    harness.until(lambda: "#banned" not in harness.conn.rooms, "#banned forgotten")
    [error] = [e for e in harness.events if e.kind == "error"]
    assert (error.buffer, error.text) == ("#banned", "#banned: Cannot join channel (+b)")
    reconnect(harness, peer)
    harness.expect_line("JOIN #lobby")
    assert "JOIN #banned" not in harness.seen


@pytest.mark.parametrize("password, wanted, unwanted", [
    (None, "--password-file", "incorrect"),
    ("wrong", "password incorrect", "(Password incorrect)"),
])
def test_a_refused_password_says_what_to_do(peer, password, wanted, unwanted):
    """A server with a password, reached without one, answers 464 "Password
    incorrect": the user gave none, so the hint is --password-file; and the
    server's words are not repeated when they say the same."""
    harness = Harness(peer, nick="bob", password=password)
    harness.conn.start()
    harness.turn(0.1)
    peer.accept()
    peer.send(":srv 464 * :Password incorrect")
    harness.until(lambda: harness.conn.closed, "closed")
    assert wanted in harness.conn.fatal and unwanted not in harness.conn.fatal


def test_a_too_long_nick_is_refused_with_the_servers_reason_once(peer):
    """Before 005 the client cannot know NICKLEN; the server's 432 text says
    what is wrong, and it is shown once, not as "x (X: y)"."""
    harness = Harness(peer, nick="bob")
    harness.conn.start()
    harness.turn(0.1)
    peer.accept()
    peer.send(":srv 432 * bob :Erroneous nickname: longer than 30 characters")
    harness.until(lambda: harness.conn.closed, "closed")
    assert harness.conn.fatal.endswith("erroneous nickname: longer than 30 characters")


def test_the_servers_last_words_beat_a_write_error(peer):
    """A server that refuses the connection (too many from the address) sends
    ERROR and closes.  If our next write fails first (EPIPE, ECONNRESET), the
    user must read the server's reason, not "Broken pipe": the ERROR line is
    still in the receive buffer."""
    import select
    import struct
    harness = Harness(peer, nick="bob")
    harness.conn.start()
    harness.turn(0.1)
    peer.accept()
    harness.expect_line("USER forkchat 0 * :forkchat client")
    peer.send("ERROR :Closing Link: 127.0.0.1 (Too many connections from your address)")
    assert peer.sock is not None
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.sock.close()
    peer.sock = None
    mine = harness.conn._link._sock
    watch = select.poll()
    watch.register(mine, select.POLLERR | select.POLLHUP)
    assert watch.poll(DEADLINE_S * 1000), "the reset never arrived"
    harness.conn._link.write("PING :still there")   # before reading: the race
    harness.until(lambda: harness.conn.closed, "closed")
    assert "Too many connections from your address" in harness.conn.fatal


def test_a_server_that_never_welcomes_us_is_not_a_connect_timeout(peer, monkeypatch):
    """forkchat-client pointed at the tutorial port: TCP connects, the peer
    says `NICK` and never 001.  "timed out connecting" sent the user to look
    at the network; the port is what is wrong."""
    monkeypatch.setattr(connection, "CONNECT_TIMEOUT_S", 0.3)
    harness = Harness(peer, nick="bob")
    harness.conn.start()
    harness.turn(0.1)
    peer.accept()
    peer.sock.sendall(b"NICK")
    harness.until(lambda: harness.conn.closed, "closed")
    assert "timed out connecting" not in harness.conn.fatal
    assert "no IRC welcome" in harness.conn.fatal


def test_tls_to_a_plain_port_says_so_in_words(peer):
    """`--tls` to a plain IRC port: OpenSSL's WRONG_VERSION_NUMBER means the
    other end does not speak TLS there."""
    harness = Harness(peer, nick="bob", tls=True, insecure=True)
    harness.conn.start()
    harness.turn(0.1)
    peer.accept()
    peer.send(":srv NOTICE * :*** Looking up your hostname")
    harness.until(lambda: harness.conn.closed, "closed")
    assert "does not speak TLS" in harness.conn.fatal, harness.conn.fatal


def test_the_servers_last_words_in_the_same_read_as_a_ping(peer):
    """`PING` and `ERROR :why` arrive in one read, the peer already gone: our
    PONG fails, and the ERROR behind the PING must still be read."""
    import select
    import struct
    harness = Harness(peer, nick="bob")
    harness.register()
    assert peer.sock is not None
    peer.sock.sendall(b"PING :x\r\nERROR :Closing Link: 127.0.0.1 (Killed (op (bye)))\r\n")
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.sock.close()
    peer.sock = None
    watch = select.poll()
    watch.register(harness.conn._link._sock, select.POLLERR | select.POLLHUP)
    assert watch.poll(DEADLINE_S * 1000), "the reset never arrived"
    harness.until(lambda: harness.conn.state == "waiting", "the loss")
    lost = [e.text for e in harness.events if e.other == connection.STATUS_DISCONNECTED]
    assert "Killed (op (bye))" in lost[-1], lost


def close_peer_side(peer: Peer) -> None:
    """The server closes the connection, as it does after a QUIT."""
    assert peer.sock is not None
    peer.sock.close()
    peer.sock = None


def test_a_raw_quit_leaves_instead_of_reconnecting(peer):
    """`/raw QUIT :bye` meant leaving: the user's line goes out as typed,
    after the lines before it, and the close that follows ends the session."""
    harness = Harness(peer, nick="bob")
    harness.register()
    harness.conn.send("PRIVMSG #lobby :last words")
    harness.conn.send("quit :by hand")
    harness.conn.send("PRIVMSG #lobby :after the quit")
    harness.expect_line("quit :by hand")   # as typed
    assert harness.seen.index("PRIVMSG #lobby :last words") < harness.seen.index("quit :by hand")
    assert harness.conn.quitting
    close_peer_side(peer)
    harness.until(lambda: harness.conn.closed, "closed")
    assert not harness.conn.fatal and harness.conn.state == "closed"
    assert "PRIVMSG #lobby :after the quit" not in harness.seen
    assert not [e for e in harness.events if e.other == connection.STATUS_DISCONNECTED]


def test_a_raw_quit_while_disconnected_ends_at_once(peer, monkeypatch):
    monkeypatch.setattr(connection, "RECONNECT_DELAYS_S", (30.0,))
    harness = Harness(peer, nick="bob")
    harness.register()
    close_peer_side(peer)
    harness.until(lambda: harness.conn.state == "waiting", "waiting to reconnect")
    harness.conn.send("QUIT")
    assert harness.conn.closed and not harness.conn.fatal


def register_as_second_choice(harness: Harness, peer: Peer) -> None:
    """bob is taken: the session registers as bob_."""
    harness.conn.start()
    harness.turn(0.1)
    peer.accept()
    harness.expect_line("NICK bob")
    peer.send(":srv 433 * bob :Nickname is already in use")
    harness.expect_line("NICK bob_")
    peer.send(":srv 001 bob_ :Welcome")
    harness.expect_line("JOIN #lobby")


def test_the_wanted_nick_is_taken_back_when_its_holder_quits(peer):
    harness = Harness(peer, nick="bob")
    register_as_second_choice(harness, peer)
    peer.send(":Bob!u@h QUIT :gone")
    harness.until(lambda: harness.seen[-1] == "NICK bob", "NICK bob")
    peer.send(":bob_!forkchat@h NICK :bob")
    harness.until(lambda: harness.conn.nick == "bob", "our nick back")
    assert [e.kind for e in harness.events if e.kind == "quit"] == ["quit"]   # still shown


def test_the_wanted_nick_is_taken_back_when_its_holder_renames(peer):
    harness = Harness(peer, nick="bob")
    register_as_second_choice(harness, peer)
    peer.send(":carol!u@h QUIT :not the one")
    peer.send(":bob!u@h NICK :robert")
    harness.until(lambda: harness.seen[-1] == "NICK bob", "NICK bob")
    assert harness.seen.count("NICK bob") == 2       # the first try, then this one


def test_a_lost_race_for_the_wanted_nick_stays_quiet(peer):
    harness = Harness(peer, nick="bob")
    register_as_second_choice(harness, peer)
    peer.send(":bob!u@h QUIT :gone")
    harness.until(lambda: harness.seen[-1] == "NICK bob", "NICK bob")
    peer.send(":srv 433 bob_ bob :Nickname is already in use")
    peer.send(":srv 433 bob_ carol :Nickname is already in use")   # a /nick carol: shown
    harness.until(lambda: any(e.kind == "error" for e in harness.events), "an error")
    assert [e.text for e in harness.events if e.kind == "error"] == [
        "carol: Nickname is already in use"]
    assert harness.conn.nick == "bob_"


def test_a_quit_split_by_a_tab_is_not_a_quit(peer):
    """Servers split words on spaces only: 'QUIT<tab>:bye' is an unknown
    command to them (421), so the client must not start leaving on it."""
    harness = Harness(peer, nick="bob")
    harness.register()
    harness.conn.send("QUIT\t:bye")
    harness.until(lambda: harness.seen[-1] == "QUIT\t:bye", "the line sent as typed")
    assert not harness.conn.quitting


def test_a_users_nick_after_an_unanswered_regain_shows_its_433(peer):
    """The server answered the regain with something else than 433 (a 432,
    or another server's 438 "too fast"): the user's own /nick's 433 still
    shows."""
    harness = Harness(peer, nick="bob")
    register_as_second_choice(harness, peer)
    peer.send(":bob!u@h QUIT :gone")
    harness.until(lambda: harness.seen[-1] == "NICK bob", "NICK bob")
    peer.send(":srv 438 bob_ bob :Nick change too fast")
    harness.conn.send("NICK bob")
    harness.until(lambda: harness.seen[-1] == "NICK bob" and len(harness.seen) >= 2
                  and harness.seen[-2] == "NICK bob", "the user's NICK bob")
    peer.send(":srv 433 bob_ bob :Nickname is already in use")
    shown = "bob: Nickname is already in use"
    harness.until(lambda: any(e.kind == "error" and e.text == shown for e in harness.events),
                  "the 433 shown")
    assert harness.conn.nick == "bob_"


def test_a_reconnect_tries_the_wanted_nick_first(peer, monkeypatch):
    monkeypatch.setattr(connection, "RECONNECT_DELAYS_S", (0.01,))
    harness = Harness(peer, nick="bob")
    register_as_second_choice(harness, peer)
    close_peer_side(peer)
    harness.seen, peer.buffer = [], b""
    harness.until(lambda: harness.conn.state == "connecting", "reconnecting")
    peer.accept()
    harness.expect_line("USER forkchat 0 * :forkchat client")
    assert harness.seen[0] == "NICK bob"


def test_a_raw_quit_waiting_behind_lines_survives_a_loss_in_line_mode(peer, monkeypatch):
    """Line mode promises every line reaches the server before it quits: a
    raw QUIT still queued behind paced lines when the link drops is not yet
    leaving, so the session reconnects, sends those lines, then the QUIT."""
    monkeypatch.setattr(connection, "RECONNECT_DELAYS_S", (0.01,))
    monkeypatch.setattr(connection, "SEND_INTERVAL_S", 30.0)
    harness = Harness(peer, resend=True, nick="bob")
    harness.register()
    for n in range(connection.SEND_BURST + 2):
        harness.conn.send(f"PRIVMSG #lobby :line {n}")
    harness.conn.send("QUIT :by hand")
    assert harness.conn.quitting
    harness.conn.send("PRIVMSG #lobby :after the quit")
    close_peer_side(peer)
    harness.until(lambda: harness.conn.state != "ready", "the loss")
    assert not harness.conn.closed, "a queued QUIT ended the session with lines unsent"
    monkeypatch.setattr(connection, "SEND_INTERVAL_S", 0.01)
    harness.seen, peer.buffer = [], b""
    harness.until(lambda: harness.conn.state == "connecting", "reconnecting")
    peer.accept()
    harness.expect_line("USER forkchat 0 * :forkchat client")
    peer.send(":srv 001 bob :Welcome")
    harness.expect_line("QUIT :by hand")
    quit_at = harness.seen.index("QUIT :by hand")
    last = f"PRIVMSG #lobby :line {connection.SEND_BURST + 1}"
    assert last in harness.seen[:quit_at]
    assert "PRIVMSG #lobby :after the quit" not in harness.seen
    close_peer_side(peer)
    harness.until(lambda: harness.conn.closed, "closed after the QUIT")
    assert not harness.conn.fatal


def test_a_raw_quit_while_disconnected_in_line_mode_waits_for_the_lines_before(peer, monkeypatch):
    monkeypatch.setattr(connection, "RECONNECT_DELAYS_S", (0.2,))
    harness = Harness(peer, resend=True, nick="bob")
    harness.register()
    close_peer_side(peer)
    harness.until(lambda: harness.conn.state == "waiting", "waiting to reconnect")
    harness.conn.send("PRIVMSG #lobby :typed while away")
    harness.conn.send("QUIT :by hand")
    assert not harness.conn.closed and harness.conn.quitting
    harness.seen, peer.buffer = [], b""
    harness.until(lambda: harness.conn.state == "connecting", "reconnecting")
    peer.accept()
    harness.expect_line("USER forkchat 0 * :forkchat client")
    peer.send(":srv 001 bob :Welcome")
    harness.expect_line("QUIT :by hand")
    assert harness.seen.index("PRIVMSG #lobby :typed while away") < harness.seen.index("QUIT :by hand")


def test_the_servers_words_reach_the_user_without_control_characters(peer):
    """ERROR's text and a refusal's detail are printed on stderr (line mode,
    and the full-screen mode's last line): an escape sequence in them went
    to the terminal raw."""
    harness = Harness(peer, nick="bob")
    harness.register()
    peer.send("ERROR :Closing Link: \x1b[2J\x1b]0;owned\x07gone")
    close_peer_side(peer)
    harness.until(lambda: any(e.other == connection.STATUS_DISCONNECTED
                              for e in harness.events), "the disconnect")
    [lost] = [e for e in harness.events if e.other == connection.STATUS_DISCONNECTED]
    assert "\x1b" not in lost.text and "\x07" not in lost.text
    assert "Closing Link: [2J]0;ownedgone" in lost.text
    harness.conn.quit()


def test_a_refusals_detail_reaches_the_user_without_control_characters(peer):
    harness = Harness(peer, nick="bob")
    harness.conn.start()
    harness.turn(0.1)
    peer.accept()
    peer.send(":srv 465 * :You are banned \x1b[31mforever\x1b[0m")
    harness.until(lambda: harness.conn.closed, "closed")
    assert "\x1b" not in harness.conn.fatal
    assert harness.conn.fatal.endswith("(You are banned [31mforever[0m)")


def test_a_line_too_long_to_keep_is_dropped_whole(peer):
    """Past 64 KiB without a newline the buffer was emptied, and the rest
    of that line, once its newline came, was shown as a message of its own
    (`HELLO world hello ...` in the status buffer)."""
    harness = Harness(peer, nick="bob")
    harness.register()
    assert peer.sock is not None
    sock = peer.sock
    data = (b":alice!a@h PRIVMSG #lobby :" + b"hello world " * 20000 + b"TAIL\r\n"
            + b":alice!a@h PRIVMSG #lobby :after\r\n")

    def push() -> None:
        """All of it, as the client reads (the peer socket stays non-blocking)."""
        view = memoryview(data)
        while view:
            select.select([], [sock], [], DEADLINE_S)
            try:
                view = view[sock.send(view):]
            except BlockingIOError:
                pass
    sender = threading.Thread(target=push, daemon=True)
    sender.start()      # more than the socket buffers hold
    harness.until(lambda: any(e.text == "after" for e in harness.events), "the next line")
    sender.join(DEADLINE_S)
    assert not [e for e in harness.events if "TAIL" in e.text or "hello" in e.text.lower()]
    harness.conn.quit()


def test_nothing_goes_out_after_the_quit_of_a_quit_command(peer, monkeypatch):
    """/quit writes QUIT at once, ahead of the paced queue: the lines still
    queued went out after it as the pace allowed (the server drops what
    follows a QUIT), while the count of the unsent ones, said on leaving,
    left them out."""
    monkeypatch.setattr(connection, "SEND_INTERVAL_S", 0.02)
    harness = Harness(peer, nick="bob")
    harness.register()
    for n in range(20):
        harness.conn.send(f"PRIVMSG #lobby :{n}")
    harness.conn.quit("bye")
    harness.expect_line("QUIT bye")
    deadline = time.monotonic() + 40 * connection.SEND_INTERVAL_S
    while time.monotonic() < deadline:          # time for the whole queue to go, paced
        harness.turn(0.01)
        harness.seen += peer.lines()
    after = harness.seen[harness.seen.index("QUIT bye") + 1:]
    assert after == []
    sent = [line for line in harness.seen if line.startswith("PRIVMSG")]
    assert harness.conn.unsent == 20 - len(sent) > 0
    close_peer_side(peer)
    harness.until(lambda: harness.conn.closed, "closed")


def test_ctcp_answers_are_few_and_not_the_users_lines(peer):
    """A CTCP VERSION flood (from anyone, in a shared room) queued one paced
    NOTICE each, ahead of what the user typed next (100 requests: a minute
    of delay), and counted them as the user's unsent lines on leaving and
    after a signal.  Now a few answers wait at most; the rest are dropped."""
    harness = Harness(peer, nick="bob", resend=True)
    for n in range(100):
        harness.conn._handle_raw(b":mallory!m@h PRIVMSG #lobby :\x01VERSION\x01")
    harness.conn._handle_raw(b":mallory!m@h PRIVMSG bob :\x01PING 42\x01")
    harness.conn.send("PRIVMSG #lobby :mine")
    queued = [line for line, _ in harness.conn._queue]
    answers = [line for line in queued if line.startswith("NOTICE mallory")]
    assert 0 < len(answers) <= connection.CTCP_ANSWERS_QUEUED
    assert queued[-1] == "PRIVMSG #lobby :mine"
    assert harness.conn.unsent == 1
    harness.conn.quit()


def test_a_nick_held_back_by_the_server_tries_a_suffix_too(peer):
    """437 (ERR_UNAVAILRESOURCE): ratbox, charybdis and solanum hold a nick
    back for a while after a netsplit (nick delay).  It went unanswered at
    registration: 15 s of silence, then 'sent no IRC welcome ... is it an
    IRC port?' and the end."""
    harness = Harness(peer, nick="bob")
    harness.conn.start()
    harness.turn(0.1)
    peer.accept()
    harness.expect_line("NICK bob")
    peer.send(":srv 437 * bob :Nick/channel is temporarily unavailable")
    harness.expect_line("NICK bob_")
    peer.send(":srv 001 bob_ :Welcome")
    harness.until(lambda: harness.conn.ready, "registered")
    assert harness.conn.nick == "bob_"
    harness.conn.quit()


def test_a_list_or_who_is_awaited_until_its_end_numeric_and_not_past_a_reconnect(
        peer, monkeypatch):
    monkeypatch.setattr(connection, "RECONNECT_DELAYS_S", (0.01,))
    harness = Harness(peer, nick="bob")
    harness.register()
    assert harness.conn.awaited() is None
    harness.conn.send("LIST")
    harness.conn.send("WHO #lobby")
    harness.expect_line("WHO #lobby")
    assert harness.conn.awaited()[0] == "LIST"
    peer.send(":srv 263 bob LIST :Please wait a while and try again.")
    peer.send(":srv 323 bob :End of /LIST")
    harness.until(lambda: harness.conn.awaited()[0] == "WHO", "the LIST answered")
    peer.send(":srv 421 bob WHO :Unknown command")     # a server without WHO: no 315
    harness.until(lambda: harness.conn.awaited() is None, "the WHO refused")
    harness.conn.send("WHO #lobby")
    harness.expect_line("WHO #lobby")
    assert harness.conn.awaited()[0] == "WHO"
    register_again(harness, peer)
    harness.until(lambda: harness.conn.ready, "registered again")
    assert harness.conn.awaited() is None   # the new connection owes no answer


def reconnect_until_nick(harness: Harness, peer: Peer) -> None:
    """Drop the link and let the client connect again, up to its NICK."""
    close_peer_side(peer)
    harness.seen, peer.buffer = [], b""
    harness.until(lambda: harness.conn.state == "connecting", "reconnecting")
    peer.accept()
    harness.expect_line("USER forkchat 0 * :forkchat client")


def test_a_nicklen_lowered_at_a_restart_cuts_the_nick_instead_of_ending(peer, monkeypatch):
    """A server restarted with a lower NICKLEN refused the nick at the
    reconnect (432) and the client ended, though nothing was typed wrong:
    it cuts the nick to the length forkchat names and says so; a 433 for
    the cut nick then gets a suffix that still fits."""
    monkeypatch.setattr(connection, "RECONNECT_DELAYS_S", (0.01,))
    harness = Harness(peer, nick="alexandria")
    harness.conn.start()
    harness.turn(0.1)
    peer.accept()
    harness.expect_line("USER forkchat 0 * :forkchat client")
    peer.send(":srv 001 alexandria :Welcome")
    harness.expect_line("JOIN #lobby")
    reconnect_until_nick(harness, peer)
    assert harness.seen[0] == "NICK alexandria"
    peer.send(":srv 432 * alexandria :Erroneous nickname: longer than 6 characters")
    harness.expect_line("NICK alexan")
    peer.send(":srv 433 * alexan :Nickname is already in use")
    harness.expect_line("NICK alexan_")
    peer.send(":srv 432 * alexan_ :Erroneous nickname: longer than 6 characters")
    harness.expect_line("NICK alexa_")
    peer.send(":srv 001 alexa_ :Welcome")
    harness.until(lambda: harness.conn.ready, "registered")
    assert not harness.conn.closed and harness.conn.nick == "alexa_"
    said = [e.text for e in harness.events if e.kind == "status"]
    assert ("Nickname alexandria refused by the server (Erroneous nickname:"
            " longer than 6 characters), trying alexan") in said


def test_a_nick_refused_at_a_reconnect_without_a_length_is_cut_by_one(peer, monkeypatch):
    """Another server's 432 names no length: one character shorter each
    time, and only when nothing is left does the session end."""
    monkeypatch.setattr(connection, "RECONNECT_DELAYS_S", (0.01,))
    harness = Harness(peer, nick="bob")
    harness.register()
    reconnect_until_nick(harness, peer)
    for refused, then in (("bob", "bo"), ("bo", "b")):
        peer.send(f":srv 432 * {refused} :Erroneous nickname")
        harness.expect_line(f"NICK {then}")
    assert not harness.conn.closed
    peer.send(":srv 432 * b :Erroneous nickname")
    harness.until(lambda: harness.conn.closed, "the end")
    assert harness.conn.fatal.endswith("erroneous nickname")


@pytest.mark.parametrize("line", [b"PRIVMSG bob :\x01VERSION\x01",
                                  b":!u@h PRIVMSG bob :\x01PING 1\x01",
                                  b":: PRIVMSG #lobby :\x01VERSION\x01",
                                  b":ev\x00il!u@h PRIVMSG bob :\x01VERSION\x01"])
def test_a_ctcp_request_from_no_nick_gets_no_answer_and_no_traceback(peer, line):
    """A CTCP request with no prefix, or a prefix with no nick in it (or a
    NUL in it), from an odd or hostile server: the NOTICE to answer it could
    not be built (ValueError, the client ended in a traceback).  It is
    shown, unanswered."""
    harness = Harness(peer, nick="bob")
    harness.register()
    harness.conn._handle_raw(line)
    harness.conn._handle_raw(b":alice!a@h PRIVMSG bob :\x01VERSION\x01")
    harness.expect_line("NOTICE alice :\x01VERSION forkchat-client\x01")
    assert not any(line.startswith("NOTICE :") or line == "NOTICE" for line in harness.seen)
    harness.conn.quit()


def test_a_bare_432_after_a_collision_tries_a_shorter_nick_without_a_traceback(peer):
    """A 432 with no parameters (an odd server's), answering our second
    try after a 433: its reason was read as msg.params[-1], an IndexError
    that ended the client in a traceback."""
    harness = Harness(peer, nick="bob")
    harness.conn.start()
    harness.turn(0.1)
    peer.accept()
    harness.expect_line("NICK bob")
    peer.send(":srv 433 * bob :Nickname is already in use")
    harness.expect_line("NICK bob_")
    peer.send(":srv 432")
    harness.expect_line("NICK bo_")
    said = [e.text for e in harness.events if e.kind == "status"]
    assert "Nickname bob_ refused by the server, trying bo_" in said
    harness.conn.quit()


def test_a_server_that_pings_without_reading_is_dropped_not_buffered_for(peer, monkeypatch):
    """A server sending PINGs and reading nothing: each PONG waited in the
    link's output buffer, which grew for as long as the storm lasted.  Past
    MAX_OUTBUF_BYTES the link is given up as stalled, and reconnected."""
    from forkchat.client import transport
    monkeypatch.setattr(transport, "MAX_OUTBUF_BYTES", 1 << 16)
    harness = Harness(peer, nick="bob")
    harness.register()
    storm = (b"PING :" + b"x" * 400 + b"\r\n") * 40000    # 16 MB of PONGs to write
    sender = threading.Thread(target=lambda: _send_all(peer.sock, storm), daemon=True)
    sender.start()
    lost = lambda: any(e.kind == "status" and transport.STALLED in e.text
                       for e in harness.events)
    deadline = time.monotonic() + 30
    while not lost() and time.monotonic() < deadline:
        for key, mask in harness.sel.select(0.05):
            key.data(mask)
        assert len(harness.conn._link._out) <= (1 << 16) + 512
    assert lost() and harness.conn.state == "waiting"
    harness.conn.close_now()
    peer.close()
    sender.join(10)


def _send_all(sock: socket.socket, data: bytes) -> None:
    """Send from a thread until done or the client goes (the test's end)."""
    sock.setblocking(True)
    try:
        sock.sendall(data)
    except OSError:
        pass


def test_a_nick_the_server_gave_us_is_said_clean_in_the_news_of_the_link(peer, monkeypatch):
    """The server renamed us (NICK) to a nick with an escape in it; at the
    reconnect, its 433 was told as `Nickname bob<ESC>]0;x<BEL> is already
    in use`, which line mode prints on stderr as it is: to the terminal."""
    monkeypatch.setattr(connection, "RECONNECT_DELAYS_S", (0.01,))
    harness = Harness(peer, nick="bob")
    harness.register()
    peer.send(":bob!u@h NICK :bob\x1b]0;x\x07\u202e")
    harness.until(lambda: harness.conn.nick != "bob", "renamed")
    reconnect_until_nick(harness, peer)
    peer.send(":srv 433 * bob :Nickname is already in use")
    harness.until(lambda: any("already in use" in e.text for e in harness.events), "the 433")
    said = [e.text for e in harness.events if e.kind == "status"]
    assert all(events.sanitize(text) == text for text in said), said
    harness.conn.quit()


def test_lines_behind_one_whose_write_failed_are_sent_after_the_reconnect(peer, monkeypatch):
    """A burst of queued lines met a connection the server had reset: the
    first write failed and the link was lost, but the same turn went on
    taking lines out of the queue into the dead link.  They counted as
    sent but unconfirmed, and the next flush barrier's answer took them as
    confirmed: line mode's lines, promised at least once, lost silently."""
    import struct
    monkeypatch.setattr(connection, "RECONNECT_DELAYS_S", (0.01,))
    harness = Harness(peer, nick="bob", resend=True)
    harness.register()
    harness.until(lambda: harness.conn._tokens >= 6, "a burst's worth of tokens")
    assert peer.sock is not None
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.sock.close()                       # a reset: the next write fails at once
    peer.sock, peer.buffer, harness.seen = None, b"", []
    ours = harness.conn._link._sock
    assert select.select([ours], [], [], DEADLINE_S)[0]     # the reset has come
    wanted = [f"PRIVMSG #lobby :line {n}" for n in range(5)]
    harness.conn._queue.extend((line, True) for line in wanted)
    harness.conn._pump()
    assert harness.conn.state == "waiting"
    harness.until(lambda: harness.conn.state == "registering", "a new attempt")
    peer.accept()
    harness.expect_line("USER forkchat 0 * :forkchat client")
    peer.send(":srv 001 bob :Welcome back")
    for line in wanted:
        harness.expect_line(line)
    harness.conn.close_now()


def test_a_second_welcome_on_the_same_connection_rejoins_nothing(peer):
    """Each 001 queued the rejoin (and the away message) again: a stream
    of them from an odd server grew the queue without end, and a line
    typed behind them never went out."""
    harness = Harness(peer, nick="bob", rooms=("#a", "#b"))
    harness.conn.start()
    harness.turn(0.1)
    peer.accept()
    harness.expect_line("USER forkchat 0 * :forkchat client")
    peer.send(":srv 001 bob :Welcome")
    harness.expect_line("JOIN #a,#b")
    for _ in range(200):
        harness.conn._handle_raw(b":srv 001 bob :Welcome again")
    harness.conn.send("PRIVMSG #a :typed after")
    assert [line for line, _ in harness.conn._queue if line.startswith("JOIN")] == []
    harness.expect_line("PRIVMSG #a :typed after")
    assert harness.seen.count("JOIN #a,#b") == 1
    harness.conn.quit()


@pytest.mark.parametrize("rename", [":bob!u@h NICK :", ":bob!u@h NICK :b ob"])
def test_a_rename_to_no_nick_is_ignored_and_the_reconnect_registers(peer, monkeypatch, rename):
    """A server renaming us to an empty nick (or one with a space) made it
    the nick asked for at every reconnect: `NICK :`, refused each time,
    and the client never registered again."""
    monkeypatch.setattr(connection, "RECONNECT_DELAYS_S", (0.01,))
    harness = Harness(peer, nick="bob")
    harness.register()
    harness.conn._handle_raw(rename.encode())
    assert harness.conn.nick == "bob" and not [e for e in harness.events if e.kind == "nick"]
    reconnect_until_nick(harness, peer)
    assert harness.seen[0] == "NICK bob"
    harness.conn.quit()


@pytest.mark.parametrize("welcome", [":srv 001 :Welcome to IRC", ":srv 001 :b ob"])
def test_a_welcome_without_our_nick_keeps_ours(peer, welcome):
    """`001 :Welcome to IRC` (no nick before the text, an odd server's)
    made "Welcome to IRC" our nick: our own JOIN's echo read as someone
    else's, and the room was never known as joined."""
    harness = Harness(peer, nick="bob")
    harness.conn.start()
    harness.turn(0.1)
    peer.accept()
    harness.expect_line("USER forkchat 0 * :forkchat client")
    peer.send(welcome)
    harness.expect_line("JOIN #lobby")
    assert harness.conn.nick == "bob"
    peer.send(":bob!u@h JOIN #lobby")
    harness.until(lambda: any(e.kind == "join" for e in harness.events), "the join")
    assert [e.own for e in harness.events if e.kind == "join"] == [True]
    harness.conn.quit()


def test_the_servers_text_lengths_are_forgotten_on_a_reconnect(peer, bob):
    """TOPICLEN, KICKLEN and AWAYLEN are one server's: the server met on a
    reconnect (another behind the name, or this one restarted with other
    limits) names its own or none, and /topic, /kick and /away cut to what
    it keeps, not to what the last one kept."""
    harness = bob
    peer.send(":srv 005 bob TOPICLEN=40 KICKLEN=50 AWAYLEN=60 :are supported")
    harness.until(lambda: len(harness.conn.lengths) == 3, "the lengths")
    register_again(harness, peer)
    peer.send(":srv 005 bob KICKLEN=300 :are supported")
    harness.until(lambda: "KICKLEN" in harness.conn.lengths
                  and harness.conn.lengths["KICKLEN"] == 300, "the new 005")
    assert harness.conn.lengths == {"KICKLEN": 300}


@pytest.mark.parametrize("refusal, said", [
    (":srv 464 * :Password incorrect", "the server wants a password"),
    (":srv 465 * :You are banned from this server", "you are banned from this server"),
])
def test_a_refusal_at_a_reconnect_is_retried_in_the_full_screen_interface(
        peer, monkeypatch, refusal, said):
    """A server restarted with a password (or a ban) refused the reconnect,
    and the full-screen interface ended with its scrollback, where the man
    page says it keeps trying (as irssi and WeeChat do): the refusal is shown
    and the next try waits its turn."""
    monkeypatch.setattr(connection, "RECONNECT_DELAYS_S", (0.01,))
    harness = Harness(peer, nick="bob")
    harness.register()
    reconnect_until_nick(harness, peer)
    peer.send(refusal)
    harness.until(lambda: harness.conn.state in ("waiting", "connecting", "closed"), "the refusal")
    assert not harness.conn.closed, harness.conn.fatal
    lost = [e.text for e in harness.events if e.other == connection.STATUS_DISCONNECTED]
    assert said in lost[-1] and "reconnecting in" in lost[-1]
    reconnect_until_nick(harness, peer)         # it tries again
    peer.send(":srv 001 bob :Welcome")
    harness.expect_line("JOIN #lobby")


def test_a_refusal_at_a_reconnect_ends_line_mode(peer, monkeypatch):
    """Line mode (which gives up after a while) ends at once on a refusal,
    with the reason, so that a script fails fast."""
    monkeypatch.setattr(connection, "RECONNECT_DELAYS_S", (0.01,))
    harness = Harness(peer, nick="bob")
    harness.conn._give_up_s = 120.0
    harness.register()
    reconnect_until_nick(harness, peer)
    peer.send(":srv 464 * :Password incorrect")
    harness.until(lambda: harness.conn.closed, "the end")
    assert "the server wants a password" in harness.conn.fatal
