"""Queries: WHO, WHOIS, WHOWAS, ISON, USERHOST, LUSERS.

Docstrings quote RFC 2812 sections 3.4 and 3.6 or the modern client protocol
document, whose WHO/WHOIS/WHOWAS/LUSERS rules irctest checks; every answer is
counted exactly with `ask`/`drain`.
"""

import re

import pytest

from forkchat import protocol
from tests.conftest import TEST_LIMITS
from tests.integration.chat_helpers import OPER_CONFIG, ask, commands, drain, joined
from tests.integration.chat_helpers import clients, server, shared_server  # noqa: F401 (one server per module)
from tests.support.ircclient import IrcTestClient

SERVER = "forkchat.local"
WHOIS_NUMERICS = {"301", "311", "312", "313", "317", "319"}    # modern's list, minus accounts/TLS


def who_setup(registered):
    """irctest's WHO fixture: coolNick (user myusernam) and otherNick share #chan."""
    cool = registered.clients()
    cool.send("NICK coolNick")
    cool.send("USER myusernam 0 * :My UniqueReal Name")
    cool.expect("376")
    cool.nick = "coolNick"
    other = registered("otherNick")
    joined(cool, other, room="#chan")
    return cool, other


@pytest.fixture
def who_pair(registered, clients):
    registered.clients = clients
    return who_setup(registered)


def check_nick_reply(reply, flags):
    assert reply.command == "352"
    assert reply.params == ["otherNick", "*", "myusernam", "127.0.0.1", SERVER, "coolNick", flags,
                            "0 My UniqueReal Name"]


# -- WHO ----------------------------------------------------------------------

def test_who_star_lists_everyone_visible(who_pair):
    """Modern WHO: a mask matches every visible user; RPL_ENDOFWHO's "<mask> MUST be
    exactly the <mask> parameter sent by the client"."""
    cool, other = who_pair
    got = ask(other, "WHO *")
    assert commands(got) == ["352", "352", "315"]
    replies = sorted(got[:2], key=lambda m: m.params[5])
    check_nick_reply(replies[0], "H")
    assert got[2].params[:2] == ["otherNick", "*"]


@pytest.mark.parametrize("mask", ["coolNick", "coolnick", "coolni*"])
def test_who_nick_and_mask(who_pair, mask):
    """Modern WHO: one RPL_WHOREPLY "<client> <channel> <username> <host> <server>
    <nick> <flags> :<hopcount> <realname>" per matching user, '*' as channel."""
    cool, other = who_pair
    got = ask(other, f"WHO {mask}")
    assert commands(got) == ["352", "315"]
    check_nick_reply(got[0], "H")
    assert got[1].params[:2] == ["otherNick", mask]


@pytest.mark.parametrize("mask", ["127.0.0.1", "my uniquereal name", SERVER, "myusernam"])
def test_who_exact_mask_that_is_no_nick_matches_the_other_fields(who_pair, mask):
    """RFC 2812 3.6.1: the mask is matched against users' host, server, real name
    and nickname; a mask without wildcards that names no nick is still a mask."""
    cool, other = who_pair
    got = ask(other, f"WHO :{mask}")
    expected = 1 if mask in ("my uniquereal name", "myusernam") else 2
    assert commands(got) == ["352"] * expected + ["315"]
    if " " not in mask:           # a middle parameter cannot carry the space
        assert got[-1].params[:2] == ["otherNick", mask]


def test_who_shows_away_as_g(who_pair):
    """Modern WHO flags: 'G' (gone) for an away user, 'H' (here) otherwise."""
    cool, other = who_pair
    ask(cool, "AWAY :be right back")
    got = ask(other, "WHO coolNick")
    check_nick_reply(got[0], "G")


@pytest.mark.parametrize("mask", ["#chan", "#CHAN"])
def test_who_room_lists_members_with_status(who_pair, mask):
    """Modern WHO #chan: the channel field is the room and the flags carry the
    member's prefix ('@' for the op)."""
    cool, other = who_pair
    ask(cool, "AWAY :be right back")
    got = ask(other, f"WHO {mask}")
    assert commands(got) == ["352", "352", "315"]
    replies = sorted(got[:2], key=lambda m: m.params[5])
    assert replies[0].params == ["otherNick", "#chan", "myusernam", "127.0.0.1", SERVER, "coolNick",
                                 "G@", "0 My UniqueReal Name"]
    assert replies[1].params[1:7] == ["#chan", "otherNick", "127.0.0.1", SERVER, "otherNick", "H"]
    assert got[2].params[:2] == ["otherNick", mask]


def test_who_unknown_nick_is_only_315(who_pair):
    """Modern WHO: a nick that does not exist gets a single RPL_ENDOFWHO."""
    cool, other = who_pair
    got = ask(other, "WHO idontexist")
    assert commands(got) == ["315"] and got[0].params[1] == "idontexist"


def test_who_hides_invisible_users_from_strangers(registered):
    """RFC 2812 3.6.1: masks match users "who are not invisible (user mode +i)" and
    who do not share a channel with the asker."""
    ghost, stranger, friend = registered("ghost"), registered("stranger"), registered("friend")
    joined(ghost, friend, room="#haunt")
    got = ask(ghost, "MODE ghost +i")
    assert [(m.command, m.params) for m in got] == [("MODE", ["ghost", "+i"])]
    assert "ghost" not in [m.params[5] for m in ask(stranger, "WHO *") if m.command == "352"]
    assert [m.params[5] for m in ask(stranger, "WHO #haunt") if m.command == "352"] == ["friend"]
    assert "ghost" in [m.params[5] for m in ask(friend, "WHO *") if m.command == "352"]


# -- WHOIS --------------------------------------------------------------------

@pytest.mark.parametrize("away", [False, True])
def test_whois_numerics(registered, away):
    """Modern WHOIS: only the listed numerics, RPL_ENDOFWHOIS last; 319 lists the
    rooms with prefixes, 312 names the server, 317 gives idle and signon times."""
    nick1, nick2 = registered("nick1"), registered("nick2")
    nick2.join("#chan1")
    nick2.join("#chan2")
    if away:
        ask(nick2, "AWAY :I'm on a break")
    got = ask(nick1, "WHOIS nick2")
    assert got[-1].command == "318" and got[-1].params[:2] == ["nick1", "nick2"]
    assert set(commands(got[:-1])) <= WHOIS_NUMERICS
    by_code = {m.command: m for m in got}
    assert by_code["311"].params == ["nick1", "nick2", "nick2", "127.0.0.1", "*", "Test nick2"]
    assert by_code["319"].params[2] in ("@#chan1 @#chan2", "@#chan2 @#chan1")
    assert by_code["312"].params[:3] == ["nick1", "nick2", SERVER]
    assert re.fullmatch(r"\d+", by_code["317"].params[2]) and re.fullmatch(r"\d+", by_code["317"].params[3])
    if away:
        assert by_code["301"].params == ["nick1", "nick2", "I'm on a break"]
    else:
        assert "301" not in by_code


@pytest.mark.parametrize("server_param", ["", SERVER, "coolNick"])
def test_whois_user_with_or_without_server(clients, registered, server_param):
    """RFC 2812 3.6.2: WHOIS [ <target> ] <mask>: the first reply is RPL_WHOISUSER
    "<nick> <user> <host> * :<real name>", and the host is no copy of nick, user or realname."""
    cool = clients()
    cool.send("NICK coolNick")
    cool.send("USER myusernam 0 * :My User Name")
    cool.expect("376")
    other = registered("otherNick")
    got = ask(other, f"WHOIS {server_param} coolNick")
    first = got[0]
    assert first.command == "311"
    assert first.params[:3] == ["otherNick", "coolNick", "myusernam"] and first.params[5] == "My User Name"
    assert first.params[3] not in ("coolNick", "myusernam", "My User Name")


def test_whois_errors(registered):
    """RFC 2812 3.6.2: ERR_NOSUCHNICK then RPL_ENDOFWHOIS; ERR_NONICKNAMEGIVEN."""
    nick1 = registered("nick1")
    got = ask(nick1, "WHOIS nobody")
    assert [(m.command, m.params[1]) for m in got] == [("401", "nobody"), ("318", "nobody")]
    assert commands(ask(nick1, "WHOIS")) == ["431"]
    # RFC 2812 3.6.2: a <target> that is no server (nor a nick on one) is 402
    got = ask(nick1, "WHOIS bogus.server nick1")
    assert [(m.command, m.params[1]) for m in got] == [("402", "bogus.server")]
    # ... and one that is, by a mask (RFC 2812 3.4: "wildcard masks are usually valid")
    for server in ("*.local", "FORKCHAT.*"):
        got = commands(ask(nick1, f"WHOIS {server} nick1"))
        assert (got[0], got[-1]) == ("311", "318")


def test_links_summon_users(registered):
    """RFC 2812 3.4.5 LINKS: RPL_LINKS "<mask> <server> :<hopcount> <server info>" per
    matching server, then RPL_ENDOFLINKS "<mask> :End of LINKS list"; 4.5/4.6: a server
    without SUMMON or USERS answers ERR_SUMMONDISABLED (445) / ERR_USERSDISABLED (446)."""
    nick1 = registered("nick1")
    got = ask(nick1, "LINKS")
    assert [(m.command, m.params[1:]) for m in got] == [
        ("364", [SERVER, SERVER, "0 forkchat"]), ("365", ["*", "End of LINKS list"])]
    assert [(m.command, m.params[1]) for m in ask(nick1, "LINKS *.elsewhere")] == \
        [("365", "*.elsewhere")]
    assert commands(ask(nick1, f"LINKS {SERVER} forkchat.*")) == ["364", "365"]
    assert commands(ask(nick1, "LINKS bogus.server *")) == ["402"]
    assert commands(ask(nick1, "SUMMON nick1")) == ["445"]
    assert commands(ask(nick1, "USERS")) == ["446"]


def test_whois_invisible_user_hides_rooms_from_strangers(registered):
    """irctest testInvisibleWhois (ergo): 319 is not sent for an invisible nick
    unless the asker shares the room."""
    one, two = registered("userOne"), registered("userTwo")
    one.join("#xyz")
    assert "319" in commands(ask(two, "WHOIS userOne"))
    assert [(m.command, m.params) for m in ask(one, "MODE userOne +i")] == [("MODE", ["userOne", "+i"])]
    assert "319" not in commands(ask(two, "WHOIS userOne"))
    two.join("#xyz")
    assert "319" in commands(ask(two, "WHOIS userOne"))
    ask(two, "PART #xyz")
    drain(one)
    assert [(m.command, m.params) for m in ask(one, "MODE userOne -i")] == [("MODE", ["userOne", "-i"])]
    assert "319" in commands(ask(two, "WHOIS userOne"))


# -- WHOWAS -------------------------------------------------------------------

def quit_and_wait(client):
    client.send("QUIT :bye")
    client.expect_closed()
    client.close()


class OwnServer:
    """Clients of a server of the test's own: WHOWAS history and LUSERS counts are
    server-wide, so these tests do not share the module's server."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.made: list[IrcTestClient] = []

    def clients(self) -> IrcTestClient:
        client = IrcTestClient(self.port)
        self.made.append(client)
        return client

    def registered(self, nick: str, user: str | None = None) -> IrcTestClient:
        client = self.clients()
        client.register(nick, user=user)
        return client


@pytest.fixture
def own(make_server):
    server = OwnServer(make_server().port)
    yield server
    for client in server.made:
        client.close()


def test_whowas_numerics(own):
    """RFC 2812 3.6.3: RPL_WHOWASUSER "<nick> <user> <host> * :<real name>", then
    RPL_WHOISSERVER, then RPL_ENDOFWHOWAS; nothing else."""
    nick1 = own.registered("nick1")
    quit_and_wait(own.registered("nick2"))
    got = ask(nick1, "WHOWAS nick2")
    assert commands(got) == ["314", "312", "369"]
    assert got[0].params == ["nick1", "nick2", "nick2", "127.0.0.1", "*", "Test nick2"]
    assert got[1].params[:3] == ["nick1", "nick2", SERVER]
    assert got[2].params[:2] == ["nick1", "nick2"]


@pytest.mark.parametrize("query,idents", [
    ("WHOWAS nick2", ["ident3", "ident2"]), ("WHOWAS nick2 1", ["ident3"]),
    ("WHOWAS nick2 2", ["ident3", "ident2"]), ("WHOWAS nick2 -1", ["ident3", "ident2"]),
    ("WHOWAS nick2 0", ["ident3", "ident2"]), ("WHOWAS *ck2", ["ident3", "ident2"]),
])
def test_whowas_newest_first_and_count(own, query, idents):
    """RFC 2812 3.6.3: "The history is searched backward, returning the most recent
    entry first"; "up to <count> replies"; "If a non-positive number is passed as
    being <count>, then a full search is done"; wildcards are allowed."""
    nick1 = own.registered("nick1")
    for ident in ("ident2", "ident3"):
        client = own.clients()
        client.register("nick2", user=ident)
        quit_and_wait(client)
    got = ask(nick1, query)
    assert [m.params[2] for m in got if m.command == "314"] == idents
    assert got[-1].command == "369"


def test_whowas_several_targets_and_unknown(own):
    """RFC 2812 3.6.3: several nicks, newest departure first; ERR_WASNOSUCHNICK then
    "At the end of all reply batches, there must be RPL_ENDOFWHOWAS"."""
    nick1 = own.registered("nick1")
    for nick in ("nick2", "nick3"):
        quit_and_wait(own.registered(nick))
    for targets in ("nick2,nick3", "nick3,nick2"):
        got = ask(nick1, f"WHOWAS {targets}")
        assert [m.params[1] for m in got if m.command == "314"] == ["nick3", "nick2"]
        assert got[-1].command == "369" and got[-1].params[1] == targets
    got = ask(nick1, "WHOWAS nobody")
    assert [(m.command, m.params[1]) for m in got] == [("406", "nobody"), ("369", "nobody")]
    assert commands(ask(nick1, "WHOWAS")) == ["431"]


def test_whowas_remembers_old_nick_after_change(own):
    """RFC 2812 3.6.3: WHOWAS asks about a nickname which no longer exists, by a
    nick change as well as by a quit."""
    alice, bob = own.registered("alice"), own.registered("bob")
    ask(bob, "NICK robert")
    got = ask(alice, "WHOWAS bob")
    assert commands(got) == ["314", "312", "369"] and got[0].params[1] == "bob"


# -- ISON, USERHOST -----------------------------------------------------------

def test_ison(registered):
    """RFC 2812 4.9: RPL_ISON ":*1<nick> *( " " <nick> )" lists the nicks present,
    nicks given as separate parameters or as one trailing list."""
    foo = registered("foo")
    registered("Bar")
    got = ask(foo, "ISON foo nobody bar")
    assert [(m.command, m.params) for m in got] == [("303", ["foo", "foo Bar"])]
    got = ask(foo, "ISON :nobody BAR")
    assert [(m.command, m.params) for m in got] == [("303", ["foo", "Bar"])]
    assert commands(ask(foo, "ISON")) == ["461"]


def test_userhost(registered):
    """RFC 2812 4.8: RPL_USERHOST reply = nickname [ "*" ] "=" ( "+" / "-" ) hostname,
    '-' for an away user, up to 5 nicks."""
    foo, bar = registered("foo"), registered("bar")
    ask(bar, "AWAY :away")
    got = ask(foo, "USERHOST foo bar nobody")
    assert [(m.command, m.params) for m in got] == \
        [("302", ["foo", "foo=+foo@127.0.0.1 bar=-bar@127.0.0.1"])]
    assert commands(ask(foo, "USERHOST")) == ["461"]


# -- LUSERS -------------------------------------------------------------------

def lusers(client):
    """The LUSERS answer by numeric; each numeric once, the client's nick first."""
    got = ask(client, "LUSERS")
    by_code = {m.command: m for m in got}
    assert len(by_code) == len(got), "duplicated numerics"
    assert all(m.params[0] == client.nick for m in got)
    visible, invisible, _servers = _three_numbers(by_code["251"].params[1])
    total = int(by_code["265"].params[1])
    assert int(by_code["266"].params[1]) == total and visible + invisible == total
    assert int(re.findall(r"\d+", by_code["255"].params[1])[0]) == total
    return {"total": total, "max": int(by_code["265"].params[2]), "invisible": invisible,
            "unknown": int(by_code["253"].params[1]) if "253" in by_code else 0,
            "opers": int(by_code["252"].params[1]) if "252" in by_code else 0,
            "rooms": int(by_code["254"].params[1]) if "254" in by_code else 0}


def _three_numbers(text):
    numbers = [int(n) for n in re.findall(r"\d+", text)]
    assert len(numbers) == 3, text
    return numbers


def test_lusers_counts_registered_unregistered_and_max(own):
    """RFC 2812 3.4.2 and modern LUSERS: 251 users/invisible/servers, 253 unknown
    connections, 254 channels, 255 and 265/266 current and maximum counts."""
    bar = own.registered("bar")
    assert lusers(bar) == {"total": 1, "max": 1, "invisible": 0, "unknown": 0, "opers": 0, "rooms": 0}
    qux = own.clients()
    qux.send("NICK qux")
    qux.send("PING :reg")
    qux.expect("PONG")
    assert lusers(bar)["unknown"] == 1
    qux.send("USER u s e r")
    qux.expect("376")
    qux.nick = "qux"
    bar.join("#room")
    ask(qux, "MODE qux +i")
    assert lusers(bar) == {"total": 2, "max": 2, "invisible": 1, "unknown": 0, "opers": 0, "rooms": 1}
    quit_and_wait(qux)
    assert lusers(bar) == {"total": 1, "max": 2, "invisible": 0, "unknown": 0, "opers": 0, "rooms": 1}


def test_lusers_counts_operators(make_server):
    """Modern LUSERS: RPL_LUSEROP counts operators; MODE -o and QUIT lower it."""
    server = make_server(config_text=OPER_CONFIG + TEST_LIMITS)
    bar, qux = IrcTestClient(server.port), IrcTestClient(server.port)
    try:
        bar.register("bar")
        qux.register("qux")
        assert "381" in commands(ask(bar, "OPER admin pw"))
        assert "381" in commands(ask(qux, "OPER admin pw"))
        assert lusers(bar)["opers"] == 2
        assert [(m.command, m.params) for m in ask(bar, "MODE bar -o")] == [("MODE", ["bar", "-o"])]
        assert lusers(bar)["opers"] == 1
        quit_and_wait(qux)
        assert lusers(bar)["opers"] == 0
    finally:
        bar.close()
        qux.close()


def test_whois_rooms_split_over_several_lines(registered):
    """RFC 2812 2.3: RPL_WHOISCHANNELS for a user in many rooms is cut into several
    lines of at most 512 bytes, listing every room."""
    busy, asker = registered("busy"), registered("asker")
    rooms = [f"#room{index:02d}" + "r" * 42 for index in range(20)]       # 49 characters each
    for room in rooms:
        busy.send(f"JOIN {room}")
    for _ in rooms:
        busy.expect("366")
    got = ask(asker, "WHOIS busy")
    lines = [m for m in got if m.command == "319"]
    assert len(lines) >= 2
    shown = " ".join(m.params[-1] for m in lines).split()
    assert sorted(name.lstrip("@") for name in shown) == sorted(rooms)
    for msg in lines:
        assert len(protocol.format_line(msg.prefix, msg.command, *msg.params)) <= 512


def test_who_exact_nick_finds_an_invisible_user(registered):
    """irctest testWhoInvisible (modern): "invisibility should not be respected for
    plain nicknames, only for masks", nor between users sharing a room."""
    evan, shiv = registered("evan"), registered("shivaram")
    ask(evan, "MODE evan +i")
    assert commands(ask(shiv, "WHO eva*")) == ["315"]
    assert commands(ask(shiv, "WHO evan")) == ["352", "315"]
    joined(evan, shiv, room="#test")
    assert commands(ask(shiv, "WHO eva*")) == ["352", "315"]


@pytest.mark.parametrize("line", ["MOTD {t}", "LUSERS * {t}"])
@pytest.mark.parametrize("target,found", [("forkchat.local", True), ("*.local", True), ("asker", True),
                                          ("invalid.server.example", False), ("invalidserver", False)])
def test_motd_and_lusers_server_target(registered, line, target, found):
    """RFC 2812 3.4.1/3.4.2: MOTD [<target>] and LUSERS [<mask> [<target>]] answer for
    this server (by name, mask or a user's nick on it), else ERR_NOSUCHSERVER (402)."""
    asker = registered("asker")
    got = ask(asker, line.format(t=target))
    if found:
        assert commands(got)[-1] in ("376", "266")
    else:
        assert [(m.command, m.params[1]) for m in got] == [("402", target)]


@pytest.mark.parametrize("line, ends", [("TIME {t}", "391"), ("INFO {t}", "374"),
                                        ("ADMIN {t}", "259"), ("STATS u {t}", "219"),
                                        ("LINKS {t} *", "365")])
@pytest.mark.parametrize("target", ["forkchat.local", "*.local", "FORKCHAT.*", "asker", "other"])
def test_worker_answered_server_queries_take_a_mask_or_a_nick(registered, line, ends, target):
    """RFC 2812 3.4: "wildcard masks are usually valid" in a <target>, and a
    nickname means the server its user is on; irssi's /admin and /time
    offer a nickname.  The worker answers these, and knew only the exact
    name: 'ADMIN bob' and 'TIME *.local' were 402 while MOTD took both."""
    asker = registered("asker")
    registered("other")
    got = ask(asker, line.format(t=target))
    assert commands(got)[-1] == ends and "402" not in commands(got)
    assert [m.params[1] for m in ask(asker, line.format(t="nobody"))] == ["nobody"]   # 402
    assert commands(ask(asker, "TIME")) == ["391"]     # in order after the broker's answer


@pytest.mark.parametrize("line", ["INFO invalid.server.example", "VERSION invalidserver",
                                  "TIME invalidserver", "ADMIN invalidserver", "STATS u invalidserver"])
def test_server_queries_with_unknown_target_are_402(registered, line):
    """RFC 2812 3.4.3-3.4.10: ERR_NOSUCHSERVER when <target> names no known server
    (irctest testInfoNosuchserver, RFC 1459/2812)."""
    asker = registered("asker")
    got = ask(asker, line)
    assert [(m.command, m.params[1]) for m in got] == [("402", line.split()[-1])]


# -- server queries: modern-practice replies ------------------------------------

def test_version_is_351_then_the_same_005_tokens_as_the_welcome(registered):
    """Modern (VERSION): "the given server SHOULD respond with one RPL_VERSION reply
    and one or more RPL_ISUPPORT replies" (RFC 2812 3.4.3 has 351 alone; modern
    practice wins).  A target naming this server, or a user on it, gets the same."""
    asker = registered("asker")
    welcome = [m.params[1:-1] for m in asker.history if m.command == "005"]
    for line in ("VERSION", f"VERSION {SERVER}", "VERSION asker"):
        got = ask(asker, line)
        assert commands(got) == ["351"] + ["005"] * len(welcome), line
        assert got[0].params[1].startswith("forkchat-") and got[0].params[2] == SERVER
        assert [m.params[1:-1] for m in got[1:]] == welcome
        assert all(m.params[-1] == "are supported by this server" for m in got[1:])


@pytest.mark.parametrize("line", ["TOPIC :", "MODE :", "KICK #chan :", "INVITE asker :",
                                  "INVITE : #chan", "ISON :", "USERHOST :",
                                  "OPER admin :", "OPER : secret"])
def test_an_empty_required_parameter_is_a_missing_one(registered, line):
    """RFC 2812 ERR_NEEDMOREPARAMS: the client "didn't supply enough parameters";
    an empty trailing parameter supplies nothing, so it is 461 with the command's
    name, not a lookup of the empty name ("403 *", "401 *") or an empty 303/302.
    Checked for commands the broker answers and for OPER, which the worker does."""
    asker = registered("asker")
    got = ask(asker, line)
    assert [(m.command, m.params[1]) for m in got] == [("461", line.split()[0])]
