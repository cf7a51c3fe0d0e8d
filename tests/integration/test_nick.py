"""NICK: changes seen once by everyone sharing a room, case rules, errors, collisions.

Docstrings quote RFC 2812 3.1.2 or irctest's regression tests of the same
behaviour (ergo's bugs, which any server can have).
"""

import pytest

from tests.integration.chat_helpers import ask, commands, drain, joined
from tests.integration.chat_helpers import clients, server, shared_server  # noqa: F401 (one server per module)


def nick_lines(messages):
    return [(m.prefix, m.params) for m in messages if m.command == "NICK"]


def rename(client, new):
    """Change nick and return what the server answered (the NICK echo)."""
    client.send(f"NICK {new}")
    client.nick = new           # drain's MODE query must name the new nick
    return drain(client)


def test_nick_change_reaches_each_neighbour_exactly_once(registered):
    """RFC 2812 3.1.2 and design section 2: the change goes to the client itself
    and once to everyone who shares at least one room, however many they share;
    a user sharing no room sees nothing."""
    alice, bob, carol, dave = (registered(n) for n in ("alice", "bob", "carol", "dave"))
    joined(alice, bob, room="#a")
    joined(alice, bob, carol, room="#b")
    dave.join("#elsewhere")
    got = rename(alice, "alice2")
    assert nick_lines(got) == [("alice!alice@127.0.0.1", ["alice2"])] and len(got) == 1
    for peer in (bob, carol):
        assert nick_lines(drain(peer)) == [("alice!alice@127.0.0.1", ["alice2"])]
    assert drain(dave) == []
    names = ask(bob, "NAMES #a")
    assert "@alice2" in names[0].params[-1].split()


def test_case_change_is_announced_and_a_repeat_is_silent(registered):
    """irctest testCaseChanges: `NICK Alice` from alice gives both members one NICK;
    repeating it (no change) gives nobody anything."""
    alice, bob = registered("alice"), registered("bob")
    joined(alice, bob, room="#test")
    got = rename(alice, "Alice")
    assert [(m.command, m.params) for m in got] == [("NICK", ["Alice"])]
    assert [(m.command, m.params) for m in drain(bob)] == [("NICK", ["Alice"])]
    assert rename(alice, "Alice") == []
    assert drain(bob) == []


def test_failed_change_keeps_the_old_nick(registered):
    """irctest testFailedNickChange: NICK to a nick in use is one 433 and bob still
    owns (and receives as) bob."""
    alice, bob = registered("alice"), registered("bob")
    got = ask(bob, "NICK alice")
    assert commands(got) == ["433"] and got[0].params[:2] == ["bob", "alice"]
    assert commands(ask(bob, "NICK ALICE")) == ["433"]          # rfc1459 case mapping
    assert ask(alice, "PRIVMSG bob :hi") == []
    assert [(m.command, m.params) for m in drain(bob)] == [("PRIVMSG", ["bob", "hi"])]


@pytest.mark.parametrize("line,code", [
    ("NICK", "431"), ("NICK :", "431"), ("NICK 1abc", "432"), ("NICK *", "432"),
    ("NICK #chan", "432"), ("NICK a!b", "432"), ("NICK " + "n" * 31, "432"), ("NICK -dash", "432"),
])
def test_nick_errors(registered, line, code):
    """RFC 2812 3.1.2: ERR_NONICKNAMEGIVEN (431), ERR_ERRONEUSNICKNAME (432) for a
    nick outside 2.3.1's grammar or longer than NICKLEN (30 here)."""
    alice = registered("alice")
    got = ask(alice, line)
    assert commands(got) == [code]
    assert ask(alice, "PRIVMSG alice :still alice") and alice.nick == "alice"


def test_longest_and_special_nicks_are_accepted(registered):
    """RFC 2812 2.3.1: nickname = ( letter / special ) *8( letter / digit / special / "-" );
    005 NICKLEN raises the 9 to 30 here."""
    alice = registered("alice")
    for new in ("n" * 30, "[x]`_^{|}-9", "\\back"):
        old = alice.nick
        got = rename(alice, new)
        assert [(m.prefix.split("!")[0], m.params) for m in got if m.command == "NICK"] == [(old, [new])]
    assert commands(ask(alice, "WHOIS \\back"))[0] == "311"


def test_old_nick_is_free_after_a_change(registered, clients):
    """irctest testNickRelease: after alice becomes malice, a new client may register as alice."""
    alice = registered("alice")
    assert nick_lines(rename(alice, "malice")) == [("alice!alice@127.0.0.1", ["malice"])]
    newcomer = clients()
    newcomer.send("NICK alice")
    newcomer.send("USER u s e r")
    assert newcomer.expect(lambda m: m.command in ("001", "433")).command == "001"


def test_nick_is_free_after_quit(clients):
    """irctest testNickReleaseQuit: a quit frees the nick at once, in any case."""
    for nick in ("alice", "alice", "ALICE"):
        client = clients()
        client.send(f"NICK {nick}")
        client.send("USER u s e r")
        assert client.expect(lambda m: m.command in ("001", "433")).command == "001"
        client.send("QUIT")
        client.expect_closed()


def test_unregistered_reservation_is_freed_by_quit(clients):
    """irctest testNickReleaseUnregistered: a nick held by a client that quit before
    registering is free again."""
    first = clients()
    first.send("NICK alice")
    first.send("QUIT")
    first.expect_closed()
    second = clients()
    second.send("NICK alice")
    second.send("USER u s e r")
    assert second.expect(lambda m: m.command in ("001", "433")).command == "001"


def test_registering_with_a_nick_in_use_is_refused(registered, clients):
    """irctest testNickCollision: NICK of an already registered user gets 433, not 001;
    another nick then completes the registration."""
    registered("foo")
    other = clients()
    other.send("NICK foo")
    other.send("USER username * * :Realname")
    got = other.expect(lambda m: m.command in ("001", "433"))
    assert got.command == "433" and got.params[:2] == ["*", "foo"]
    other.send("NICK foo2")
    assert other.expect(lambda m: m.command in ("001", "433")).command == "001"


def test_two_clients_registering_the_same_nick_at_once(clients):
    """irctest testEarlyNickCollision: of two clients sending NICK foo together, exactly one
    gets 001."""
    first, second = clients(), clients()
    first.send("NICK foo")
    second.send("NICK foo")
    first.send("USER username * * :Realname")
    second.send("USER username * * :Realname")
    outcomes = sorted(c.expect(lambda m: m.command in ("001", "433")).command for c in (first, second))
    assert outcomes == ["001", "433"]


def test_star_nick_then_valid_nick(clients):
    """irctest testStarNick / testEmptyNick: `NICK *` is erroneous (432) and does not
    register; a valid NICK afterwards does."""
    client = clients()
    client.send("NICK *")
    client.send("USER u s e r")
    assert client.expect(lambda m: m.command in ("001", "432")).command == "432"
    client.sync()
    client.send("NICK :")
    assert client.expect(lambda m: m.command in ("001", "431")).command == "431"
    client.send("NICK valid")
    assert client.expect(lambda m: m.command in ("001", "432")).command == "001"


def test_new_nick_receives_messages_and_old_does_not(registered):
    """After a change the new nick is the target; the old one is 401."""
    alice, bob = registered("alice"), registered("bob")
    rename(bob, "robert")
    assert ask(alice, "PRIVMSG robert :hello robert") == []
    assert commands(ask(alice, "PRIVMSG bob :hello bob")) == ["401"]
    assert [(m.prefix, m.params) for m in drain(bob)] == \
        [("alice!alice@127.0.0.1", ["robert", "hello robert"])]
    ask(alice, "PRIVMSG robert :again")
    assert [m.prefix for m in drain(bob)] == ["alice!alice@127.0.0.1"]
    bob.join("#r")
    alice.join("#r")
    drain(bob)
    ask(bob, "PRIVMSG #r :from robert")
    assert [m.prefix for m in drain(alice)] == ["robert!bob@127.0.0.1"]


def test_user_with_empty_realname_is_461(clients):
    """irctest testEmptyRealname, modern: "If it is empty, the server SHOULD reject the
    command with ERR_NEEDMOREPARAMS (even an empty parameter is provided)"."""
    client = clients()
    client.send("NICK foo")
    client.send("USER username * * :")
    got = client.expect(lambda m: m.command in ("001", "461"))
    assert got.command == "461" and got.params[1] == "USER"


def test_nick_changed_before_registration_frees_the_first(clients):
    """RFC 2812 3.1.2: NICK may be sent again before USER; only the last nick stays held."""
    first, second = clients(), clients()
    first.send("NICK alpha")
    first.send("NICK beta")
    first.sync()
    second.send("NICK alpha")
    second.send("USER u s e r")
    assert second.expect(lambda m: m.command in ("001", "433")).command == "001"
    third = clients()
    third.send("NICK beta")
    assert third.expect(lambda m: m.command in ("001", "433")).command == "433"
    first.send("USER u s e r")
    welcome = first.expect("001")
    assert welcome.params[0] == "beta"
