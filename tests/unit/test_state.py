"""state.py and its handlers: ChatState transitions and the exact lines they produce.

No sockets: a RecordingOutbox collects (cid, line) pairs, updates and drops;
a fake clock makes idle times and timestamps exact.
"""

from __future__ import annotations

import dataclasses
import random
import sys

import pytest

from forkchat import protocol, rooms, state, state_query, state_rooms

S = ":srv"
HOST = "127.0.0.1"


class RecordingOutbox:
    """state.Outbox that remembers everything, in order."""

    def __init__(self) -> None:
        self.lines: list[tuple[int, str]] = []
        self.fanouts: list[tuple[list[int], bytes]] = []
        self.updates: list[tuple[int, dict]] = []
        self.drops: list[tuple[int, str]] = []
        self.serves: list[tuple[int, str]] = []

    def send(self, cid: int, line: bytes) -> None:
        self._check(line)
        self.lines.append((cid, line.decode()[:-2]))

    def fanout(self, cids, line: bytes) -> None:
        cids = list(cids)
        self._check(line)
        self.fanouts.append((cids, line))
        for cid in cids:
            self.lines.append((cid, line.decode()[:-2]))

    def fanout_but(self, cids, but: int, line: bytes) -> None:
        self.fanout([cid for cid in cids if cid != but], line)

    def update(self, cid: int, changes: dict) -> None:
        self.updates.append((cid, changes))

    def drop(self, cid: int, reason: str, last: bytes = b"") -> None:
        if last:
            self.send(cid, last)
        self.drops.append((cid, reason))

    def serve(self, cid: int, line: bytes) -> None:
        self.serves.append((cid, line.decode()))

    @staticmethod
    def _check(line: bytes) -> None:
        assert line.endswith(b"\r\n") and len(line) <= protocol.MAX_LINE_BYTES
        assert b"\r" not in line[:-2] and b"\n" not in line[:-2] and b"\0" not in line

    def take(self) -> list[tuple[int, str]]:
        lines, self.lines = self.lines, []
        self.fanouts, self.updates, self.drops, self.serves = [], [], [], []
        return lines

    def to(self, cid: int) -> list[str]:
        return [line for who, line in self.take() if who == cid]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class World:
    """A ChatState with helpers: clients by nick, commands as text."""

    def __init__(self, **settings) -> None:
        settings.setdefault("server_name", "srv")
        self.clock = Clock()
        self.st = state.ChatState(state.Settings(**settings), now=self.clock, clock=self.clock)
        self.out = RecordingOutbox()
        self.cids: dict[str, int] = {}

    def add(self, nick: str, register: bool = True, user: str | None = None) -> int:
        cid = len(self.cids) + 1
        self.cids[nick] = cid
        self.st.connect(cid, HOST)
        self.st.request(cid, protocol.parse_text(f"NICK {nick}"), self.out)
        if register:
            self.st.register(cid, user or nick[0] + "u", f"Real {nick}", self.out)
        self.out.take()
        return cid

    def cmd(self, nick: str, line: str) -> list[tuple[int, str]]:
        self.st.request(self.cids[nick], protocol.parse_text(line), self.out)
        return self.out.take()

    def to(self, nick: str, line: str) -> list[str]:
        """Run `line` as `nick`; return what `nick` itself received."""
        self.st.request(self.cids[nick], protocol.parse_text(line), self.out)
        return self.out.to(self.cids[nick])

    def p(self, nick: str) -> str:
        return f":{nick}!{nick[0]}u@{HOST}"


@pytest.fixture
def w() -> World:
    return World()


@pytest.fixture
def room(w: World) -> World:
    """alice (op) and bob in #room; carol registered, in no room."""
    w.add("alice")
    w.add("bob")
    w.add("carol")
    w.cmd("alice", "JOIN #room")
    w.cmd("bob", "JOIN #room")
    return w


# -- dispatch and registration ------------------------------------------------

@pytest.mark.parametrize("line, expected", [
    ("FOO", ":srv 421 alice FOO :Unknown command"),
    ("JOIN", ":srv 461 alice JOIN :Not enough parameters"),
    ("KICK #a", ":srv 461 alice KICK :Not enough parameters"),
    ("KILL bob", ":srv 481 alice :Permission Denied- You're not an IRC operator"),
    ("WALLOPS :hi", ":srv 481 alice :Permission Denied- You're not an IRC operator"),
])
def test_dispatch_errors(w, line, expected):
    w.add("alice")
    assert w.to("alice", line) == [expected]


@pytest.mark.parametrize("line", ["JOIN #a", "PRIVMSG bob :x", "WHO", "MODE x", "LUSERS"])
def test_unregistered_gets_451_except_nick(w, line):
    w.add("alice", register=False)
    assert w.to("alice", line) == [":srv 451 * :You have not registered"]


def test_unknown_cid_is_ignored(w):
    w.st.request(99, protocol.parse_text("JOIN #a"), w.out)
    assert w.out.take() == []


def test_welcome_burst(w):
    w.st.settings = state.Settings(server_name="srv", network="Net", version="v1", created="today",
                                   motd_lines=("line one",))
    w.st.connect(1, HOST)
    w.st.request(1, protocol.parse_text("NICK alice"), w.out)
    assert w.out.updates == [(1, {"nick": "alice"})]
    w.out.take()
    w.st.register(1, "al", "Alice A", w.out)
    assert w.out.updates == [(1, {"registered": True})]
    lines = w.out.to(1)
    assert lines[:4] == [
        ":srv 001 alice :Welcome to the Net IRC Network alice!al@127.0.0.1",
        ":srv 002 alice :Your host is srv, running version v1",
        ":srv 003 alice :This server was created today",
        ":srv 004 alice srv v1 iow biklmnopstv bklov",
    ]
    isupport = " ".join(line for line in lines if " 005 " in line)
    for token in ("NETWORK=Net", "CHANTYPES=#&", "CASEMAPPING=rfc1459", "NICKLEN=30",
                  "CHANNELLEN=50", "TOPICLEN=390", "PREFIX=(ov)@+", "CHANMODES=b,k,l,imnpst",
                  "MODES=4", "KICKLEN=390", "AWAYLEN=390", "CHANLIMIT=#&:50", "MAXTARGETS=4"):
        assert token in isupport.split()
    assert all(len(line.split(" :")[0].split()[3:]) <= 13 for line in lines if " 005 " in line)
    assert lines[-9:] == [
        ":srv 251 alice :There are 1 users and 0 invisible on 1 servers",
        ":srv 252 alice 0 :operator(s) online",
        ":srv 254 alice 0 :channels formed",
        ":srv 255 alice :I have 1 clients and 1 servers",
        ":srv 265 alice 1 1 :Current local users 1, max 1",
        ":srv 266 alice 1 1 :Current global users 1, max 1",
        ":srv 375 alice :- srv Message of the day - ",
        ":srv 372 alice :- line one",
        ":srv 376 alice :End of /MOTD command",
    ]


@pytest.mark.parametrize("server_name, motd", [
    ("srv", ("line one",)), ("s" * 440, ()), ("\u00e9.example", ("x" * 600, "two")),
])
def test_the_burst_of_lines_made_once_per_settings_is_each_clients_own(server_name, motd):
    """002-005 and the MOTD are made once per Settings and only the nick
    is put in (state_query.FixedLines): every client gets the lines made
    for it alone, a nick that makes a line too long to go whole included,
    and the MOTD of a reload shows at the next registration."""
    w = World(server_name=server_name, motd_lines=motd, nicklen=300)
    nicks = ("alice", "b" * 30, "x" * 200, "[]\\`_^{|}", "q", "later")
    for nick in nicks:
        if nick == "later":
            w.st.take_settings(dataclasses.replace(w.st.settings, motd_lines=("new one",)))
        cid = w.add(nick, register=False)
        w.st.register(cid, "u", "U", w.out)
        client = w.st.clients[cid]
        alone = [*state_query.server_lines(w.st, client), *state_query.lusers_lines(w.st, client),
                 *state_query.motd_lines(w.st, client)]
        assert w.out.to(cid)[1:] == [line.decode()[:-2] for line in alone]
    assert alone[-2].endswith(b" later :- new one\r\n")
    assert any(len(line) == protocol.MAX_LINE_BYTES for line in alone) == (len(server_name) > 400)


def test_register_twice_or_without_nick_does_nothing(w):
    w.add("alice")
    w.st.register(1, "x", "y", w.out)
    w.st.connect(2, HOST)
    w.st.register(2, "x", "y", w.out)
    assert w.out.take() == [] and w.st.counts() == (1, 0)


def test_motd_missing(w):
    w.add("alice")
    assert w.to("alice", "MOTD") == [":srv 422 alice :MOTD File is missing"]


def test_lusers_counts_unregistered_invisible_and_opers(w):
    w.add("alice")
    w.add("bob")
    w.add("zed", register=False)
    w.cmd("bob", "MODE bob +i")
    w.st.set_oper(1, "admin", w.out)
    w.cmd("alice", "JOIN #a")
    w.out.take()
    assert w.to("alice", "LUSERS") == [
        ":srv 251 alice :There are 1 users and 1 invisible on 1 servers",
        ":srv 252 alice 1 :operator(s) online",
        ":srv 253 alice 1 :unknown connection(s)",
        ":srv 254 alice 1 :channels formed",
        ":srv 255 alice :I have 2 clients and 1 servers",
        ":srv 265 alice 2 2 :Current local users 2, max 2",
        ":srv 266 alice 2 2 :Current global users 2, max 2",
    ]
    w.st.disconnect(2, "bye", w.out)
    lines = w.to("alice", "LUSERS")
    assert lines[0] == ":srv 251 alice :There are 1 users and 0 invisible on 1 servers"
    assert ":srv 265 alice 1 2 :Current local users 1, max 2" in lines


@pytest.mark.parametrize("line, served", [
    ("TIME Bob", "TIME"), ("INFO bob", "INFO"), ("ADMIN bob", "ADMIN"),
    ("STATS u bob", "STATS u"), ("LINKS bob *.x", "LINKS *.x"), ("TIME s*", "TIME"),
])
def test_worker_query_naming_a_user_is_served_back_without_its_target(w, line, served):
    """A worker sends TIME, INFO, ADMIN, STATS and LINKS here only when their
    <target> is not the server's name: a user's nick (or a mask) means this
    server (RFC 2812 3.4), and the worker gets the command back to answer."""
    w.add("alice")
    w.add("bob")
    assert w.to("alice", line) == []
    w.st.request(1, protocol.parse_text(line), w.out)
    assert w.out.serves == [(1, served)]


def test_worker_query_naming_nobody_is_402(w):
    w.add("alice")
    w.add("zed", register=False)        # a nick only reserved is nobody yet
    assert w.to("alice", "ADMIN zed") == [":srv 402 alice zed :No such server"]
    assert w.to("alice", "LINKS nowhere.example *") == [
        ":srv 402 alice nowhere.example :No such server"]
    assert w.out.serves == []


# -- NICK ----------------------------------------------------------------------

@pytest.mark.parametrize("line, expected", [
    ("NICK", ":srv 431 alice :No nickname given"),
    ("NICK :", ":srv 431 alice :No nickname given"),
    ("NICK 1abc", ":srv 432 alice 1abc :Erroneous nickname"),
    ("NICK a.b", ":srv 432 alice a.b :Erroneous nickname"),
    ("NICK " + "x" * 31, ":srv 432 alice " + "x" * 31
     + " :Erroneous nickname: longer than 30 characters"),
    ("NICK BOB", ":srv 433 alice BOB :Nickname is already in use"),
    ("NICK pending", ":srv 433 alice pending :Nickname is already in use"),
])
def test_nick_errors(w, line, expected):
    w.add("alice")
    w.add("bob")
    w.add("pending", register=False)
    assert w.to("alice", line) == [expected]


def test_nick_same_is_noop(w):
    w.add("alice")
    assert w.cmd("alice", "NICK alice") == []
    assert w.out.updates == []


def test_nick_change_broadcast_once_per_recipient(room):
    room.cmd("alice", "JOIN #two")
    room.cmd("bob", "JOIN #two")
    lines = room.cmd("alice", "NICK Alicia")
    expected = ":alice!au@127.0.0.1 NICK Alicia"
    assert sorted(lines) == [(1, expected), (2, expected)]
    assert room.st.find_nick("alicia").prefix == "Alicia!au@127.0.0.1"
    assert room.st.find_nick("alice") is None
    assert room.to("bob", "PRIVMSG #room :hi") == []


def test_nick_case_change_allowed(w):
    w.add("alice")
    assert w.cmd("alice", "NICK ALICE") == [(1, ":alice!au@127.0.0.1 NICK ALICE")]
    assert w.out.updates == []
    assert w.st.find_nick("alice").nick == "ALICE"


def test_nick_before_registration_reserves_silently(w):
    w.add("alice", register=False)
    w.add("bob", register=False)
    assert w.to("bob", "NICK ALICE") == [":srv 433 * ALICE :Nickname is already in use"]
    w.st.request(1, protocol.parse_text("NICK other"), w.out)
    assert w.out.take() == [] and w.st.nicks.keys() == {"other", "bob"}
    w.st.request(2, protocol.parse_text("NICK alice"), w.out)
    assert w.out.updates == [(2, {"nick": "alice"})]
    assert w.out.take() == []
    assert w.st.nicks["alice"] is w.st.clients[2]


def test_nick_change_records_whowas(w):
    w.add("alice")
    w.cmd("alice", "NICK al2")
    w.cids["al2"] = 1
    assert w.to("al2", "WHOWAS alice")[0] == ":srv 314 al2 alice au 127.0.0.1 * :Real alice"


def test_a_banned_member_keeps_its_nick(room):
    """A ban on 'bob!*@*' stopped matching once bob renamed himself, and he
    talked again: a member a ban silences keeps its nick (435, as charybdis
    answers), nobody told.  Voiced, or once unbanned, it may rename."""
    room.cmd("alice", "MODE #room +b bob!*@*")
    assert room.cmd("bob", "NICK bobby") == [
        (2, ":srv 435 bob bobby #room :Cannot change nickname while banned on channel")]
    assert room.st.find_nick("bob") is not None and room.st.find_nick("bobby") is None
    assert room.cmd("bob", "PRIVMSG #room :hi") == [(2, ":srv 404 bob #room :Cannot send to channel")]
    room.cmd("alice", "MODE #room +v bob")
    assert room.cmd("bob", "NICK bobby")[0] == (1, ":bob!bu@127.0.0.1 NICK bobby")


def test_a_banned_operator_and_a_muted_member_may_rename(room):
    room.cmd("alice", "MODE #room +mb alice!*@*")
    assert room.cmd("alice", "NICK alicia")[0] == (1, ":alice!au@127.0.0.1 NICK alicia")
    assert room.cmd("bob", "NICK bobby")[0] == (1, ":bob!bu@127.0.0.1 NICK bobby")


# -- JOIN ----------------------------------------------------------------------

def test_first_join_creates_room_with_op(w):
    w.add("alice")
    w.st.request(1, protocol.parse_text("JOIN #Room"), w.out)
    assert w.out.updates == [(1, {"rooms": {"#Room": "@"}})]
    assert w.out.take() == [
        (1, ":alice!au@127.0.0.1 JOIN #Room"),
        (1, ":srv 353 alice = #Room :@alice"),
        (1, ":srv 366 alice #Room :End of /NAMES list"),
    ]
    room = w.st.find_room("#room")
    assert room.members == {1: "@"} and room.flags == {"n", "t"}


def test_join_order_with_topic(room):
    room.clock.t = 1234
    room.cmd("alice", "TOPIC #room :the topic")
    lines = room.cmd("carol", "JOIN #ROOM")
    joined = ":carol!cu@127.0.0.1 JOIN #room"
    assert sorted(lines[:3]) == [(1, joined), (2, joined), (3, joined)]
    assert lines[3:] == [
        (3, ":srv 332 carol #room :the topic"),
        (3, ":srv 333 carol #room alice!au@127.0.0.1 1234"),
        (3, ":srv 353 carol = #room :@alice bob carol"),
        (3, ":srv 366 carol #room :End of /NAMES list"),
    ]


def test_join_sends_rooms_update(w):
    w.add("alice")
    w.st.request(1, protocol.parse_text("JOIN #a,#b"), w.out)
    assert w.out.updates == [(1, {"rooms": {"#a": "@", "#b": "@"}})]


def test_join_twice_is_silent(room):
    assert room.cmd("bob", "JOIN #room") == []


def test_join_zero_parts_everything(room):
    room.cmd("bob", "JOIN #b")
    lines = room.cmd("bob", "JOIN 0")
    assert (1, ":bob!bu@127.0.0.1 PART #room") in lines
    assert (2, ":bob!bu@127.0.0.1 PART #b") in lines
    assert room.st.find_room("#b") is None
    assert room.st.clients[2].joined == {}


@pytest.mark.parametrize("setup, line, expected", [
    ("MODE #room +k beer", "JOIN #room", ":srv 475 carol #room :Cannot join channel (+k)"),
    ("MODE #room +k beer", "JOIN #room bees", ":srv 475 carol #room :Cannot join channel (+k)"),
    ("MODE #room +i", "JOIN #room", ":srv 473 carol #room :Cannot join channel (+i)"),
    ("MODE #room +b carol", "JOIN #room", ":srv 474 carol #room :Cannot join channel (+b)"),
    ("MODE #room +b *!*@127.*", "JOIN #room", ":srv 474 carol #room :Cannot join channel (+b)"),
    ("MODE #room +b CAROL!*@*", "JOIN #room", ":srv 474 carol #room :Cannot join channel (+b)"),
    ("MODE #room +l 2", "JOIN #room", ":srv 471 carol #room :Cannot join channel (+l)"),
    ("TOPIC #room :x", "JOIN #", ":srv 403 carol # :No such channel"),
    ("TOPIC #room :x", "JOIN room", ":srv 403 carol room :No such channel"),
    ("TOPIC #room :x", "JOIN #" + "x" * 50, ":srv 403 carol #" + "x" * 50 + " :No such channel"),
])
def test_join_refused(room, setup, line, expected):
    room.cmd("alice", setup)
    assert room.to("carol", line) == [expected]
    assert 3 not in room.st.find_room("#room").members


def test_join_with_key_and_several_rooms(room):
    room.cmd("alice", "MODE #room +k beer")
    lines = room.to("carol", "JOIN #new,#room,bad x,beer")
    assert lines[0] == ":carol!cu@127.0.0.1 JOIN #new"
    assert ":carol!cu@127.0.0.1 JOIN #room" in lines
    assert lines[-1] == ":srv 403 carol bad :No such channel"
    assert room.st.clients[3].joined.keys() == {"#new", "#room"}


def test_invite_lets_through_invite_only_and_ban_once(room):
    room.cmd("alice", "MODE #room +ib carol")
    room.cmd("alice", "INVITE carol #room")
    assert room.to("carol", "JOIN #room")[0] == ":carol!cu@127.0.0.1 JOIN #room"
    room.cmd("carol", "PART #room")
    assert room.to("carol", "JOIN #room") == [":srv 474 carol #room :Cannot join channel (+b)"]


@pytest.mark.parametrize("mode, refused", [
    ("+b carol", ":srv 474 carol #room :Cannot join channel (+b)"),
    ("+l 2", ":srv 471 carol #room :Cannot join channel (+l)"),
])
def test_a_members_invite_lets_nobody_past_what_the_ops_set(room, mode, refused):
    """Any member may INVITE to a room without +i, but only an operator's
    invitation lets its user past a ban or the limit (ergo #1876): bob's let
    the user alice had banned walk back in."""
    room.cmd("alice", f"MODE #room {mode}")
    assert room.cmd("bob", "INVITE carol #room") == [
        (2, ":srv 341 bob carol #room"), (3, ":bob!bu@127.0.0.1 INVITE carol #room")]
    assert room.to("carol", "JOIN #room") == [refused]
    room.cmd("alice", "INVITE carol #room")
    assert room.to("carol", "JOIN #room")[0] == ":carol!cu@127.0.0.1 JOIN #room"


@pytest.mark.parametrize("settings, line, expected", [
    ({"rooms_per_client": 1}, "JOIN #a,#b", ":srv 405 alice #b :You have joined too many channels"),
    ({"max_rooms": 1}, "JOIN #a,#b", ":srv 405 alice #b :Too many rooms on this server"),
    ({"roomlen": 3}, "JOIN #a,#bcd", ":srv 403 alice #bcd :No such channel"),
])
def test_join_bounds(settings, line, expected):
    w = World(**settings)
    w.add("alice")
    assert w.to("alice", line)[-1] == expected


def test_members_per_room_bound():
    w = World(members_per_room=2)
    for nick in ("a", "b", "c"):
        w.add(nick)
    w.cmd("a", "JOIN #r")
    w.cmd("b", "JOIN #r")
    w.cmd("a", "INVITE c #r")
    assert w.to("c", "JOIN #r") == [":srv 471 c #r :Cannot join channel (+l)"]


# -- PART ----------------------------------------------------------------------

@pytest.mark.parametrize("line, expected", [
    ("PART #room", [(1, ":bob!bu@127.0.0.1 PART #room"), (2, ":bob!bu@127.0.0.1 PART #room")]),
    ("PART #ROOM :gone home", [(1, ":bob!bu@127.0.0.1 PART #room :gone home"),
                               (2, ":bob!bu@127.0.0.1 PART #room :gone home")]),
    ("PART #nope", [(2, ":srv 403 bob #nope :No such channel")]),
])
def test_part(room, line, expected):
    assert room.cmd("bob", line) == expected


def test_part_not_on_room_and_room_disappears_when_empty(room):
    assert room.to("carol", "PART #room") == [":srv 442 carol #room :You're not on that channel"]
    room.cmd("bob", "PART #room")
    room.cmd("alice", "PART #room")
    assert room.st.counts() == (3, 0)
    assert room.to("carol", "PART #room") == [":srv 403 carol #room :No such channel"]


@pytest.mark.parametrize("modes", ["+m", "+b bob!*@*", "+b *!bu@*"])
def test_part_reason_goes_only_where_the_member_may_talk(room, modes):
    """A muted (+m, no voice) or banned member parts without its reason, as
    hybrid, ratbox and charybdis do: PART and JOIN again at flood pace
    relayed a line per cycle through the mode or the ban.  Its reason still
    goes to a room it may talk in, and to one where it is voiced."""
    room.cmd("alice", "JOIN #free")
    room.cmd("bob", "JOIN #free")
    room.cmd("alice", f"MODE #room {modes}")
    assert room.cmd("bob", "PART #room,#free :buy cheap pills") == [
        (1, ":bob!bu@127.0.0.1 PART #room"), (2, ":bob!bu@127.0.0.1 PART #room"),
        (1, ":bob!bu@127.0.0.1 PART #free :buy cheap pills"),
        (2, ":bob!bu@127.0.0.1 PART #free :buy cheap pills"),
    ]
    if modes == "+m":
        room.cmd("bob", "JOIN #room")
        room.cmd("alice", "MODE #room +v bob")
        assert room.cmd("bob", "PART #room :voiced")[0] == (1, ":bob!bu@127.0.0.1 PART #room :voiced")


def test_an_operator_parts_with_its_reason_from_a_room_that_bans_it(room):
    room.cmd("alice", "MODE #room +mb alice!*@*")
    assert room.cmd("alice", "PART #room :bye")[0] == (1, ":alice!au@127.0.0.1 PART #room :bye")


# -- TOPIC ---------------------------------------------------------------------

def test_topic_query_and_set(room):
    assert room.to("bob", "TOPIC #room") == [":srv 331 bob #room :No topic is set"]
    room.clock.t = 2000
    lines = room.cmd("alice", "TOPIC #room :Hello world")
    line = ":alice!au@127.0.0.1 TOPIC #room :Hello world"
    assert lines == [(1, line), (2, line)]
    assert room.to("carol", "TOPIC #room") == [
        ":srv 332 carol #room :Hello world",
        ":srv 333 carol #room alice!au@127.0.0.1 2000",
    ]
    room.cmd("alice", "TOPIC #room :")
    assert room.to("bob", "TOPIC #room") == [":srv 331 bob #room :No topic is set"]


@pytest.mark.parametrize("who, line, expected", [
    ("bob", "TOPIC #room :x", ":srv 482 bob #room :You're not channel operator"),
    ("carol", "TOPIC #room :x", ":srv 442 carol #room :You're not on that channel"),
    ("carol", "TOPIC #nope", ":srv 403 carol #nope :No such channel"),
])
def test_topic_errors(room, who, line, expected):
    assert room.to(who, line) == [expected]


def test_topic_without_t_any_member_and_cut_to_topiclen():
    w = World(topiclen=5)
    w.add("alice")
    w.add("bob")
    w.cmd("alice", "JOIN #r")
    w.cmd("bob", "JOIN #r")
    w.cmd("alice", "MODE #r -t")
    assert w.cmd("bob", "TOPIC #r :abcdefgh")[0] == (1, ":bob!bu@127.0.0.1 TOPIC #r :abcde")


@pytest.mark.parametrize("char", ["€", "é", "😀"])
def test_a_long_multibyte_topic_reads_the_same_in_every_line_that_carries_it(char):
    """A topic of multi-byte characters, as long as a TOPIC line holds,
    reached the members whole; a later joiner's 332 and LIST's 322 (the
    server name and a 30-character nick in front) cut it, so the members
    and the joiner saw different topics.  It is kept as the tightest line
    can carry it, and every line carries it whole."""
    w = World(server_name="irc.forkchat.example.org")
    w.add("al")
    joiner = "j" * 30
    w.add(joiner)
    w.cmd("al", "JOIN #r")
    topic = char * (480 // len(char.encode()))     # a TOPIC line of 490 bytes
    echoes = w.cmd("al", f"TOPIC #r :{topic}")
    [told] = {protocol.parse_text(line).params[1] for _cid, line in echoes}
    assert topic.startswith(told) and len(told.encode()) > 400

    def carried(lines: list[str], code: str) -> list[str]:
        return [protocol.parse_text(line).params[-1] for line in lines
                if line.split()[1] == code]
    assert carried(w.to(joiner, "JOIN #r"), "332") == [told]
    assert carried(w.to(joiner, "TOPIC #r"), "332") == [told]
    assert carried(w.to(joiner, "LIST #r"), "322") == [told]
    assert w.st.find_room("#r").topic == told


def _carried(lines: list[str], code: str) -> list[str]:
    return [protocol.parse_text(line).params[-1] for line in lines if line.split()[1] == code]


def test_a_restored_long_multibyte_topic_reads_the_same_in_332_and_list():
    """A topic from the store (set under a shorter server name, or by a
    version that cut it to its TOPIC line alone) was cut apart by 332 and
    LIST's 322: a joiner and LIST read different topics.  It is fitted
    when the room comes back."""
    w = World(server_name="irc.forkchat.example.org")
    topic = "€" * 160                                   # 480 bytes: fits neither
    w.st.saved_rooms["#r"] = saved("#r", topic=topic, topic_setter="al!a@h", topic_time=5)
    joiner = "j" * 30
    w.add(joiner)
    [joined] = _carried(w.to(joiner, "JOIN #r"), "332")
    assert topic.startswith(joined) and len(joined.encode()) > 400
    assert _carried(w.to(joiner, "LIST #r"), "322") == [joined]
    assert w.st.find_room("#r").topic == joined


def test_a_reload_to_a_longer_server_name_fits_the_topics_again():
    """A topic fitted under the old server name was cut apart by 332 and
    322 once a reload lengthened it; the reload fits it again."""
    w = World(server_name="srv")
    w.add("al")
    joiner = "j" * 30
    w.add(joiner)
    w.cmd("al", "JOIN #r")
    w.cmd("al", "TOPIC #r :" + "€" * 160)
    w.st.take_settings(dataclasses.replace(w.st.settings, server_name="irc." + "x" * 50))
    [now] = _carried(w.to(joiner, "TOPIC #r"), "332")
    assert _carried(w.to(joiner, "LIST #r"), "322") == [now]
    assert w.st.find_room("#r").topic == now


@pytest.mark.parametrize("modes", ["-t+m", "-t+b bob!*@*"])
def test_a_member_who_may_not_talk_may_not_set_the_topic(room, modes):
    """Without +t any member sets the topic, but one muted (+m) or banned
    talked to the room through it: refused as its PRIVMSG is (charybdis
    refuses it too); voiced, it may."""
    room.cmd("alice", "TOPIC #room :rules")
    room.cmd("alice", f"MODE #room {modes}")
    assert room.to("bob", "TOPIC #room :buy cheap pills") == \
        [":srv 404 bob #room :Cannot send to channel"]
    assert room.st.find_room("#room").topic == "rules"
    room.cmd("alice", "MODE #room +v bob")
    assert room.cmd("bob", "TOPIC #room :voiced")[0] == (1, ":bob!bu@127.0.0.1 TOPIC #room :voiced")


def test_topic_of_a_private_room_needs_membership(room):
    """+p hides a room's topic from outsiders, but not its existence (as +s does)."""
    room.cmd("alice", "MODE #room +p")
    assert room.to("carol", "TOPIC #room") == [":srv 442 carol #room :You're not on that channel"]


# -- NAMES and LIST -----------------------------------------------------------

def test_names(room):
    assert room.to("carol", "NAMES #room") == [
        ":srv 353 carol = #room :@alice bob", ":srv 366 carol #room :End of /NAMES list"]
    assert room.to("carol", "NAMES #nope") == [":srv 366 carol #nope :End of /NAMES list"]
    assert room.to("carol", "NAMES invalid") == [":srv 366 carol invalid :End of /NAMES list"]
    assert room.to("carol", "NAMES ,") == [":srv 366 carol , :End of /NAMES list"]


def test_names_without_argument_skips_secret_rooms(room):
    room.cmd("carol", "JOIN #c")
    room.cmd("bob", "JOIN #secret")
    room.cmd("bob", "MODE #secret +s")
    assert room.to("carol", "NAMES") == [
        ":srv 353 carol = #room :@alice bob",
        ":srv 353 carol = #c :@carol",
        ":srv 366 carol * :End of /NAMES list",
    ]
    assert ":srv 353 bob @ #secret :@bob" in room.to("bob", "NAMES")


def test_names_hides_invisible_from_outsiders(room):
    room.cmd("bob", "MODE bob +i")
    assert room.to("carol", "NAMES #room")[0] == ":srv 353 carol = #room :@alice"
    assert room.to("alice", "NAMES #room")[0] == ":srv 353 alice = #room :@alice bob"


def test_names_split_over_lines():
    w = World(nicklen=30)
    for index in range(40):
        w.add(f"user{index:02d}" + "x" * 20)
        w.cmd(f"user{index:02d}" + "x" * 20, "JOIN #big")
    lines = w.to("user00" + "x" * 20, "NAMES #big")
    assert len(lines) > 2
    names = " ".join(line.split(" :", 1)[1] for line in lines[:-1]).split()
    assert len(names) == 40 and names[0] == "@user00" + "x" * 20


def test_list(room):
    room.cmd("alice", "TOPIC #room :chat here")
    room.cmd("carol", "JOIN #hidden")
    room.cmd("carol", "MODE #hidden +s")
    assert room.to("bob", "LIST") == [
        ":srv 322 bob #room 2 :chat here", ":srv 323 bob :End of /LIST"]
    assert room.to("carol", "LIST") == [
        ":srv 322 carol #room 2 :chat here", ":srv 322 carol #hidden 1 :",
        ":srv 323 carol :End of /LIST"]
    assert room.to("bob", "LIST #hidden,#ROOM,#nope") == [
        ":srv 322 bob #room 2 :chat here", ":srv 323 bob :End of /LIST"]


# -- KICK ----------------------------------------------------------------------

def test_kick_several(room):
    room.cmd("carol", "JOIN #room")
    lines = room.cmd("alice", "KICK #room bob,carol :behave")
    kick_bob = ":alice!au@127.0.0.1 KICK #room bob :behave"
    kick_carol = ":alice!au@127.0.0.1 KICK #room carol :behave"
    assert lines == [(1, kick_bob), (2, kick_bob), (3, kick_bob), (1, kick_carol), (3, kick_carol)]
    assert room.st.find_room("#room").members == {1: "@"}


def test_kick_default_reason_and_updates(room):
    room.st.request(1, protocol.parse_text("KICK #room BOB"), room.out)
    assert room.out.updates == [(2, {"rooms": {}})]
    assert room.out.take()[0] == (1, ":alice!au@127.0.0.1 KICK #room bob :alice")


@pytest.mark.parametrize("who, line, expected", [
    ("bob", "KICK #room alice", ":srv 482 bob #room :You're not channel operator"),
    ("carol", "KICK #room alice", ":srv 442 carol #room :You're not on that channel"),
    ("alice", "KICK #nope bob", ":srv 403 alice #nope :No such channel"),
    ("alice", "KICK #room carol", ":srv 441 alice carol #room :They aren't on that channel"),
    ("alice", "KICK #room dave", ":srv 401 alice dave :No such nick/channel"),
    ("alice", "KICK #a,#b bob", ":srv 461 alice KICK :Not enough parameters"),
])
def test_kick_errors(room, who, line, expected):
    assert room.to(who, line) == [expected]


def test_kick_paired_rooms(room):
    room.cmd("alice", "JOIN #two")
    room.cmd("carol", "JOIN #two")
    lines = room.to("alice", "KICK #room,#two bob,carol")
    assert lines == [":alice!au@127.0.0.1 KICK #room bob :alice",
                     ":alice!au@127.0.0.1 KICK #two carol :alice"]


# -- INVITE --------------------------------------------------------------------

def test_invite(room):
    lines = room.cmd("bob", "INVITE carol #room")
    assert lines == [(2, ":srv 341 bob carol #room"), (3, ":bob!bu@127.0.0.1 INVITE carol #room")]


def test_invite_to_missing_room_is_transmitted(room):
    assert room.cmd("bob", "INVITE carol #Else") == [
        (2, ":srv 341 bob carol #Else"), (3, ":bob!bu@127.0.0.1 INVITE carol #Else")]


def test_invite_reports_away(room):
    room.cmd("carol", "AWAY :lunch")
    assert room.to("alice", "INVITE carol #room")[-1] == ":srv 301 alice carol :lunch"


@pytest.mark.parametrize("setup, who, line, expected", [
    ("", "alice", "INVITE bob #room", ":srv 443 alice bob #room :is already on channel"),
    ("", "alice", "INVITE dave #room", ":srv 401 alice dave :No such nick/channel"),
    ("", "carol", "INVITE bob #room", ":srv 442 carol #room :You're not on that channel"),
    ("MODE #room +i", "bob", "INVITE carol #room", ":srv 482 bob #room :You're not channel operator"),
    ("", "alice", "INVITE carol room", ":srv 403 alice room :No such channel"),
])
def test_invite_errors(room, setup, who, line, expected):
    if setup:
        room.cmd("alice", setup)
    assert room.to(who, line) == [expected]


# -- MODE ----------------------------------------------------------------------

def test_mode_query(room):
    room.cmd("alice", "MODE #room +kl beer 10")
    assert room.to("bob", "MODE #room") == [
        ":srv 324 bob #room +ntkl beer 10", ":srv 329 bob #room 1000"]
    assert room.to("carol", "MODE #ROOM") == [
        ":srv 324 carol #room +ntkl * 10", ":srv 329 carol #room 1000"]


def test_mode_change_broadcast_with_only_effective_changes(room):
    lines = room.cmd("alice", "MODE #room +ntm+v-o bob bob")
    line = ":alice!au@127.0.0.1 MODE #room +mv bob"
    assert lines == [(1, line), (2, line)]
    assert room.st.find_room("#room").members[2] == "+"


def test_mode_status_sends_rooms_update(room):
    room.st.request(1, protocol.parse_text("MODE #room +o bob"), room.out)
    assert room.out.updates == [(2, {"rooms": {"#room": "@"}})]


@pytest.mark.parametrize("who, line, expected", [
    ("bob", "MODE #room +m", [":srv 482 bob #room :You're not channel operator"]),
    ("carol", "MODE #room +m", [":srv 482 carol #room :You're not channel operator"]),
    ("alice", "MODE #nope +m", [":srv 403 alice #nope :No such channel"]),
    ("alice", "MODE #room +x", [":srv 472 alice x :is unknown mode char to me"]),
    ("alice", "MODE #room +o", [":srv 461 alice MODE :Not enough parameters"]),
    ("alice", "MODE #room +o dave", [":srv 401 alice dave :No such nick/channel"]),
    ("alice", "MODE #room +o carol",
     [":srv 441 alice carol #room :They aren't on that channel"]),
    ("alice", "MODE #room +k :a b", [":srv 525 alice #room :Key is not well-formed"]),
    ("alice", "MODE #room +k :", [":srv 525 alice #room :Key is not well-formed"]),
    ("alice", "MODE #room +l -3",
     [":srv 696 alice #room l -3 :Invalid limit, must be a positive integer"]),
    ("alice", "MODE #room +b", [":srv 368 alice #room :End of channel ban list"]),
    ("bob", "MODE #room b", [":srv 368 bob #room :End of channel ban list"]),
    ("alice", "MODE #room +n", []),
])
def test_mode_errors(room, who, line, expected):
    assert room.to(who, line) == expected


def test_ban_list(room):
    room.clock.t = 3000
    room.cmd("alice", "MODE #room +bb eve *!*@bad.host")
    assert room.to("carol", "MODE #room +b") == [
        ":srv 367 carol #room eve!*@* alice!au@127.0.0.1 3000",
        ":srv 367 carol #room *!*@bad.host alice!au@127.0.0.1 3000",
        ":srv 368 carol #room :End of channel ban list",
    ]


def test_ban_list_full():
    w = World(bans_per_room=1)
    w.add("alice")
    w.cmd("alice", "JOIN #r")
    assert w.to("alice", "MODE #r +bb x y") == [
        ":srv 478 alice #r b :Channel ban list is full",
        ":alice!au@127.0.0.1 MODE #r +b x!*@*",
    ]


@pytest.mark.parametrize("line, expected", [
    ("MODE alice", [":srv 221 alice +"]),
    ("MODE ALICE +i", [":alice MODE alice :+i"]),
    ("MODE alice +iw-w", [":alice MODE alice :+i"]),
    ("MODE alice +i-i", []),
    ("MODE alice +o", []),
    ("MODE alice -o", []),
    ("MODE alice +x", [":srv 501 alice :Unknown MODE flag"]),
    ("MODE alice +ix", [":alice MODE alice :+i", ":srv 501 alice :Unknown MODE flag"]),
    ("MODE bob +i", [":srv 502 alice :Cant change mode for other users"]),
    ("MODE dave +i", [":srv 401 alice dave :No such nick/channel"]),
])
def test_user_modes(room, line, expected):
    assert room.to("alice", line) == expected


def test_user_mode_updates_worker_and_deoper(w):
    w.add("alice")
    w.st.set_oper(1, "admin", w.out)
    assert w.out.updates == [(1, {"modes": "o", "oper": True})]
    assert w.out.take() == [(1, ":srv 381 alice :You are now an IRC operator"),
                            (1, ":alice MODE alice :+o")]
    w.st.request(1, protocol.parse_text("MODE alice -o+w"), w.out)
    assert w.out.updates == [(1, {"modes": "w", "oper": False})]
    assert w.out.take() == [(1, ":alice MODE alice :+w-o")]
    assert w.to("alice", "MODE alice") == [":srv 221 alice +w"]


# -- PRIVMSG / NOTICE ----------------------------------------------------------

def test_privmsg_room_one_fanout_without_sender(room):
    room.cmd("carol", "JOIN #room")
    room.st.request(1, protocol.parse_text("PRIVMSG #ROOM :hello there"), room.out)
    assert room.out.fanouts == [([2, 3], b":alice!au@127.0.0.1 PRIVMSG #room :hello there\r\n")]


def test_privmsg_one_word_is_trailing(room):
    assert room.cmd("alice", "PRIVMSG bob hi") == [(2, ":alice!au@127.0.0.1 PRIVMSG bob :hi")]


def test_privmsg_several_targets_and_self(room):
    lines = room.cmd("alice", "PRIVMSG bob,ALICE,#room,dave,bob :yo")
    assert lines == [
        (2, ":alice!au@127.0.0.1 PRIVMSG bob :yo"),
        (1, ":alice!au@127.0.0.1 PRIVMSG alice :yo"),
        (2, ":alice!au@127.0.0.1 PRIVMSG #room :yo"),
        (1, ":srv 401 alice dave :No such nick/channel"),
    ]


@pytest.mark.parametrize("setup, who, line, expected", [
    ("", "alice", "PRIVMSG", ":srv 411 alice :No recipient given (PRIVMSG)"),
    ("", "alice", "PRIVMSG bob", ":srv 412 alice :No text to send"),
    ("", "alice", "PRIVMSG bob :", ":srv 412 alice :No text to send"),
    ("", "alice", "PRIVMSG dave :x", ":srv 401 alice dave :No such nick/channel"),
    ("", "alice", "PRIVMSG #nope :x", ":srv 403 alice #nope :No such channel"),
    ("", "carol", "PRIVMSG #room :x", ":srv 404 carol #room :Cannot send to channel"),
    ("MODE #room +m", "bob", "PRIVMSG #room :x", ":srv 404 bob #room :Cannot send to channel"),
    ("MODE #room +b bob", "bob", "PRIVMSG #room :x", ":srv 404 bob #room :Cannot send to channel"),
])
def test_privmsg_errors(room, setup, who, line, expected):
    if setup:
        room.cmd("alice", setup)
    assert room.to(who, line) == [expected]


def test_privmsg_allowed_cases(room):
    room.cmd("alice", "MODE #room -n+mv bob")
    assert room.cmd("bob", "PRIVMSG #room :voiced") == [(1, ":bob!bu@127.0.0.1 PRIVMSG #room :voiced")]
    room.cmd("alice", "MODE #room -m")
    assert room.cmd("carol", "PRIVMSG #room :outside")[0][1].endswith("PRIVMSG #room :outside")


@pytest.mark.parametrize("line", [
    "NOTICE", "NOTICE bob", "NOTICE dave :x", "NOTICE #nope :x", "NOTICE #room :x",
    "NOTICE dave,#nope :x",
])
def test_notice_never_answered_with_errors(room, line):
    assert room.to("carol", line) == []


def test_away_reply_to_privmsg_not_notice(room):
    assert room.to("bob", "AWAY :gone fishing") == [
        ":srv 306 bob :You have been marked as being away"]
    assert room.cmd("alice", "PRIVMSG bob :hi") == [
        (2, ":alice!au@127.0.0.1 PRIVMSG bob :hi"), (1, ":srv 301 alice bob :gone fishing")]
    assert room.cmd("alice", "NOTICE bob :hi") == [(2, ":alice!au@127.0.0.1 NOTICE bob :hi")]
    assert room.to("bob", "AWAY") == [":srv 305 bob :You are no longer marked as being away"]
    assert room.cmd("alice", "PRIVMSG bob :hi") == [(2, ":alice!au@127.0.0.1 PRIVMSG bob :hi")]


def test_away_update_and_cut():
    w = World(awaylen=3)
    w.add("bob")
    w.st.request(1, protocol.parse_text("AWAY :abcdef"), w.out)
    assert w.out.updates == [(1, {"away": "abc"})]


# -- WHO / WHOIS / WHOWAS / ISON / USERHOST ----------------------------------------

def test_who_room(room):
    room.cmd("alice", "AWAY :brb")
    room.st.set_oper(1, "admin", room.out)
    assert room.to("carol", "WHO #ROOM") == [
        ":srv 352 carol #room au 127.0.0.1 srv alice G*@ :0 Real alice",
        ":srv 352 carol #room bu 127.0.0.1 srv bob H :0 Real bob",
        ":srv 315 carol #ROOM :End of WHO list",
    ]


@pytest.mark.parametrize("mask, nicks", [
    ("bob", ["bob"]),
    ("BOB", ["bob"]),
    ("bo*", ["bob"]),
    ("*", ["alice", "bob", "carol"]),
    ("", ["alice", "bob", "carol"]),
    ("0", ["alice", "bob", "carol"]),
    ("nobody", []),
    ("*Real c*", ["carol"]),
    ("#nope", []),
])
def test_who_masks(room, mask, nicks):
    lines = room.to("alice", f"WHO :{mask}" if mask else "WHO")
    assert lines[-1] == f":srv 315 alice {(mask or '*').replace(' ', '_')} :End of WHO list"
    assert [line.split()[7] for line in lines[:-1]] == nicks
    assert all(line.split()[3] == "*" for line in lines[:-1])


def test_who_nick_line_and_oper_filter(room):
    assert room.to("carol", "WHO bob") == [
        ":srv 352 carol * bu 127.0.0.1 srv bob H :0 Real bob", ":srv 315 carol bob :End of WHO list"]
    assert room.to("carol", "WHO * o") == [":srv 315 carol * :End of WHO list"]


def test_who_hides_invisible_from_strangers(room):
    room.cmd("carol", "MODE carol +i")
    assert [line.split()[7] for line in room.to("alice", "WHO *")[:-1]] == ["alice", "bob"]
    room.cmd("carol", "JOIN #room")
    assert [line.split()[7] for line in room.to("alice", "WHO *")[:-1]] == ["alice", "bob", "carol"]


def test_whois(room):
    room.cmd("alice", "JOIN #other")
    room.cmd("alice", "MODE #other +s")
    room.cmd("alice", "AWAY :away now")
    room.st.set_oper(1, "admin", room.out)
    room.clock.t = 1100
    room.cmd("alice", "PRIVMSG bob :x")
    room.clock.t = 1142
    assert room.to("carol", "WHOIS Alice") == [
        ":srv 311 carol alice au 127.0.0.1 * :Real alice",
        ":srv 319 carol alice :@#room",
        ":srv 312 carol alice srv :forkchat chat server",
        ":srv 301 carol alice :away now",
        ":srv 313 carol alice :is an IRC operator",
        ":srv 317 carol alice 42 1000 :seconds idle, signon time",
        ":srv 318 carol Alice :End of /WHOIS list",
    ]
    assert room.to("alice", "WHOIS alice")[1] == ":srv 319 alice alice :@#room @#other"


def test_whois_idle_is_a_span_the_wall_clock_does_not_move(room):
    """Idle was the wall clock now less the wall clock at the last message:
    set back an hour (NTP after a bad battery, `date -s`), everyone showed
    0 seconds idle for an hour, and set forward a day, a day idle.  The
    sign-on time is a date and moves with the wall clock, as it should."""
    span = Clock()
    room.st.clock = span
    room.cmd("alice", "PRIVMSG bob :x")
    span.t += 42
    room.clock.t -= 3600
    assert room.to("carol", "WHOIS alice")[-2] == \
        ":srv 317 carol alice 42 1000 :seconds idle, signon time"
    room.clock.t += 86400
    assert room.to("carol", "WHOIS alice")[-2] == \
        ":srv 317 carol alice 42 1000 :seconds idle, signon time"


def test_whois_missing_and_server_form(room):
    assert room.to("carol", "WHOIS dave") == [
        ":srv 401 carol dave :No such nick/channel", ":srv 318 carol dave :End of /WHOIS list"]
    assert room.to("carol", "WHOIS srv carol")[0] == ":srv 311 carol carol cu 127.0.0.1 * :Real carol"
    assert room.to("carol", "WHOIS carol")[1] == ":srv 312 carol carol srv :forkchat chat server"
    assert room.to("carol", "WHOIS") == [":srv 431 carol :No nickname given"]


def test_whowas(room):
    room.clock.t = 0
    room.st.disconnect(2, "bye", room.out)
    assert room.to("carol", "WHOWAS BOB") == [
        ":srv 314 carol bob bu 127.0.0.1 * :Real bob",
        ":srv 312 carol bob srv :Thu Jan 01 00:00:00 1970",
        ":srv 369 carol BOB :End of WHOWAS",
    ]
    assert room.to("carol", "WHOWAS dave") == [
        ":srv 406 carol dave :There was no such nickname", ":srv 369 carol dave :End of WHOWAS"]
    assert room.to("carol", "WHOWAS") == [":srv 431 carol :No nickname given"]


def test_whowas_bounded(w):
    w.add("alice")
    for index in range(state.WHOWAS_PER_NICK + 3):
        w.cmd("alice" if index == 0 else f"n{index - 1}", f"NICK n{index}")
        w.cids[f"n{index}"] = 1
        w.cmd(f"n{index}", "NICK alice")
        w.cids["alice"] = 1
    assert len(w.st.whowas["alice"]) == state.WHOWAS_PER_NICK


@pytest.mark.parametrize("line, expected", [
    ("ISON bob DAVE Carol", ":srv 303 alice :bob carol"),
    ("ISON :bob carol", ":srv 303 alice :bob carol"),
    ("ISON dave", ":srv 303 alice :"),
    ("USERHOST bob dave alice", ":srv 302 alice :bob=+bu@127.0.0.1 alice*=-au@127.0.0.1"),
    ("USERHOST a b c d e bob", ":srv 302 alice :"),
])
def test_ison_userhost(room, line, expected):
    room.st.set_oper(1, "admin", room.out)
    room.cmd("alice", "AWAY :x")
    assert room.to("alice", line) == [expected]


def test_ison_answers_every_nick_its_line_names(w):
    """irssi packs up to about 500 bytes of notify nicks into one ISON: the
    nicks after the first 64 short ones were never looked up, never online."""
    w.add("asker")
    nicks = [f"n{index}" for index in range(120)]
    for nick in nicks[::2]:
        w.add(nick)
    line = "ISON " + " ".join(nicks)
    assert len(line) + 2 <= protocol.MAX_LINE_BYTES
    [ison] = w.to("asker", line)
    assert ison.split(" :", 1)[1].split() == nicks[::2]


def test_ison_and_userhost_replies_hold_whole_nicks_only():
    """A full ISON line of long nicks, all online, makes a 303 longer than
    the question (the server name and the asker's nick come in front): it
    was cut at 512 bytes inside a nick, and the piece read as online."""
    w = World(server_name="irc.forkchat.example.org")
    asker = "m" * 30
    w.add(asker)
    nicks = [f"n{index:02d}" + "x" * 27 for index in range(16)]
    for nick in nicks:
        w.add(nick)
    [ison] = w.to(asker, "ISON " + " ".join(nicks))
    online = ison.split(" :", 1)[1].split()
    assert online and set(online) <= set(nicks)
    assert online == nicks[:len(online)]
    assert len(ison) + 2 <= protocol.MAX_LINE_BYTES
    [userhost] = w.to(asker, "USERHOST " + " ".join(nicks[:5]))
    assert [entry.partition("=")[0] for entry in userhost.split(" :", 1)[1].split()] \
        == nicks[:5]


# -- KILL / WALLOPS ----------------------------------------------------------------

def test_kill(room):
    room.st.set_oper(3, "admin", room.out)
    room.out.take()
    room.st.request(3, protocol.parse_text("KILL bob :spamming"), room.out)
    reason = "Killed (carol (spamming))"
    assert room.out.drops == [(2, reason)]
    assert room.out.take() == [
        (2, f":carol!cu@127.0.0.1 KILL bob :{reason}"),
        (1, f":bob!bu@127.0.0.1 QUIT :{reason}"),
    ]
    assert room.st.find_nick("bob") is None
    assert room.to("carol", "KILL bob") == [":srv 401 carol bob :No such nick/channel"]


def test_kill_without_a_reason_says_none_was_given(room):
    room.st.set_oper(3, "admin", room.out)
    room.out.take()
    room.st.request(3, protocol.parse_text("KILL bob"), room.out)
    assert room.out.drops == [(2, "Killed (carol (No reason given))")]


@pytest.mark.parametrize("name", ["srv", "SRV"])
def test_kill_of_this_server_is_483(room, name):
    """RFC 2812 3.7.1: ERR_CANTKILLSERVER "You can't kill a server!" (it was
    401, no such nick)."""
    room.st.set_oper(3, "admin", room.out)
    room.out.take()
    assert room.to("carol", f"KILL {name} :bye") == [":srv 483 carol :You can't kill a server!"]
    assert room.out.drops == []


def test_wallops_to_users_with_w(room):
    room.st.set_oper(1, "admin", room.out)
    room.cmd("bob", "MODE bob +w")
    room.out.take()
    assert room.cmd("alice", "WALLOPS :maintenance") == [(2, ":alice!au@127.0.0.1 WALLOPS :maintenance")]


# -- disconnect / reregister / identity ----------------------------------------------

def test_disconnect_quits_once_to_each_peer_and_is_idempotent(room):
    room.cmd("alice", "JOIN #two")
    room.cmd("bob", "JOIN #two")
    room.cmd("carol", "JOIN #two")
    room.st.disconnect(2, "Connection closed", room.out)
    assert sorted(room.out.take()) == [
        (1, ":bob!bu@127.0.0.1 QUIT :Connection closed"),
        (3, ":bob!bu@127.0.0.1 QUIT :Connection closed"),
    ]
    room.st.disconnect(2, "again", room.out)
    assert room.out.take() == []
    assert room.st.counts() == (2, 2)
    room.add("bob")
    assert room.st.find_nick("bob") is not None


@pytest.mark.parametrize("modes", ["+m", "+b bob!*@*"])
def test_quit_reason_not_told_in_a_room_the_quitter_may_not_talk_in(room, modes):
    """A muted or banned member's own QUIT reason is not relayed to that room
    (it reads 'Client Quit', as a QUIT without one): quitting, coming back
    and joining again talked through +m a line per cycle, as PART did.
    Whoever shares only other rooms gets the reason; a reason the server
    gives goes to all."""
    room.add("dave")
    room.cmd("bob", "JOIN #free")
    room.cmd("dave", "JOIN #free")
    room.cmd("alice", f"MODE #room {modes}")
    room.out.take()
    room.st.disconnect(2, "Quit: buy cheap pills", room.out)
    assert sorted(room.out.take()) == [
        (1, ":bob!bu@127.0.0.1 QUIT :Client Quit"),
        (4, ":bob!bu@127.0.0.1 QUIT :Quit: buy cheap pills"),
    ]
    room.add("eve")
    room.cmd("eve", "JOIN #room")
    room.cmd("eve", "JOIN #free")
    room.cmd("alice", "MODE #room +m")
    room.out.take()
    room.st.disconnect(room.cids["eve"], "Ping timeout: 120 seconds", room.out)
    assert sorted(room.out.take()) == [
        (1, ":eve!eu@127.0.0.1 QUIT :Ping timeout: 120 seconds"),
        (4, ":eve!eu@127.0.0.1 QUIT :Ping timeout: 120 seconds"),
    ]


def test_a_voiced_member_of_a_moderated_room_quits_with_its_reason(room):
    room.cmd("alice", "MODE #room +mv bob")
    room.out.take()
    room.st.disconnect(2, "Quit: later", room.out)
    assert room.out.take() == [(1, ":bob!bu@127.0.0.1 QUIT :Quit: later")]


def test_a_quit_reason_is_cut_as_a_part_reason_is(room):
    """A client's own QUIT reason is cut to kicklen characters, as PART's:
    one of nearly 512 bytes went over the line with the quitter's prefix
    and was cut at the line's end."""
    words = "".join(chr(ord("a") + index % 26) for index in range(500))
    room.out.take()
    room.st.disconnect(2, "Quit: " + words, room.out)
    assert room.out.take() == [(1, ":bob!bu@127.0.0.1 QUIT :Quit: " + words[:390])]


def test_disconnect_unregistered_frees_reserved_nick(w):
    w.add("alice", register=False)
    w.st.disconnect(1, "x", w.out)
    assert w.out.take() == [] and w.st.nicks == {}


def test_identity_and_reregister_round_trip(room):
    room.cmd("bob", "MODE bob +i")
    room.cmd("bob", "AWAY :afk")
    room.cmd("alice", "MODE #room +v bob")
    identity = room.st.identity(2)
    assert identity == {"nick": "bob", "user": "bu", "host": HOST, "realname": "Real bob",
                        "modes": "i", "away": "afk", "rooms": {"#room": "+"}}
    fresh = World()
    for cid, ident in ((1, room.st.identity(1)), (2, identity)):
        fresh.st.reregister(cid, ident, fresh.out)
    assert fresh.out.take() == [] and fresh.out.updates == []
    assert fresh.st.identity(2) == identity
    assert fresh.st.counts() == (2, 1)
    assert fresh.st.find_room("#room").members == {1: "@", 2: "+"}
    assert room.st.identity(99) == {}


def test_reregister_unregistered_and_collisions(w):
    w.add("alice")
    w.st.reregister(5, {"nick": "ALICE", "user": "x", "host": "h", "rooms": {"#a": "@"}}, w.out)
    assert w.out.updates == [(5, {"nick": "Guest5"})]
    assert w.st.clients[5].nick == "Guest5"
    w.st.reregister(6, {"nick": "later", "registered": False}, w.out)
    assert w.st.counts() == (2, 1)
    assert w.st.nicks["later"].registered is False
    w.st.reregister(7, {"nick": 12, "rooms": "junk"}, w.out)
    w.st.reregister(8, {}, w.out)
    assert w.st.counts() == (2, 1)


def test_settings_can_be_replaced(w):
    w.add("alice")
    w.st.settings = state.Settings(server_name="other", motd_lines=("x",))
    assert w.to("alice", "MOTD")[0] == ":other 375 alice :- other Message of the day - "


# -- robustness --------------------------------------------------------------------------

WORDS = ["#room", "#ROOM", "#x", "&y", "#", "bob", "alice", "carol", "nobody", "0", "*", "",
         "+o", "-o", "+ovb", "+kl", "-kl", "+b", "b", "+imnpst", "-imnpst", "+x", "beer", "-1",
         "99999999999", "a b", ":", "::", "*!*@*", "bob,carol", "#room,#x", ",,,", "é", "\u2028",
         "x" * 600, "+o-o+v-v", "+bbbbbbbb", "o"]


@pytest.mark.parametrize("seed", range(25))
def test_fuzz_handlers_only_reply(seed):
    """Random commands with random parameters: never an exception, only valid lines."""
    rng = random.Random(seed)
    w = World(bans_per_room=3, rooms_per_client=3, max_rooms=5, members_per_room=3)
    for nick in ("alice", "bob", "carol"):
        w.add(nick)
    w.add("dave", register=False)
    w.st.set_oper(1, "admin", w.out)
    commands = list(state.HANDLERS) + ["BOGUS"]
    nicks = list(w.cids)
    for _ in range(300):
        params = [rng.choice(WORDS) for _ in range(rng.randint(0, 5))]
        msg = protocol.Message("", rng.choice(commands), params)
        cid = w.cids[rng.choice(nicks)]
        if cid in w.st.clients:
            w.st.request(cid, msg, w.out)
        w.clock.t += 1
    w.out.take()
    for room_obj in w.st.rooms.values():
        assert room_obj.members
        assert all(cid in w.st.clients for cid in room_obj.members)
    registered = sum(1 for c in w.st.clients.values() if c.registered)
    assert w.st.counts() == (registered, len(w.st.rooms))


def test_fuzz_random_text_lines():
    rng = random.Random(7)
    w = World()
    w.add("alice")
    w.add("bob")
    alphabet = "#&,: +-!@*?abcAB0\u00e9\u4e2d"
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        command = rng.choice(list(state.HANDLERS))
        try:
            msg = protocol.parse_text(f"{command} {text}")
        except protocol.ProtocolError:
            continue
        w.st.request(rng.choice([1, 2]), msg, w.out)
    w.out.take()


@pytest.mark.parametrize("query, listed", [
    ("", ["#chan1", "#chan2", "#other"]),
    ("*an1", ["#chan1"]),
    ("#c*n2", ["#chan2"]),
    ("*an3", []),
    ("#ch*", ["#chan1", "#chan2"]),
    ("!*an1", ["#chan2", "#other"]),
    ("!#ch*", ["#other"]),
    (">1", ["#chan2"]),
    ("<2", ["#chan1", "#other"]),
    ("<1", []),
    (">0,<100", ["#chan1", "#chan2", "#other"]),
    ("#CHAN2,#nope", ["#chan2"]),
    ("#ch*,>1", ["#chan2"]),
])
def test_list_elist_filters(w, query, listed):
    w.add("alice")
    w.add("bob")
    w.add("carol")
    w.cmd("alice", "JOIN #chan1,#chan2,#other")
    w.cmd("bob", "JOIN #chan2")
    lines = w.to("carol", f"LIST {query}" if query else "LIST")
    assert [line.split()[3] for line in lines[:-1]] == listed
    assert lines[-1] == ":srv 323 carol :End of /LIST"


def _list_steps(rooms_count: int, query: str) -> int:
    """Python lines run in rooms.py and state_rooms.py for one LIST over `rooms_count` rooms."""
    w = World()
    w.add("alice")
    w.add("carol")
    for start in range(0, rooms_count, 40):
        names = ",".join(f"#r{i}" for i in range(start, min(rooms_count, start + 40)))
        w.cmd("alice", f"JOIN {names}")
    steps = 0
    files = {rooms.__file__, state_rooms.__file__}

    def count(frame, event, arg):
        nonlocal steps
        if event == "line" and frame.f_code.co_filename in files:
            steps += 1
        return count

    sys.settrace(count)
    try:
        lines = w.to("carol", f"LIST {query}")
    finally:
        sys.settrace(None)
    assert lines[-1] == ":srv 323 carol :End of /LIST"
    return steps


@pytest.mark.parametrize("query", [
    ",".join(f"!x{i}" for i in range(100)),      # no room excluded: every mask tried
    ",".join(f"*{i}z" for i in range(100)),      # no room named: every mask tried
], ids=["excluding", "including"])
def test_list_work_per_room_does_not_grow_with_its_masks(query):
    """A LIST of a hundred masks (a 512-byte line holds 250) matched each
    mask against each room in Python: half a second of the broker, for one
    line, at 10000 rooms.  The masks are now one expression: forty more
    rooms cost a few steps each, not a hundred masks' worth."""
    extra = _list_steps(80, query) - _list_steps(40, query)
    assert extra < 40 * 20


def test_whois_invisible_user_shows_rooms_only_to_fellow_members(room):
    room.cmd("alice", "MODE alice +i")
    assert not any(" 319 " in line for line in room.to("carol", "WHOIS alice"))
    assert ":srv 319 bob alice :@#room" in room.to("bob", "WHOIS alice")


def test_whowas_newest_first_across_targets_and_masks(w):
    w.add("watcher")
    for nick, user in (("nick2", "ident2"), ("nick3", "ident3"), ("nick2", "ident4")):
        cid = w.add(nick, user=user)
        w.st.disconnect(cid, "bye", w.out)
    w.out.take()
    users = [line.split()[4] for line in w.to("watcher", "WHOWAS nick2,nick3") if " 314 " in line]
    assert users == ["ident4", "ident3", "ident2"]
    users = [line.split()[4] for line in w.to("watcher", "WHOWAS nick2 1") if " 314 " in line]
    assert users == ["ident4"]
    users = [line.split()[4] for line in w.to("watcher", "WHOWAS *ck3 -1") if " 314 " in line]
    assert users == ["ident3"]
    lines = w.to("watcher", "WHOWAS nick3,none")
    assert lines[0] == ":srv 406 watcher none :There was no such nickname"
    assert lines[-1] == ":srv 369 watcher nick3,none :End of WHOWAS"


def test_pending_invites_are_bounded():
    from forkchat import state_rooms
    room = World(rooms_per_client=100)
    for nick in ("alice", "bob", "carol"):
        room.add(nick)
    for index in range(state_rooms.MAX_INVITES + 5):
        room.cmd("alice", f"JOIN #r{index}")
        room.cmd("alice", f"INVITE carol #r{index}")
    carol = room.st.clients[3]
    assert len(carol.invited) == state_rooms.MAX_INVITES
    assert 3 not in room.st.find_room("#r0").invites
    assert 3 in room.st.find_room(f"#r{state_rooms.MAX_INVITES + 4}").invites


def check_invariants(st: state.ChatState) -> None:
    """Nicks, rooms and counters agree with the clients, whatever happened."""
    for folded, client in st.nicks.items():
        assert st.clients.get(client.cid) is client and protocol.casefold(client.nick) == folded
    for client in st.clients.values():
        for folded, room_obj in client.joined.items():
            assert st.rooms[folded] is room_obj and client.cid in room_obj.members
    for folded, room_obj in st.rooms.items():
        assert room_obj.members and protocol.casefold(room_obj.name) == folded
        assert all(st.clients[cid].joined.get(folded) is room_obj for cid in room_obj.members)
    registered = [c for c in st.clients.values() if c.registered]
    assert st.registered_count == len(registered)
    for letter in state.USER_MODES:
        assert st.mode_counts[letter] == sum(letter in c.modes for c in registered)


@pytest.mark.parametrize("seed", range(15))
def test_fuzz_lifecycle_keeps_invariants(seed):
    rng = random.Random(seed)
    w = World(rooms_per_client=4, max_rooms=6, members_per_room=4)
    nicks = ["ann", "ben", "cat", "dan", "eve"]
    commands = ["JOIN #a,#b", "JOIN #c key", "PART #a", "JOIN 0", "KICK #a ben,cat",
                "MODE #a +o ben", "MODE #b -o ann", "MODE #a +i", "MODE ann +i", "MODE ben +iw",
                "MODE cat -i", "INVITE ben #a", "NICK {n}", "KILL {n} :x", "PRIVMSG #a :hi",
                "TOPIC #b :t", "MODE #a +b ben", "AWAY :x", "WHO *", "NAMES", "LIST"]
    for _ in range(400):
        cid = rng.randint(1, 5)
        action = rng.random()
        if action < 0.05:
            w.st.disconnect(cid, "gone", w.out)
        elif action < 0.10:
            w.st.connect(cid, HOST)
            w.st.request(cid, protocol.parse_text(f"NICK {rng.choice(nicks)}"), w.out)
            w.st.register(cid, "u", "r", w.out)
        elif action < 0.13:
            identity = w.st.identity(cid)
            w.st.reregister(cid, identity or {"nick": rng.choice(nicks)}, w.out)
        elif action < 0.15 and cid in w.st.clients:
            w.st.set_oper(cid, "admin", w.out)
        elif cid in w.st.clients:
            line = rng.choice(commands).format(n=rng.choice(nicks))
            w.st.request(cid, protocol.parse_text(line), w.out)
        check_invariants(w.st)
        w.out.take()


def test_a_mode_echo_too_long_for_one_line_is_split_not_cut(room):
    """Four 120-character ban masks: every member gets the changes on two MODE
    lines, each within 512 bytes, with every mask whole."""
    masks = [f"m{i}" + "x" * 120 for i in range(4)]
    got = [line for cid, line in room.cmd("alice", "MODE #room +bbbb " + " ".join(masks))
           if cid == room.cids["bob"]]
    assert len(got) == 2 and all(len(line) + 2 <= 512 for line in got)
    carried = [param for line in got for param in protocol.parse_text(line).params[2:]]
    assert carried == [mask + "!*@*" for mask in masks]


@pytest.mark.parametrize(("line", "code"), [
    ("PRIVMSG , :x", "411"), ("PRIVMSG ,, :x", "411"), ("KICK #room ,", "461"),
    ("KICK #room :", "461"),
])
def test_a_target_list_of_only_commas_is_an_error_not_silence(room, line, code):
    """Every command gets an answer: a list that names nobody is 411 / 461."""
    got = room.to("alice", line)
    assert [reply.split()[1] for reply in got] == [code]
    assert room.to("alice", "NOTICE , :x") == []      # NOTICE: never an error reply


def saved(name: str, **record) -> dict:
    base = {"name": name, "created": 1000, "topic": "", "topic_setter": "", "topic_time": 0,
            "flags": "nt", "key": "", "limit": 0, "bans": []}
    return {**base, **record}


def test_a_restored_invite_only_room_takes_its_first_joiner(w):
    """forkchat-server(8) ROOM STORE: a room back from before a restart holds
    its key and bans for the first joiner, who becomes its operator; +i and +l
    do not lock it, since nobody is left to invite and it is empty."""
    w.st.saved_rooms["#inv"] = saved("#inv", flags="intl", limit=1)
    w.add("bob")
    got = w.to("bob", "JOIN #inv")
    assert got[0] == f"{w.p('bob')} JOIN #inv" and "@bob" in got[-2]
    assert w.to("bob", "MODE #inv")[0].startswith(":srv 324 bob #inv +intl")


@pytest.mark.parametrize(("record", "line", "code"), [
    ({"key": "sesame", "flags": "intk"}, "JOIN #r", "475"),
    ({"bans": [["bob!*@*", "alice", 1000]]}, "JOIN #r", "474"),
])
def test_a_restored_room_still_holds_its_key_and_bans(w, record, line, code):
    w.st.saved_rooms["#r"] = saved("#r", **record)
    w.add("bob")
    assert [reply.split()[1] for reply in w.to("bob", line)] == [code]
    assert "#r" in w.st.saved_rooms and "#r" not in w.st.rooms     # kept for the next try


def test_store_keeps_at_most_max_rooms_forgetting_the_oldest_kept_first():
    """Records kept from before a restart, of rooms nobody created again,
    piled up from restart to restart: the store and every later broker's
    memory held them all.  Live and kept records together stay within
    max_rooms; a live room's record is never the one forgotten."""
    w = World(max_rooms=3)
    for name in ("#old1", "#old2", "#old3"):
        w.st.saved_rooms[name] = saved(name, topic=f"topic of {name}")
    w.add("bob")
    assert w.st.store_changes() == {}
    w.cmd("bob", "JOIN #new1,#new2")
    changes = w.st.store_changes()
    assert changes == {"#old1": None, "#old2": None, "#new1": changes["#new1"],
                       "#new2": changes["#new2"]}
    assert changes["#new1"]["name"] == "#new1"
    assert list(w.st.saved_rooms) == ["#old3"]          # forgotten here too, not only on disk
    w.cmd("bob", "JOIN #old3")
    assert ":srv 332 bob #old3 :topic of #old3" in w.to("bob", "TOPIC #old3")
    assert list(w.st.store_changes()) == ["#old3"]
    assert w.to("bob", "JOIN #new3")[0].split()[1] == "405"


def test_store_changes_are_the_rooms_created_or_removed_since_the_last():
    """Joins and parts only create and remove rooms (topic and mode changes
    the broker writes at once): the store is given those rooms only, not
    every room's record, which took 60 ms at 10000 rooms twice a second."""
    w = World()
    w.add("alice")
    w.add("bob")
    w.cmd("alice", "JOIN #a,#b,#c")
    assert list(w.st.store_changes()) == ["#a", "#b", "#c"]
    w.cmd("bob", "JOIN #a")
    w.cmd("bob", "PART #a")
    assert w.st.store_changes() == {}
    w.cmd("alice", "TOPIC #b :old topic")
    w.cmd("alice", "PART #b")
    w.cmd("bob", "JOIN #b")                     # gone and back between two writes
    changes = w.st.store_changes()
    assert list(changes) == ["#b"] and changes["#b"]["topic"] == ""
    w.cmd("alice", "JOIN 0")
    assert w.st.store_changes() == {"#a": None, "#c": None}


def test_names_of_several_rooms_ends_each_with_its_own_366(room):
    """RFC 2812 3.2.5: a RPL_NAMREPLY / RPL_ENDOFNAMES pair per room; a room
    the asker may not see, or that does not exist, gets its 366 alone."""
    room.cmd("alice", "JOIN #hidden")
    room.cmd("alice", "MODE #hidden +s")
    assert room.to("carol", "NAMES #hidden,#room,#nope") == [
        ":srv 366 carol #hidden :End of /NAMES list",
        ":srv 353 carol = #room :@alice bob",
        ":srv 366 carol #room :End of /NAMES list",
        ":srv 366 carol #nope :End of /NAMES list",
    ]


# -- secret rooms: to a non-member, a +s room does not exist (RFC 2811 4.2.6) ---

def _as_missing(lines: list[tuple[int, str]], missing: str, secret: str) -> list[tuple[int, str]]:
    return [(cid, line.replace(missing, secret)) for cid, line in lines]


@pytest.mark.parametrize("template", [
    "TOPIC {}", "TOPIC {} :from outside", "PART {}", "PART {} :bye",
    "KICK {} bob", "KICK {} dave", "KICK {},{} bob,alice", "INVITE bob {}",
    "PRIVMSG {} :hi", "PRIVMSG bob,{} :hi",
])
def test_secret_room_answers_an_outsider_as_a_missing_room(room, template):
    """Every line anyone gets is the one a room that does not exist gives,
    the outsider's spelling of the name included; the room is untouched."""
    room.cmd("alice", "MODE #room +s")
    secret = room.cmd("carol", template.format("#ROOM", "#ROOM"))
    missing = room.cmd("carol", template.format("#NOPE", "#NOPE"))
    assert secret == _as_missing(missing, "#NOPE", "#ROOM")
    hidden = room.st.find_room("#room")
    assert hidden.members == {1: "@", 2: ""} and hidden.topic == "" and hidden.invites == set()


@pytest.mark.parametrize("modes", ["+sm-n", "+s-n+b carol"])
def test_secret_room_refusing_an_outsiders_message_is_missing(room, modes):
    """A secret room that refuses a non-member's text for +m or a ban, not
    only for +n, answers 403 as a missing room; its members still get 404."""
    room.cmd("alice", f"MODE #room {modes}")
    assert room.to("carol", "PRIVMSG #Room :x") == [":srv 403 carol #Room :No such channel"]
    if "m" in modes:
        assert room.to("bob", "PRIVMSG #room :x") == [":srv 404 bob #room :Cannot send to channel"]


def test_secret_room_without_n_takes_outside_messages(room):
    """-n is the operators' choice to hear outsiders: the text arrives, unanswered."""
    room.cmd("alice", "MODE #room +s-n")
    assert room.cmd("carol", "PRIVMSG #room :knock") == [
        (1, ":carol!cu@127.0.0.1 PRIVMSG #room :knock"),
        (2, ":carol!cu@127.0.0.1 PRIVMSG #room :knock")]


def test_secret_room_is_unchanged_for_members(room):
    """A guard: members, and the invited once they join, see the room as before."""
    room.cmd("alice", "MODE #room +s")
    assert room.to("bob", "TOPIC #room :x") == [":srv 482 bob #room :You're not channel operator"]
    assert room.to("bob", "KICK #room alice") == [":srv 482 bob #room :You're not channel operator"]
    assert room.to("bob", "INVITE alice #room") == [":srv 443 bob alice #room :is already on channel"]
    assert room.to("alice", "INVITE carol #room") == [":srv 341 alice carol #room"]
    assert room.st.find_room("#room").invites == {3}
    room.cmd("carol", "JOIN #room")
    assert room.to("carol", "TOPIC #room") == [":srv 331 carol #room :No topic is set"]


def test_secret_room_mode_query_is_the_one_exception(room):
    """RFC 2811 4.2.6: servers answer MODE correctly, even for a secret room;
    and a room no longer secret is answered as any other room."""
    room.cmd("alice", "MODE #room +s")
    assert room.to("carol", "MODE #ROOM") == [
        ":srv 324 carol #room +nst", ":srv 329 carol #room 1000"]
    room.cmd("alice", "MODE #room -s")
    assert room.to("carol", "TOPIC #room :x") == [":srv 442 carol #room :You're not on that channel"]


@pytest.mark.parametrize("template", ["NAMES {}", "LIST {}", "WHO {}", "WHO {} o"])
def test_secret_room_queries_were_already_answered_as_missing(room, template):
    """A guard: NAMES, LIST and WHO hid a secret room before the other commands did."""
    room.cmd("alice", "MODE #room +s")
    secret = room.cmd("carol", template.format("#ROOM"))
    assert secret == _as_missing(room.cmd("carol", template.format("#NOPE")), "#NOPE", "#ROOM")


def test_names_of_a_list_answers_each_room_once(room):
    """'NAMES #big,#big,...' named a 5000-member room 250 times in one line."""
    assert room.to("carol", "NAMES #room,#ROOM,#nope,#room") == [
        ":srv 353 carol = #room :@alice bob",
        ":srv 366 carol #room :End of /NAMES list",
        ":srv 366 carol #nope :End of /NAMES list",
    ]


@pytest.mark.parametrize("name", ["#" + "x" * 199, "#" + "\u00e9" * 99, "#" + "\U0001f600" * 49,
                                  "#" + "\U0001f600" * 120])
def test_a_room_accepted_is_named_whole_in_its_join_and_names(name):
    """With roomlen and nicklen at their ceilings, a room the server takes
    reaches its members whole in JOIN and 353 (a 481-byte one of emoji was
    taken: its JOIN line cut, another room's name, and its 353 lines cut
    down to '@'); a longer one in bytes is refused with 403."""
    w = World(server_name="s" * 63, roomlen=200, nicklen=64)
    nick = "n" * 64
    w.add(nick, user="u" * 16)
    lines = w.to(nick, f"JOIN {name}")
    if len(name.encode()) > 200:
        [refusal] = lines
        assert protocol.parse_line(refusal.encode()).command == "403" and not w.st.rooms
        return
    join, names = protocol.parse_line(lines[0].encode()), protocol.parse_line(lines[1].encode())
    assert (join.command, join.params) == ("JOIN", [name])
    assert (names.command, names.params) == ("353", [nick, "=", name, "@" + nick])
