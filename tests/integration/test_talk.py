"""Talk: PRIVMSG and NOTICE to rooms and nicks, AWAY, and what a sender cannot forge.

Docstrings quote RFC 2812 section 3.3 (and 4.1 for AWAY) or the
modern client protocol document; `drain` counts every line exactly.
"""

import pytest

from forkchat import protocol
from tests.integration.chat_helpers import ask, commands, drain, joined
from tests.integration.chat_helpers import clients, server, shared_server  # noqa: F401 (one server per module)


def relayed(messages):
    return [(m.command, m.prefix, m.params) for m in messages]


def test_privmsg_to_room_reaches_other_members_once(registered):
    """RFC 2812 3.3.1: PRIVMSG to a channel goes to its members; the sender gets no
    echo (no echo-message capability) and each member exactly one copy."""
    foo, bar, baz = registered("foo"), registered("bar"), registered("baz")
    joined(foo, bar, baz, room="#chan")
    assert ask(foo, "PRIVMSG #chan :hello there") == []
    for member in (bar, baz):
        assert relayed(drain(member)) == \
            [("PRIVMSG", "foo!foo@127.0.0.1", ["#chan", "hello there"])]


def test_notice_to_room_and_to_nick(registered):
    """RFC 2812 3.3.2: NOTICE is used like PRIVMSG."""
    foo, bar = registered("foo"), registered("bar")
    joined(foo, bar, room="#chan")
    assert ask(foo, "NOTICE #chan :hello there") == []
    assert ask(foo, "NOTICE bar :just you") == []
    assert relayed(drain(bar)) == [("NOTICE", "foo!foo@127.0.0.1", ["#chan", "hello there"]),
                                   ("NOTICE", "foo!foo@127.0.0.1", ["bar", "just you"])]


def test_privmsg_to_nick_any_case(registered):
    """RFC 2812 3.3.1 and 2.2 (case mapping): a nick target is matched without case;
    the recipient sees its own nick as it spells it."""
    foo, bar = registered("foo"), registered("Bar")
    assert ask(foo, "PRIVMSG bar :hey there!") == []
    assert ask(foo, "PRIVMSG BAR :again") == []
    assert relayed(drain(bar)) == [("PRIVMSG", "foo!foo@127.0.0.1", ["Bar", "hey there!"]),
                                   ("PRIVMSG", "foo!foo@127.0.0.1", ["Bar", "again"])]


def test_several_targets_each_once(registered):
    """RFC 2812 3.3.1: <msgtarget> may be a comma-separated list; a repeated target
    gets the message once, and a failing target does not stop the others."""
    foo, bar, baz = registered("foo"), registered("bar"), registered("baz")
    joined(foo, bar, room="#chan")
    got = ask(foo, "PRIVMSG #chan,baz,nobody,BAZ :to all")
    assert [(m.command, m.params[1]) for m in got] == [("401", "nobody")]
    assert relayed(drain(bar)) == [("PRIVMSG", "foo!foo@127.0.0.1", ["#chan", "to all"])]
    assert relayed(drain(baz)) == [("PRIVMSG", "foo!foo@127.0.0.1", ["baz", "to all"])]


def test_privmsg_errors(registered):
    """RFC 2812 3.3.1 numerics: ERR_NORECIPIENT (411), ERR_NOTEXTTOSEND (412),
    ERR_NOSUCHNICK "401 <sender> <recipient>", 403 for a room that does not exist,
    ERR_CANNOTSENDTOCHAN (404) from outside a +n room."""
    foo, bar = registered("foo"), registered("bar")
    bar.join("#chan")
    assert commands(ask(foo, "PRIVMSG")) == ["411"]
    assert commands(ask(foo, "PRIVMSG bar")) == ["412"]
    got = ask(foo, "PRIVMSG nobody :hey there!")
    assert commands(got) == ["401"] and got[0].params[:2] == ["foo", "nobody"]
    got = ask(foo, "PRIVMSG #nonexistent :hello there")
    assert commands(got) == ["403"] and got[0].params[1] == "#nonexistent"
    got = ask(foo, "PRIVMSG #chan :let me in")
    assert commands(got) == ["404"] and got[0].params[1] == "#chan"
    assert drain(bar) == []


def test_empty_privmsg_is_412_and_not_relayed(registered):
    """irctest testEmptyPrivmsg: `PRIVMSG #chan :` gets 412 and the room gets nothing."""
    foo, bar = registered("foo"), registered("bar")
    joined(foo, bar, room="#chan")
    got = ask(foo, "PRIVMSG #chan :")
    assert commands(got) == ["412"] and got[0].params[0] == "foo"
    assert drain(bar) == []


def test_notice_never_gets_an_error(registered):
    """RFC 2812 3.3.2: "automatic replies MUST NEVER be sent in response to a NOTICE
    message.  This rule applies to servers too - they MUST NOT send any error reply
    back to the client on receipt of a notice"."""
    foo, bar = registered("foo"), registered("bar")
    bar.join("#chan")
    ask(bar, "AWAY :gone")
    for line in ("NOTICE #nonexistent :hello there", "NOTICE nobody :hi", "NOTICE",
                 "NOTICE bar", "NOTICE #chan :from outside", "NOTICE nobody,#nowhere :x",
                 "NOTICE bar :are you there"):
        assert ask(foo, line) == [], line
    assert relayed(drain(bar)) == [("NOTICE", "foo!foo@127.0.0.1", ["bar", "are you there"])]


def test_an_unusable_notice_gets_no_error_either(registered):
    """RFC 2812 3.3.2 again, for lines the server cannot use: a NOTICE too long
    (417 otherwise), not UTF-8 or with a NUL (an error NOTICE otherwise) is
    dropped without a reply, and not relayed; the same PRIVMSG is answered."""
    foo, bar = registered("foo"), registered("bar")
    for line in (b"NOTICE bar :" + b"x" * 600, b"@t=1 NOTICE bar :" + b"y" * 600,
                 b"NOTICE bar :bad \xff\xfe bytes", b"notice bar :nul \x00 inside"):
        assert ask(foo, line + b"\r\n") == [], line
    foo.sock.sendall(b"NOTICE bar :" + b"z" * 600)   # no line end yet: discarded as it comes
    foo.send(b"z" * 600 + b"\r\n")
    assert drain(foo) == []
    assert drain(bar) == []
    assert commands(ask(foo, b"PRIVMSG bar :" + b"x" * 600 + b"\r\n")) == ["417"]
    assert commands(ask(foo, b"PRIVMSG bar :bad \xff\xfe bytes\r\n")) == ["NOTICE"]


def test_away_replies_and_301(registered):
    """RFC 2812 4.1 (AWAY) and 3.3.1: AWAY :text gives RPL_NOWAWAY (306), AWAY alone
    RPL_UNAWAY (305); a PRIVMSG to an away user is delivered and the sender gets
    RPL_AWAY "301 <nick> :<away message>"; a NOTICE never does."""
    foo, bar = registered("foo"), registered("bar")
    got = ask(bar, "AWAY :I'm on a break")
    assert commands(got) == ["306"] and got[0].params[0] == "bar"
    got = ask(foo, "PRIVMSG bar :ping?")
    assert [(m.command, m.params) for m in got] == [("301", ["foo", "bar", "I'm on a break"])]
    assert ask(foo, "NOTICE bar :quiet ping") == []
    assert [m.params[1] for m in drain(bar)] == ["ping?", "quiet ping"]
    got = ask(bar, "AWAY")
    assert commands(got) == ["305"]
    assert ask(foo, "PRIVMSG bar :back?") == []


def test_away_does_not_answer_room_messages(registered):
    """RPL_AWAY answers a message to the away nick, not to a room it is in."""
    foo, bar = registered("foo"), registered("bar")
    joined(foo, bar, room="#chan")
    ask(bar, "AWAY :out")
    assert ask(foo, "PRIVMSG #chan :anyone?") == []


def test_ctcp_action_relayed_byte_for_byte(registered):
    """CTCP (\\x01ACTION ...\\x01) is ordinary PRIVMSG text to the server: relayed as is."""
    foo, bar = registered("foo"), registered("bar")
    joined(foo, bar, room="#chan")
    ask(foo, "PRIVMSG #chan :\x01ACTION waves\x01")
    ask(foo, "PRIVMSG bar :\x01VERSION\x01")
    assert [m.params for m in drain(bar)] == [["#chan", "\x01ACTION waves\x01"],
                                              ["bar", "\x01VERSION\x01"]]


def test_prefix_cannot_be_spoofed(registered):
    """RFC 2812 2.3: "Clients SHOULD NOT use a prefix when sending a message; if
    they use one, the only valid prefix is the registered nickname"; design section 2:
    every relayed line carries the sender's real nick!user@host."""
    alice, bob = registered("alice"), registered("bob")
    joined(alice, bob, room="#chan")
    ask(alice, ":evil!x@y PRIVMSG #chan :who am I")
    ask(alice, ":bob!bob@127.0.0.1 PRIVMSG bob :it is me, bob")
    ask(alice, ":server.example NOTICE #chan :official")
    assert [m.prefix for m in drain(bob)] == ["alice!alice@127.0.0.1"] * 3


def test_cr_lf_nul_cannot_be_injected(registered):
    """Design section 2: CR/LF/NUL can never be injected into another client's
    stream: a bare CR inside a line stays inside that one line, a NUL makes the line
    unacceptable (an error reply to its sender, nothing relayed)."""
    alice, bob = registered("alice"), registered("bob")
    joined(alice, bob, room="#chan")
    alice.send(b"PRIVMSG #chan :one\rJOIN #evil\r\n")
    alice.send(b"PRIVMSG #chan :two\x00QUIT\r\n")
    answer = drain(alice)
    assert answer and all(m.command != "PRIVMSG" for m in answer)
    bob.send(f"MODE {bob.nick}")
    bob.send("PING :raw")
    raw = []
    while True:
        line = bob.read_line()
        assert line is not None
        if b"PONG" in line:
            break
        raw.append(line)
    relays = [line for line in raw if b"PRIVMSG" in line]
    assert relays == [b":alice!alice@127.0.0.1 PRIVMSG #chan :one JOIN #evil"]
    assert not any(b"\0" in line or b"\r" in line for line in raw)


def test_invalid_utf8_is_not_relayed(registered):
    """Design section 2: an invalid UTF-8 line gets an error reply and is not relayed."""
    alice, bob = registered("alice"), registered("bob")
    joined(alice, bob, room="#chan")
    alice.send(b"PRIVMSG #chan :caf\xe9\r\n")
    alice.send("PRIVMSG #chan :café ☕".encode())
    assert drain(alice)
    assert [m.params for m in drain(bob)] == [["#chan", "café ☕"]]


def test_long_message_relayed_within_512_bytes(registered):
    """RFC 2812 2.3: "messages SHALL NOT exceed 512 characters in length, counting
    all characters including the trailing CR-LF"; the relay adds a prefix, so the
    server cuts it rather than send an over-long line."""
    alice, bob = registered("alice"), registered("bob")
    joined(alice, bob, room="#chan")
    text = "é" * 240                     # 480 bytes of text: 501 with the command
    alice.send(f"PRIVMSG #chan :{text}")
    drain(alice)
    bob.send(f"MODE {bob.nick}")
    bob.send("PING :raw")
    line = bob.read_line()
    assert line is not None and b"PRIVMSG" in line
    assert len(line) + 2 <= 512
    body = line.split(b" :", 1)[1].decode("utf-8")     # cut on a character boundary
    assert text.startswith(body) and len(body) > 200


def _send_in_pieces(client, data: bytes, piece: int) -> None:
    for start in range(0, len(data), piece):
        client.sock.sendall(data[start:start + piece])


@pytest.mark.parametrize("piece", [1, 3, 512])
@pytest.mark.parametrize("colon", ["", ":"])
def test_lines_split_across_packets_are_reassembled(registered, piece, colon):
    """irctest buffering: a line sent byte by byte (or in odd pieces) is one message;
    a payload that fills the 512 bytes is relayed whole or cut to a prefix, never
    beyond 512 bytes and never through the middle of a UTF-8 character."""
    nick1, nick2 = registered("nick1"), registered("nick2")
    head = f"PRIVMSG nick2 {colon}"
    room = 512 - len(head) - 2
    emoji = "😃"
    payloads = ["a", emoji, "a" * room, "a" * (room - len(emoji.encode())) + emoji,
                "a" * (room - 30) + emoji * 7]
    for payload in payloads:
        _send_in_pieces(nick1, (head + payload + "\r\n").encode(), piece)
        assert drain(nick1) == []
        nick2.send(f"MODE {nick2.nick}")
        nick2.send("PING :raw")
        line = nick2.read_line()
        assert line is not None and len(line) + 2 <= 512
        received = protocol.parse_line(line)          # raises on broken UTF-8
        assert received.command == "PRIVMSG" and received.params[0] == "nick2"
        assert payload.startswith(received.params[1]) and received.params[1]
        assert commands(nick2.collect_until("PONG")) == ["221", "PONG"]


def test_targets_beyond_maxtargets_get_407_not_silence(registered):
    """005 MAXTARGETS=4 and RFC 2812 ERR_TOOMANYTARGETS (407): the first four targets get
    the message; the rest are not dropped silently but told in one 407 (naming the
    first left out and how many); a NOTICE stays silent."""
    senders = registered("sender")
    targets = [registered(f"t{index}") for index in range(5)]
    got = ask(senders, "PRIVMSG t0,t1,t2,t3,t4,nobody :hello all")
    assert [(m.command, m.params[1]) for m in got] == [("407", "t4")]
    assert got[0].params[2].startswith("2 recipient")
    assert [len(drain(target)) for target in targets] == [1, 1, 1, 1, 0]
    assert ask(senders, "NOTICE t0,t1,t2,t3,t4 :quiet") == []


def test_notice_before_registration_gets_no_reply(clients):
    """RFC 2812 3.3.2: servers "MUST NOT send any error reply back to the client on
    receipt of a notice", before registration too."""
    client = clients()
    client.send("NOTICE somebody :hello?")
    client.send("PING :after")
    assert [m.command for m in client.collect_until("PONG")] == ["PONG"]


def test_whois_whowas_and_kick_answer_targets_beyond_their_limit_with_407(registered):
    """WHOIS and WHOWAS look up 4 nicknames (MAXTARGETS), KICK kicks 20 (TARGMAX): the
    rest got no reply at all, so '/whois a,b,c,d,e' told nothing about e.  One 407
    names the first left out and how many, as for PRIVMSG."""
    asker = registered("asker")
    ask(asker, "JOIN #kicks")
    whois = ask(asker, "WHOIS w0,w1,w2,w3,w4,w5")
    assert [(m.command, m.params[1]) for m in whois if m.command != "318"] == \
        [("401", f"w{index}") for index in range(4)] + [("407", "w4")]
    assert whois[-2].params[2].startswith("2 nickname(s)")
    whowas = ask(asker, "WHOWAS w0,w1,w2,w3,w4")
    assert [(m.command, m.params[1]) for m in whowas if m.command != "369"] == \
        [("406", f"w{index}") for index in range(4)] + [("407", "w4")]
    nicks = ",".join(f"k{index}" for index in range(22))
    kicks = ask(asker, f"KICK #kicks {nicks}")
    assert [m.command for m in kicks] == ["401"] * 20 + ["407"]
    assert kicks[-1].params[1:] == ["k20", "2 nickname(s) beyond KICK=20, not kicked"]
