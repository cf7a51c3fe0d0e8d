"""Rooms: JOIN, PART, TOPIC, NAMES, LIST, KICK, INVITE and room MODE.

Each test checks one sentence of RFC 2812 (section 3.2) or of the modern
client protocol document (modern.ircdocs.horse), quoted in its docstring,
the way irctest's channel tests do; replies are counted exactly with
`drain` (a broker round trip, never a sleep).
"""

import socket

import pytest

from forkchat import protocol
from tests.conftest import TEST_LIMITS
from tests.integration.chat_helpers import ask, commands, drain, joined, nick_of
from tests.integration.chat_helpers import clients, server, shared_server  # noqa: F401 (one server per module)
from tests.support.ircclient import IrcTestClient


def names_of(messages) -> set[str]:
    found: set[str] = set()
    for msg in messages:
        if msg.command == "353":
            found.update(msg.params[-1].split())
    return found


def listed(messages) -> set[str]:
    return {msg.params[1] for msg in messages if msg.command == "322"}


# -- JOIN ---------------------------------------------------------------------

def test_join_echo_then_names_and_first_joiner_is_op(registered):
    """RFC 2812 3.2.1: "If a JOIN is successful, the user receives a JOIN message as
    confirmation and is then sent the channel's topic (using RPL_TOPIC) and the list
    of users who are on the channel (using RPL_NAMREPLY), which MUST include the
    user joining."  The creator of a room is its operator."""
    alice = registered("alice")
    got = ask(alice, "JOIN #chan")
    assert commands(got) == ["JOIN", "353", "366"]
    assert got[0].prefix == "alice!alice@127.0.0.1" and got[0].params == ["#chan"]
    assert got[1].params == ["alice", "=", "#chan", "@alice"]
    assert got[2].params[:2] == ["alice", "#chan"]


def test_join_seen_by_members_and_second_joiner_is_not_op(registered):
    """RFC 2812 3.2.1: members receive "information about all commands his server
    receives affecting the channel", JOIN included."""
    alice, bob = registered("alice"), registered("bob")
    alice.join("#chan")
    got = ask(bob, "JOIN #chan")
    assert commands(got) == ["JOIN", "353", "366"]
    assert names_of(got) == {"@alice", "bob"}
    seen = drain(alice)
    assert [(m.command, m.prefix, m.params) for m in seen] == \
        [("JOIN", "bob!bob@127.0.0.1", ["#chan"])]


def test_join_twice_is_silent(registered):
    """irctest testJoinTwice: joining a room one is in gives no error."""
    alice = registered("alice")
    alice.join("#chan")
    assert ask(alice, "JOIN #chan") == []


def test_join_several_rooms_with_keys(registered):
    """RFC 2812 3.2.1: JOIN <channel> *( "," <channel> ) [ <key> *( "," <key> ) ];
    each room is joined or refused on its own (475 ERR_BADCHANNELKEY)."""
    alice, bob = registered("alice"), registered("bob")
    alice.join("#a")
    alice.join("#b")
    ask(alice, "MODE #a +k ka")
    ask(alice, "MODE #b +k kb")
    got = ask(bob, "JOIN #a,#b,#c ka,wrong")
    joins = [m.params[0] for m in got if m.command == "JOIN"]
    assert joins == ["#a", "#c"]
    bad = [m for m in got if m.command == "475"]
    assert len(bad) == 1 and bad[0].params[:2] == ["bob", "#b"]


def test_join_zero_leaves_every_room(registered):
    """RFC 2812 3.2.1: "the user will leave all channels he is a member of"
    on JOIN 0, each PART seen by that room's members."""
    alice, bob = registered("alice"), registered("bob")
    joined(alice, bob, room="#a")
    joined(alice, bob, room="#b")
    got = ask(bob, "JOIN 0")
    assert sorted((m.command, m.params[0]) for m in got) == [("PART", "#a"), ("PART", "#b")]
    seen = drain(alice)
    assert sorted((m.command, m.params[0], nick_of(m)) for m in seen) == \
        [("PART", "#a", "bob"), ("PART", "#b", "bob")]
    assert names_of(ask(alice, "NAMES #a")) == {"@alice"}


def test_join_errors_403_and_461(registered):
    """RFC 2812 3.2.1 numerics: ERR_NEEDMOREPARAMS, ERR_NOSUCHCHANNEL (bad name)."""
    alice = registered("alice")
    got = ask(alice, "JOIN nochan")
    assert commands(got) == ["403"] and got[0].params[1] == "nochan"
    assert commands(ask(alice, "JOIN")) == ["461"]
    assert commands(ask(alice, "JOIN #bad,name")) == ["JOIN", "353", "366", "403"]


def test_empty_room_names_in_join_and_part_lists_are_skipped(registered):
    """An empty item of a JOIN or PART list names no room: it is skipped (as ergo
    does), keys keep their places, and a list of nothing but commas, or an empty
    parameter, is a missing one (461 with the command), never "403 *"."""
    alice, bob = registered("alice"), registered("bob")
    alice.join("#b")
    ask(alice, "MODE #b +k kb")
    got = ask(bob, "JOIN #a,,#b ka,,kb")
    assert [m.params[0] for m in got if m.command == "JOIN"] == ["#a", "#b"]
    assert "403" not in commands(got)
    got = ask(bob, "PART ,#a,,#b,")
    assert [(m.command, m.params[0]) for m in got] == [("PART", "#a"), ("PART", "#b")]
    for line in ("JOIN ,", "JOIN :", "PART ,,", "PART :"):
        got = ask(bob, line)
        assert [(m.command, m.params[1]) for m in got] == [("461", line.split()[0])], line


def test_join_beyond_rooms_per_client_is_405(make_server):
    """RFC 2812 3.2.1: ERR_TOOMANYCHANNELS when the client has joined its maximum
    (005 CHANLIMIT)."""
    server = make_server(config_text=TEST_LIMITS + "rooms_per_client = 2\n")
    alice = IrcTestClient(server.port)
    try:
        alice.register("alice")
        alice.join("#one")
        alice.join("#two")
        got = ask(alice, "JOIN #three")
        assert commands(got) == ["405"] and got[0].params[1] == "#three"
    finally:
        alice.close()


# -- PART ---------------------------------------------------------------------

def test_part_with_reason_reaches_every_member(registered):
    """RFC 2812 3.2.2: PART <channel> [ <Part Message> ]; the parting member and the
    others see it with the reason."""
    alice, bob = registered("alice"), registered("bob")
    joined(alice, bob, room="#chan")
    got = ask(bob, "PART #chan :see you later")
    assert [(m.command, m.params) for m in got] == [("PART", ["#chan", "see you later"])]
    seen = drain(alice)
    assert [(m.command, m.prefix, m.params) for m in seen] == \
        [("PART", "bob!bob@127.0.0.1", ["#chan", "see you later"])]
    assert names_of(ask(alice, "NAMES #chan")) == {"@alice"}


def test_part_reason_of_a_muted_member_is_dropped(registered):
    """hybrid, ratbox and charybdis relay a PART's reason only from a member who
    may talk in the room: else a PART and JOIN cycle talks through +m."""
    alice, bob = registered("alice"), registered("bob")
    joined(alice, bob, room="#quiet")
    ask(alice, "MODE #quiet +m")
    assert commands(drain(bob)) == ["MODE"]
    assert [(m.command, m.params) for m in ask(bob, "PART #quiet :visit my site")] == \
        [("PART", ["#quiet"])]
    assert [(m.command, m.params) for m in drain(alice)] == [("PART", ["#quiet"])]


def test_part_errors(registered):
    """RFC 2812 3.2.2 numerics: 461, 403 ERR_NOSUCHCHANNEL, 442 ERR_NOTONCHANNEL."""
    alice, bob = registered("alice"), registered("bob")
    alice.join("#chan")
    assert commands(ask(bob, "PART")) == ["461"]
    assert [(m.command, m.params[1]) for m in ask(bob, "PART #nowhere")] == [("403", "#nowhere")]
    assert [(m.command, m.params[1]) for m in ask(bob, "PART #chan")] == [("442", "#chan")]


def test_last_member_leaving_ends_the_room(registered):
    """A room exists while it has members: the next joiner creates it anew and is op."""
    alice, bob = registered("alice"), registered("bob")
    alice.join("#chan")
    ask(alice, "PART #chan")
    assert names_of(ask(bob, "JOIN #chan")) == {"@bob"}


# -- TOPIC --------------------------------------------------------------------

def test_topic_set_query_and_clear(registered):
    """RFC 2812 3.2.4: TOPIC sets, queries (RPL_TOPIC) or, with an empty
    <topic>, removes the topic; every member sees the change, setter included.
    irctest testUnsetTopicResponses: no RPL_NOTOPIC on joining a room without one."""
    alice, bob = registered("alice"), registered("bob")
    joined(alice, bob, room="#chan")
    assert commands(ask(bob, "TOPIC #chan")) == ["331"]
    got = ask(alice, "TOPIC #chan :the new topic")
    assert [(m.command, m.params) for m in got] == [("TOPIC", ["#chan", "the new topic"])]
    assert [(m.command, m.prefix, m.params) for m in drain(bob)] == \
        [("TOPIC", "alice!alice@127.0.0.1", ["#chan", "the new topic"])]
    query = ask(bob, "TOPIC #chan")
    assert commands(query) == ["332", "333"]
    assert query[0].params == ["bob", "#chan", "the new topic"]
    assert query[1].params[:3] == ["bob", "#chan", "alice!alice@127.0.0.1"]
    assert query[1].params[3].isdigit()
    got = ask(alice, "TOPIC #chan :")
    assert [(m.command, m.params) for m in got] == [("TOPIC", ["#chan", ""])]
    assert [(m.command, m.params) for m in drain(bob)] == [("TOPIC", ["#chan", ""])]
    carol = registered("carol")
    assert "331" not in commands(ask(carol, "JOIN #chan"))


def test_topic_sent_on_join_with_its_time(registered):
    """RFC 2812 3.2.1 and modern: a joiner gets RPL_TOPIC and RPL_TOPICWHOTIME before NAMES."""
    alice, bob = registered("alice"), registered("bob")
    alice.join("#chan")
    ask(alice, "TOPIC #chan :hello world")
    got = ask(bob, "JOIN #chan")
    assert commands(got) == ["JOIN", "332", "333", "353", "366"]
    assert got[1].params == ["bob", "#chan", "hello world"]


def test_topic_protected_by_t(registered):
    """RFC 2812 3.2.4: "If the channel mode +t is set, ERR_CHANOPRIVSNEEDED"
    for a non-operator, and the others see nothing; a voiced member is no
    operator; with -t any member may set it."""
    alice, bob = registered("alice"), registered("bob")
    joined(alice, bob, room="#chan")
    got = ask(bob, "TOPIC #chan :mine")
    assert commands(got) == ["482"] and got[0].params[1] == "#chan"
    assert drain(alice) == []
    ask(alice, "MODE #chan +v bob")
    drain(bob)
    assert commands(ask(bob, "TOPIC #chan :mine")) == ["482"]
    ask(alice, "MODE #chan -t")
    drain(bob)
    assert [(m.command, m.params) for m in ask(bob, "TOPIC #chan :mine")] == \
        [("TOPIC", ["#chan", "mine"])]
    assert [(m.command, m.params) for m in drain(alice)] == [("TOPIC", ["#chan", "mine"])]


def test_topic_errors(registered):
    """RFC 2812 3.2.4 numerics: 461, 403 (no such room), 442 (setting it from outside)."""
    alice, bob = registered("alice"), registered("bob")
    alice.join("#chan")
    assert commands(ask(bob, "TOPIC")) == ["461"]
    assert commands(ask(bob, "TOPIC #nowhere")) == ["403"]
    assert commands(ask(bob, "TOPIC #chan :from outside")) == ["442"]
    assert commands(ask(bob, "TOPIC #chan")) == ["331"]       # a public room's topic is public


# -- NAMES --------------------------------------------------------------------

def test_names_of_one_room(registered):
    """RFC 2812 3.2.5 / modern: 353 "( "=" / "*" / "@" ) <channel> :[ "@" / "+" ] <nick>
    *( " " ... )" then 366 for that room; no trailing space."""
    nick1, nick2 = registered("nick1"), registered("nick2")
    joined(nick1, nick2, room="#chan")
    got = ask(nick1, "NAMES #chan")
    assert commands(got) == ["353", "366"]
    assert got[0].params[:3] == ["nick1", "=", "#chan"]
    assert got[0].params[3] in ("@nick1 nick2", "nick2 @nick1")
    assert got[1].params[:2] == ["nick1", "#chan"]


def test_names_of_several_rooms_one_end_each(registered):
    """RFC 2812 3.2.5: "a reply pair consisting of RPL_NAMREPLY and RPL_ENDOFNAMES"
    per room, 366 being "<channel> :End of NAMES list" for that one room."""
    nick1 = registered("nick1")
    nick1.join("#chan1")
    nick1.join("#chan2")
    got = ask(nick1, "NAMES #chan1,#chan2")
    assert [(m.command, m.params[1:3]) for m in got] == [
        ("353", ["=", "#chan1"]), ("366", ["#chan1", "End of /NAMES list"]),
        ("353", ["=", "#chan2"]), ("366", ["#chan2", "End of /NAMES list"])]


def test_names_of_unknown_or_invalid_room_is_only_366(registered):
    """RFC 2812 3.2.5: "There is no error reply for bad channel names"; modern: one
    RPL_ENDOFNAMES containing the given name."""
    foo = registered("foo")
    for query in ("#nonexisting", "invalid"):
        got = ask(foo, f"NAMES {query}")
        assert commands(got) == ["366"] and got[0].params[:2] == ["foo", query]


def test_names_without_argument_hides_secret_rooms(registered):
    """RFC 2812 3.2.5: with no parameter, every visible room; +s rooms of which the
    asker is no member are not shown."""
    nick1, nick2 = registered("nick1"), registered("nick2")
    nick1.join("#chan1")
    nick2.join("#chan2")
    got = ask(nick1, "NAMES")
    assert [m.params[2] for m in got if m.command == "353"] == ["#chan1", "#chan2"]
    assert commands(got)[-1] == "366"
    ask(nick2, "MODE #chan2 +s")
    got = ask(nick1, "NAMES")
    assert [m.params[2:] for m in got if m.command == "353"] == [["#chan1", "@nick1"]]
    got = ask(nick2, "NAMES #chan2")
    assert got[0].params[1:] == ["@", "#chan2", "@nick2"]      # '@' marks a secret room
    assert commands(ask(nick1, "NAMES #chan2")) == ["366"]


# -- LIST ---------------------------------------------------------------------

def test_list_empty_one_and_nonexistent(registered):
    """RFC 2812 3.2.6: RPL_LIST per visible room then RPL_LISTEND; LIST of an
    unknown room is only RPL_LISTEND, no error."""
    foo, bar = registered("foo"), registered("bar")
    assert commands(ask(bar, "LIST")) == ["323"]
    foo.join("#chan")
    ask(foo, "TOPIC #chan :about things")
    got = ask(bar, "LIST")
    assert commands(got) == ["322", "323"]
    assert got[0].params == ["bar", "#chan", "1", "about things"]
    assert commands(ask(bar, "LIST #nonexistent")) == ["323"]
    assert listed(ask(bar, "LIST #chan")) == {"#chan"}


def test_list_hides_secret_rooms_from_outsiders(registered):
    """RFC 1459 4.2.6: "secret channels are not listed at all unless the client is a
    member of the channel in question"."""
    first, second = registered("first"), registered("second")
    first.join("#gen")
    ask(first, "MODE #gen +s")
    assert listed(ask(first, "LIST")) == {"#gen"}
    assert listed(ask(second, "LIST")) == set()
    second.join("#gen")
    assert listed(ask(second, "LIST")) == {"#gen"}


def test_list_masks_and_member_counts(registered):
    """Modern ELIST=MNU: 'M' mask, 'N' !mask, 'U' >n and <n on the member count."""
    foo, bar, baz = registered("foo"), registered("bar"), registered("baz")
    foo.join("#chan1")
    foo.join("#chan2")
    bar.join("#chan2")
    cases = {"*an1": {"#chan1"}, "#c*n2": {"#chan2"}, "*an3": set(), "#ch*": {"#chan1", "#chan2"},
             "!*an1": {"#chan2"}, "!#ch*": set(), ">0": {"#chan1", "#chan2"}, "<1": set(),
             ">1": {"#chan2"}, "<2": {"#chan1"}, "<100": {"#chan1", "#chan2"}}
    for query, expected in cases.items():
        assert listed(ask(baz, f"LIST {query}")) == expected, query


def test_list_conditions_in_the_second_parameter(registered):
    """Modern (LIST): "[<channel>{,<channel>}] [<elistcond>{,<elistcond>}] ... If this
    parameter is supplied, the server filters the returned list of channels with the
    given conditions" (RFC 2812 has a server there: anything but a condition is
    ignored)."""
    foo, bar, baz = registered("foo"), registered("bar"), registered("baz")
    foo.join("#chan1")
    foo.join("#chan2")
    bar.join("#chan2")
    cases = {"#chan1,#chan2 >1": {"#chan2"}, "#ch* <2": {"#chan1"}, "* >0,<2": {"#chan1"},
             "#chan1,#chan2 forkchat.local": {"#chan1", "#chan2"}, "#chan2 >5": set()}
    for query, expected in cases.items():
        assert listed(ask(baz, f"LIST {query}")) == expected, query


# -- KICK ---------------------------------------------------------------------

def test_kick_with_comment_reaches_everyone(registered):
    """RFC 2812 3.2.8 and modern: the KICK goes to the members (the kicked one
    included) with the comment; the kicked user is out of the room."""
    foo, bar, baz = registered("foo"), registered("bar"), registered("baz")
    joined(foo, bar, baz, room="#chan")
    got = ask(foo, "KICK #chan bar :bye")
    assert [(m.command, m.params) for m in got] == [("KICK", ["#chan", "bar", "bye"])]
    for member in (bar, baz):
        assert [(m.command, m.prefix, m.params) for m in drain(member)] == \
            [("KICK", "foo!foo@127.0.0.1", ["#chan", "bar", "bye"])]
    assert names_of(ask(foo, "NAMES #chan")) == {"@foo", "baz"}
    assert commands(ask(bar, "PRIVMSG #chan :still here?")) == ["404"]


def test_kick_default_comment_is_kickers_nick(registered):
    """RFC 2812 3.2.8: "If a "comment" is given, this will be sent instead of the
    default message, the nickname of the user issuing the KICK"."""
    foo, bar = registered("foo"), registered("bar")
    joined(foo, bar, room="#chan")
    ask(foo, "KICK #chan bar")
    assert [(m.command, m.params) for m in drain(bar)] == [("KICK", ["#chan", "bar", "foo"])]


def test_kick_privileges_and_errors(registered):
    """RFC 2812 3.2.8 numerics: 461, 403, 442 (kicker not in room), 482 (not an
    operator), 441 ERR_USERNOTINCHANNEL, 401 (no such nick); an op made by MODE +o
    may kick, even the room's creator."""
    foo, bar, baz = registered("foo"), registered("bar"), registered("baz")
    joined(foo, bar, room="#chan")
    assert commands(ask(baz, "KICK #chan")) == ["461"]
    assert commands(ask(baz, "KICK #nowhere bar")) == ["403"]
    assert commands(ask(baz, "KICK #chan bar")) == ["442"]
    joined(baz, room="#chan")
    drain(foo)
    drain(bar)
    assert commands(ask(baz, "KICK #chan bar")) == ["482"]
    registered("carol")
    got = ask(foo, "KICK #chan carol")
    assert commands(got) == ["441"] and got[0].params[1:3] == ["carol", "#chan"]
    assert commands(ask(foo, "KICK #chan nobody")) == ["401"]
    ask(foo, "MODE #chan +o baz")
    drain(baz)
    got = ask(baz, "KICK #chan bar")
    got += ask(baz, "KICK #chan foo")
    assert [(m.command, m.params[1]) for m in got] == [("KICK", "bar"), ("KICK", "foo")]


def test_kick_several_targets_sends_one_kick_each(registered):
    """RFC 2812 3.2.8: "The server MUST NOT send KICK messages with multiple channels
    or users to clients"; several nicks with one room, or paired rooms and nicks."""
    foo, bar, baz, qux = (registered(n) for n in ("foo", "bar", "baz", "qux"))
    joined(foo, bar, baz, qux, room="#chan")
    ask(foo, "KICK #chan bar,baz :bye")
    got = drain(qux)
    assert [(m.command, m.params) for m in got] == \
        [("KICK", ["#chan", "bar", "bye"]), ("KICK", ["#chan", "baz", "bye"])]
    bar.join("#chan")
    baz.join("#chan")
    drain(qux)
    ask(foo, "KICK #chan,#chan bar,baz :again")
    assert [(m.command, m.params[1]) for m in drain(qux)] == [("KICK", "bar"), ("KICK", "baz")]


# -- INVITE -------------------------------------------------------------------

def test_invite_lets_through_invite_only(registered):
    """RFC 2812 3.2.7 and modern: 473 ERR_INVITEONLYCHAN before; "When the invite is
    successful, the server MUST send a RPL_INVITING numeric to the command issuer,
    and an INVITE message, with the issuer as prefix, to the target user";
    "Other channel members are not notified"."""
    foo, baz = registered("foo"), registered("baz")
    joined(foo, baz, room="#chan")
    ask(foo, "MODE #chan +i")
    drain(baz)
    assert commands(ask(foo, "INVITE bar #chan")) == ["401"]
    bar = registered("bar")
    assert commands(ask(bar, "JOIN #chan")) == ["473"]
    got = ask(foo, "INVITE bar #chan")
    assert [(m.command, m.params) for m in got] == [("341", ["foo", "bar", "#chan"])]
    invite = drain(bar)
    assert [(m.command, m.prefix, m.params) for m in invite] == \
        [("INVITE", "foo!foo@127.0.0.1", ["bar", "#chan"])]
    assert drain(baz) == []
    assert commands(ask(bar, "JOIN #chan"))[0] == "JOIN"


def test_invite_is_used_up_by_one_join(registered):
    """Modern / ergo #1876: an invite also lets the invitee past a ban, once."""
    alice, bob = registered("alice"), registered("bob")
    alice.join("#room")
    ask(alice, "MODE #room +b bob!*@*")
    assert commands(ask(bob, "JOIN #room")) == ["474"]
    assert commands(ask(alice, "INVITE bob #room")) == ["341"]
    drain(bob)
    assert commands(ask(bob, "JOIN #room"))[0] == "JOIN"
    ask(alice, "KICK #room bob")
    drain(bob)
    assert commands(ask(bob, "JOIN #room")) == ["474"]


def test_invite_errors(registered):
    """RFC 2812 3.2.7: "if the channel exists, only members of the channel are
    allowed to invite" (442); "When the channel has invite-only flag set, only
    channel operators may issue INVITE" (482); 443 ERR_USERONCHANNEL; 461."""
    foo, bar, baz = registered("foo"), registered("bar"), registered("baz")
    baz.join("#chan")
    got = ask(foo, "INVITE bar #chan")
    assert commands(got) == ["442"] and got[0].params[1] == "#chan"
    assert drain(bar) == []
    joined(foo, room="#chan")
    drain(baz)
    got = ask(baz, "INVITE foo #chan")
    assert commands(got) == ["443"] and got[0].params[1:3] == ["foo", "#chan"]
    assert commands(ask(foo, "INVITE bar #chan")) == ["341"]   # not +i: any member may
    ask(baz, "MODE #chan +i")
    drain(foo)
    got = ask(foo, "INVITE bar #chan")
    assert commands(got) == ["482"] and got[0].params[1] == "#chan"
    assert commands(ask(foo, "INVITE bar")) == ["461"]


def test_invite_to_a_room_that_does_not_exist(registered):
    """RFC 2812 3.2.7: "There is no requirement that the channel the target user is
    being invited to must exist or be a valid channel"."""
    foo, bar = registered("foo"), registered("bar")
    assert commands(ask(foo, "INVITE bar #later")) == ["341"]
    assert [(m.command, m.params) for m in drain(bar)] == [("INVITE", ["bar", "#later"])]


# -- MODE ---------------------------------------------------------------------

def test_mode_query_gives_324_and_329_and_defaults_nt(registered):
    """Modern MODE: `MODE #channel` answers RPL_CHANNELMODEIS and RPL_CREATIONTIME;
    a new room is +nt here; removing every listed mode leaves `+`."""
    chanop = registered("chanop")
    chanop.join("#chan")
    got = ask(chanop, "MODE #chan")
    assert commands(got) == ["324", "329"]
    assert got[0].params == ["chanop", "#chan", "+nt"] and got[1].params[2].isdigit()
    got = ask(chanop, "MODE #chan +i")
    assert [(m.command, m.params) for m in got] == [("MODE", ["#chan", "+i"])]
    assert ask(chanop, "MODE #chan +i") == []                   # a no-op is not echoed
    got = ask(chanop, "MODE #chan -int")
    assert [(m.command, m.params[0], set(m.params[1][1:])) for m in got] == \
        [("MODE", "#chan", {"i", "n", "t"})]
    assert ask(chanop, "MODE #chan")[0].params == ["chanop", "#chan", "+"]


def test_mode_operator_grant_and_errors(registered):
    """Modern channel operators: +o from a non-op is 482, a target outside the room
    441, an unknown nick 401, an unknown room 403, each exactly one reply; success is
    one MODE seen by the room."""
    chanop, plain, other = registered("chanop"), registered("unprivileged"), registered("unrelated")
    joined(chanop, plain, room="#chan")
    joined(other, plain, room="#unrelated")
    drain(chanop)
    assert commands(ask(plain, "MODE #chan +o unprivileged")) == ["482"]
    assert commands(ask(chanop, "MODE #chan +o unrelated")) == ["441"]
    assert commands(ask(chanop, "MODE #chan +o nobody")) == ["401"]
    assert commands(ask(chanop, "MODE #nonexistentchan +o chanop")) == ["403"]
    assert commands(ask(chanop, "MODE #unrelated +o unprivileged")) == ["482"]
    got = ask(chanop, "MODE #chan +o unprivileged")
    assert [(m.command, m.params) for m in got] == [("MODE", ["#chan", "+o", "unprivileged"])]
    assert [(m.command, m.params) for m in drain(plain)] == [("MODE", ["#chan", "+o", "unprivileged"])]
    assert names_of(ask(chanop, "NAMES #chan")) == {"@chanop", "@unprivileged"}


def test_mode_unknown_letter_472_and_missing_parameter_461(registered):
    """RFC 2812 3.2.3 numerics: ERR_UNKNOWNMODE "<char> :is unknown mode char to me
    for <channel>"; ERR_NEEDMOREPARAMS for +o, +k, +l without parameter."""
    alice = registered("alice")
    alice.join("#chan")
    got = ask(alice, "MODE #chan +Z")
    assert commands(got) == ["472"] and got[0].params[1] == "Z"
    for change in ("+o", "+k", "+l"):
        assert commands(ask(alice, f"MODE #chan {change}")) == ["461"], change


def test_mode_voice_and_moderated(registered):
    """RFC 2812 3.2.3 / 4.2.3 (RFC 2811): on a +m room only voiced members and
    operators may talk; others get 404 ERR_CANNOTSENDTOCHAN and nothing is relayed."""
    alice, bob, carol = registered("alice"), registered("bob"), registered("carol")
    joined(alice, bob, carol, room="#chan")
    ask(alice, "MODE #chan +m")
    drain(bob)
    drain(carol)
    got = ask(bob, "PRIVMSG #chan :hello")
    assert commands(got) == ["404"] and got[0].params[1] == "#chan"
    assert drain(carol) == []
    ask(alice, "MODE #chan +v bob")
    assert [(m.command, m.params) for m in drain(bob)] == [("MODE", ["#chan", "+v", "bob"])]
    drain(carol)
    assert ask(bob, "PRIVMSG #chan :now I can") == []
    assert [(m.command, m.params) for m in drain(carol)] == [("PRIVMSG", ["#chan", "now I can"])]
    ask(alice, "PRIVMSG #chan :ops always can")
    assert commands(drain(carol)) == ["PRIVMSG"]
    assert names_of(ask(carol, "NAMES #chan")) == {"@alice", "+bob", "carol"}


def test_mode_no_external_messages(registered):
    """RFC 2811 4.2.4: with +n (the default here) outsiders cannot talk to the room
    (404); with -n they can."""
    alice, bob = registered("alice"), registered("bob")
    alice.join("#chan")
    assert commands(ask(bob, "PRIVMSG #chan :from outside")) == ["404"]
    assert drain(alice) == []
    ask(alice, "MODE #chan -n")
    assert ask(bob, "PRIVMSG #chan :from outside") == []
    assert [(nick_of(m), m.params) for m in drain(alice)] == [("bob", ["#chan", "from outside"])]


def test_mode_ban_blocks_join_and_talk_and_lists(registered):
    """RFC 2812 3.2.3 / irctest testBan: +b mask keeps a matching user out (474),
    silences a matching member (404), `MODE #chan +b` lists bans (367/368), -b
    matches the mask case-insensitively."""
    chanop, bar, carol = registered("chanop"), registered("Bar"), registered("carol")
    joined(chanop, carol, room="#chan")
    got = ask(chanop, "MODE #chan +b BAR!*@*")
    assert [(m.command, m.params) for m in got] == [("MODE", ["#chan", "+b", "BAR!*@*"])]
    assert commands(ask(bar, "JOIN #chan")) == ["474"]
    ask(chanop, "MODE #chan +b carol")
    got = ask(chanop, "MODE #chan +b")
    assert [(m.command, m.params[-2 if m.command == "368" else 2]) for m in got] == \
        [("367", "BAR!*@*"), ("367", "carol!*@*"), ("368", "#chan")]
    assert got[0].params[3] == "chanop!chanop@127.0.0.1"
    drain(carol)
    assert commands(ask(carol, "PRIVMSG #chan :muted?")) == ["404"]
    got = ask(chanop, "MODE #chan -b bar!*@*")
    assert [(m.command, m.params) for m in got] == [("MODE", ["#chan", "-b", "BAR!*@*"])]
    assert commands(ask(bar, "JOIN #chan"))[0] == "JOIN"


def test_a_banned_member_cannot_rename_itself_out_of_the_ban(registered):
    """charybdis: "Cannot change nickname while banned on channel" (435); a
    rename made a nick ban miss, and the member talked again.  The client
    keeps its nick, and may still talk nowhere in the room."""
    chanop, spammer = registered("chanop"), registered("spammer")
    joined(chanop, spammer, room="#chan")
    ask(chanop, "MODE #chan +b spammer!*@*")
    drain(spammer)
    got = ask(spammer, "NICK fresh")
    assert [(m.command, m.params) for m in got] == \
        [("435", ["spammer", "fresh", "#chan", "Cannot change nickname while banned on channel"])]
    assert commands(ask(spammer, "PRIVMSG #chan :still here")) == ["404"]
    assert drain(chanop) == []


def test_mode_key(registered):
    """RFC 2812 3.2.3 / irctest testKeyNormal: with +k a JOIN without or with a
    wrong key gets 475 and no JOIN; the right key joins. A key with a space or
    longer than KEYLEN is refused (525 ERR_INVALIDKEY), not half-applied."""
    bar, qux = registered("bar"), registered("qux")
    bar.join("#chan")
    assert [(m.command, m.params) for m in ask(bar, "MODE #chan +k beer")] == \
        [("MODE", ["#chan", "+k", "beer"])]
    for line in ("JOIN #chan", "JOIN #chan bees"):
        got = ask(qux, line)
        assert commands(got) == ["475"] and got[0].params[1] == "#chan"
    assert ask(qux, "JOIN #chan beer")[0].command == "JOIN"
    drain(bar)
    for bad in ("passphrase with spaces", "long" * 100, ""):
        got = ask(bar, f"MODE #chan +k :{bad}")
        assert commands(got) in (["525"], ["461"]), bad
    assert ask(bar, "MODE #chan")[0].params[2:] == ["+ntk", "beer"]
    drain(qux)
    assert ask(qux, "MODE #chan")[0].params[2:] == ["+ntk", "beer"]   # members see the key
    outsider = registered("outsider")
    assert ask(outsider, "MODE #chan")[0].params[2:] == ["+ntk", "*"]
    assert [(m.command, m.params) for m in ask(bar, "MODE #chan -k")] == \
        [("MODE", ["#chan", "-k", "*"])]


def test_mode_limit(registered):
    """RFC 2811 4.3.2 / irctest limit: with +l N a JOIN beyond N members gets 471
    ERR_CHANNELISFULL; a non-numeric limit is refused."""
    alice, bob, carol = registered("alice"), registered("bob"), registered("carol")
    alice.join("#chan")
    assert [(m.command, m.params) for m in ask(alice, "MODE #chan +l 2")] == \
        [("MODE", ["#chan", "+l", "2"])]
    bob.join("#chan")
    drain(alice)
    got = ask(carol, "JOIN #chan")
    assert commands(got) == ["471"] and got[0].params[1] == "#chan"
    assert commands(ask(alice, "MODE #chan +l many")) == ["696"]
    ask(alice, "MODE #chan -l")
    assert ask(carol, "JOIN #chan")[0].command == "JOIN"


def test_mode_secret_hides_the_room_from_whois_of_outsiders(registered):
    """RFC 2811 4.2.6: a secret room is not shown to non-members (LIST, NAMES, WHOIS)."""
    alice, bob = registered("alice"), registered("bob")
    alice.join("#hidden")
    alice.join("#open")
    ask(alice, "MODE #hidden +s")
    channels = [m.params[-1] for m in ask(bob, "WHOIS alice") if m.command == "319"]
    assert channels == ["@#open"]


def test_mode_several_changes_in_one_line(registered):
    """RFC 2812 3.2.3: several modes with their parameters in one MODE; the echo
    lists only the changes that took effect."""
    alice, bob = registered("alice"), registered("bob")
    joined(alice, bob, room="#chan")
    got = ask(alice, "MODE #chan +ovk bob bob secret")
    assert [(m.command, m.params) for m in got] == [("MODE", ["#chan", "+ovk", "bob", "bob", "secret"])]
    got = ask(alice, "MODE #chan -v+v bob bob")
    assert commands(got) == ["MODE"]


# -- QUIT as rooms see it -------------------------------------------------------

def test_quit_seen_once_by_each_room_neighbour(registered):
    """RFC 2812 3.2.1: members receive "all commands his server receives affecting the
    channel", QUIT included: once per neighbour however many rooms they share, with
    the quitter's prefix and reason."""
    bar, qux, far = registered("bar"), registered("qux"), registered("far")
    joined(bar, qux, room="#one")
    joined(bar, qux, room="#two")
    far.join("#three")
    qux.send("QUIT :qux out")
    qux.expect_closed()
    got = drain(bar)
    assert [(m.command, m.prefix, m.params) for m in got] == \
        [("QUIT", "qux!qux@127.0.0.1", ["Quit: qux out"])]
    assert drain(far) == []
    assert names_of(ask(bar, "NAMES #one")) == {"@bar"}


def test_quit_reason_of_a_muted_member_reaches_only_rooms_it_may_talk_in(registered):
    """A QUIT's reason is withheld, as a PART's, from a room where the quitter may
    not talk (+m without voice): its members read 'Client Quit'."""
    op, talker, mover = registered("op"), registered("talker"), registered("mover")
    joined(op, mover, room="#quiet")
    joined(talker, mover, room="#loud")
    ask(op, "MODE #quiet +m")
    drain(mover)
    mover.send("QUIT :come to my site")
    mover.expect_closed()
    assert [(m.command, m.params) for m in drain(op)] == [("QUIT", ["Client Quit"])]
    assert [(m.command, m.params) for m in drain(talker)] == [("QUIT", ["Quit: come to my site"])]


def test_quit_reason_survives_an_immediate_close(registered):
    """RFC 2812 3.1.7: the QUIT message is sent to the room; clients such as weechat
    send QUIT and close at once, and the reason must still reach the room."""
    watcher, leaver = registered("watcher"), registered("leaver")
    joined(watcher, leaver, room="#r")
    leaver.send("PRIVMSG #r :last words")
    leaver.send("QUIT :bye now")
    leaver.sock.shutdown(socket.SHUT_WR)
    assert watcher.expect("PRIVMSG").params == ["#r", "last words"]
    assert watcher.expect("QUIT").params == ["Quit: bye now"]


@pytest.mark.parametrize("name1,name2", [("#Foo", "#foo"), ("#F]|oo{", "#f}\\oo["), ("#F}o\\o[", "#f]o|o{")])
def test_room_names_equivalent_under_rfc1459(registered, name1, name2):
    """RFC 2812 2.2 / 005 CASEMAPPING=rfc1459: "the characters {}|^ are considered to
    be the lower case equivalents of the characters []\\~"; the room keeps the
    spelling it was created with."""
    foo, bar = registered("foo"), registered("bar")
    foo.join(name1)
    got = ask(bar, f"JOIN {name2}")
    assert [(m.command, m.params) for m in got[:1]] == [("JOIN", [name1])]
    assert [(m.command, m.prefix.split("!")[0]) for m in drain(foo)] == [("JOIN", "bar")]


def test_room_names_not_equivalent(registered):
    """RFC 1459/2812 (irctest testChannelsNotEquivalent): #Foo and #fooa are two rooms."""
    foo, bar = registered("foo"), registered("bar")
    foo.join("#Foo")
    assert names_of(ask(bar, "JOIN #fooa")) == {"@bar"}
    assert drain(foo) == []


def test_names_split_over_several_lines_within_512_bytes(registered, clients):
    """RFC 2812 2.3 and 3.2.5: a NAMES list longer than one line is sent as several
    RPL_NAMREPLY lines, each within 512 bytes, together naming every member once."""
    nicks = [f"member{index:02d}" + "x" * 22 for index in range(16)]      # 30 characters each
    members = [registered(nick) for nick in nicks]
    for member in members:
        member.join("#crowd")
    first = members[0]
    first.send("NAMES #crowd")
    first.send(f"MODE {first.nick}")
    first.send("PING :raw")
    raw = []
    while True:
        line = first.read_line()
        assert line is not None
        if b" PONG " in line:
            break
        raw.append(line)
    namreplies = [line for line in raw if b" 353 " in line]
    assert len(namreplies) >= 2
    assert all(len(line) + 2 <= 512 for line in namreplies)
    listed_nicks = []
    for line in namreplies:
        listed_nicks += line.split(b" :", 1)[1].decode().split()
    assert sorted(nick.lstrip("@") for nick in listed_nicks) == sorted(nicks)
    assert listed_nicks.count("@" + nicks[0]) == 1


LIMITED = TEST_LIMITS + ("members_per_room = 2\nbans_per_room = 2\nmax_rooms = 2\n"
                         "topiclen = 10\nroomlen = 12\n")


@pytest.fixture
def limited(make_server):
    """Factory: limited("nick") -> a client of a server with small configured limits."""
    server = make_server(config_text=LIMITED)
    made: list[IrcTestClient] = []

    def connect(nick: str) -> IrcTestClient:
        client = IrcTestClient(server.port)
        made.append(client)
        client.register(nick)
        return client
    yield connect
    for client in made:
        client.close()


def test_configured_limits_are_announced(limited):
    """005 ISUPPORT announces the configured lengths and counts (modern: TOPICLEN,
    CHANNELLEN, MAXLIST)."""
    alice = limited("alice")
    tokens = " ".join(" ".join(m.params) for m in alice.history if m.command == "005").split()
    for token in ("TOPICLEN=10", "CHANNELLEN=12", "MAXLIST=b:2"):
        assert token in tokens


def test_room_member_bound_is_471(limited):
    """Issue 2 limits: a room holds at most members_per_room members (471 beyond)."""
    alice, bob, carol = limited("alice"), limited("bob"), limited("carol")
    alice.join("#full")
    bob.join("#full")
    got = ask(carol, "JOIN #full")
    assert commands(got) == ["471"] and got[0].params[1] == "#full"


def test_server_room_bound_is_405(limited):
    """Issue 2 limits: no new room beyond max_rooms on the server; existing rooms
    can still be joined."""
    alice, bob = limited("alice"), limited("bob")
    alice.join("#one")
    alice.join("#two")
    assert commands(ask(bob, "JOIN #three")) == ["405"]
    assert ask(bob, "JOIN #one")[0].command == "JOIN"


def test_ban_list_bound_is_478(limited):
    """Modern / 005 MAXLIST: ERR_BANLISTFULL once the room holds its maximum of bans;
    the bans that fit are applied.  RFC 2812 5.2: "<channel> <char> :Channel list
    is full", the char being the list's mode letter."""
    alice = limited("alice")
    alice.join("#r")
    got = ask(alice, "MODE #r +bbb one two three")
    assert [(m.command, m.params[1:3] if m.command == "478" else m.params) for m in got] == \
        [("478", ["#r", "b"]), ("MODE", ["#r", "+bb", "one!*@*", "two!*@*"])]


def test_lengths_cut_topic_and_refuse_long_room(limited):
    """005 TOPICLEN: a longer topic is cut; CHANNELLEN: a longer room name is
    refused (403)."""
    alice = limited("alice")
    alice.join("#r")
    assert ask(alice, "TOPIC #r :0123456789abcdef")[0].params == ["#r", "0123456789"]
    assert commands(ask(alice, "JOIN #abcdefghijk")) == ["JOIN", "353", "366"]   # 12 characters
    assert commands(ask(alice, "JOIN #abcdefghijkl")) == ["403"]


def test_a_topic_longer_than_its_echo_can_carry_is_kept_as_echoed(make_server):
    """The TOPIC line to the members is cut at 512 bytes; the topic kept is what it
    carried, so a later 332 shows what the members were told.  (topiclen = 450
    stands in for a 390 topic from a 30-character nick on an IPv6 address in a
    50-character room: tests listen on 127.0.0.1 only.)"""
    server = make_server(config_text=TEST_LIMITS + "topiclen = 450\n")
    nick, room = "n" * 30, "#" + "r" * 49
    setter, joiner = IrcTestClient(server.port), IrcTestClient(server.port)
    try:
        setter.register(nick)
        joiner.register("joiner")
        setter.join(room)
        topic = "".join(chr(ord("a") + i % 26) for i in range(450))
        echo = ask(setter, f"TOPIC {room} :{topic}")
        assert [m.command for m in echo] == ["TOPIC"]
        told = echo[0].params[1]
        assert 300 < len(told) < 450 and topic.startswith(told)
        assert [m.params[2] for m in ask(joiner, f"TOPIC {room}") if m.command == "332"] == [told]
        assert [m.params[2] for m in ask(setter, f"TOPIC {room}") if m.command == "332"] == [told]
    finally:
        setter.close()
        joiner.close()


def test_a_long_multibyte_topic_is_the_same_for_members_joiners_and_list(registered):
    """A topic of 160 three-byte characters (as much as a TOPIC line holds)
    reached the members whole; a joiner with a 30-character nick got it
    shorter in its 332 and LIST's 322, so people saw different topics: it is
    kept as every line carries it."""
    setter, joiner = registered("al"), registered("j" * 30)
    setter.join("#euro")
    echo = ask(setter, "TOPIC #euro :" + "€" * 160)
    assert [m.command for m in echo] == ["TOPIC"]
    told = echo[0].params[1]
    assert 100 < len(told) < 160 and set(told) == {"€"}
    assert [m.params[2] for m in ask(joiner, "JOIN #euro") if m.command == "332"] == [told]
    assert [m.params[3] for m in ask(joiner, "LIST #euro") if m.command == "322"] == [told]


def test_names_hides_invisible_members_from_outsiders(registered):
    """RFC 2812 3.2.5: NAMES lists the nicknames "visible to" the asker: an invisible
    (+i) member is listed to fellow members only."""
    ghost, friend, stranger = registered("ghost"), registered("friend"), registered("stranger")
    joined(ghost, friend, room="#haunt")
    ask(ghost, "MODE ghost +i")
    assert names_of(ask(stranger, "NAMES #haunt")) == {"friend"}
    assert names_of(ask(friend, "NAMES #haunt")) == {"@ghost", "friend"}


def test_part_several_rooms_with_one_reason(registered):
    """RFC 2812 3.2.2: PART <channel> *( "," <channel> ) [ <Part Message> ]."""
    alice, bob = registered("alice"), registered("bob")
    joined(alice, bob, room="#a")
    joined(alice, bob, room="#b")
    got = ask(bob, "PART #a,#b,#c :done here")
    assert [(m.command, m.params) for m in got] == \
        [("PART", ["#a", "done here"]), ("PART", ["#b", "done here"]), ("403", ["bob", "#c", "No such channel"])]
    assert [(m.command, m.params) for m in drain(alice)] == \
        [("PART", ["#a", "done here"]), ("PART", ["#b", "done here"])]


def test_empty_ban_mask_lists_instead_of_banning_everyone(registered):
    """An empty +b parameter (`MODE #chan +b :`) is no mask: completing it to *!*@*
    would ban everybody, so it is taken as the ban-list query it most likely was."""
    alice, bob = registered("alice"), registered("bob")
    alice.join("#chan")
    got = ask(alice, "MODE #chan +b :")
    assert commands(got) == ["368"]
    assert ask(bob, "JOIN #chan")[0].command == "JOIN"


# -- secret rooms --------------------------------------------------------------

def raw_answer(client: IrcTestClient, line: str) -> list[bytes]:
    """Send `line` (or nothing, if empty); the exact bytes of every line the
    server sent `client` before a broker round trip, as `drain` counts them."""
    if line:
        client.send(line)
    client.send(f"MODE {client.nick}")
    client.send("PING :raw")
    got: list[bytes] = []
    while (raw := client.read_line()) is not None and protocol.parse_line(raw).command != "PONG":
        got.append(raw)
    assert raw is not None, f"{client.nick}: connection closed"
    assert protocol.parse_line(got.pop()).command == "221"      # drain's own MODE query
    return got


@pytest.mark.parametrize("template", [
    "TOPIC {}", "TOPIC {} :from outside", "PART {}", "KICK {} alice", "INVITE alice {}",
    "PRIVMSG {} :hello",
])
def test_secret_room_answers_an_outsider_as_a_room_that_does_not_exist(registered, template):
    """RFC 2811 4.2.6: for a secret channel "the server will act as if the channel
    does not exist" (MODE excepted): byte for byte, apart from the name, a
    non-member gets what a missing room gives, and so does everyone else."""
    alice, bob = registered("alice"), registered("bob")
    alice.join("#hush")
    ask(alice, "MODE #hush +s")
    secret = raw_answer(bob, template.format("#HUSH")), raw_answer(alice, "")
    missing = raw_answer(bob, template.format("#NONE")), raw_answer(alice, "")
    assert secret[0] and secret[0][0].split()[1] in (b"403", b"341")
    assert secret == tuple([line.replace(b"#NONE", b"#HUSH") for line in lines] for lines in missing)
