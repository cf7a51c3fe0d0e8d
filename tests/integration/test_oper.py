"""Operators: OPER, KILL, WALLOPS, user MODE (i, o, w), STATS for operators.

The server runs with one configured operator (name "admin", plain password
"pw").  Docstrings quote RFC 2812 (3.1.4 OPER, 3.1.5 user MODE, 3.7.1 KILL,
4.7 WALLOPS) or the modern document, as irctest's oper/kill tests do.
"""

import time

import pytest

from forkchat import commands as worker_commands, operguard, passwords
from tests.conftest import TEST_LIMITS
from tests.integration.chat_helpers import OPER_CONFIG, ask, commands, drain, joined
from tests.integration.chat_helpers import clients, server, shared_server  # noqa: F401 (one server per module)
from tests.support.ircclient import IrcTestClient

SERVER_CONFIG = OPER_CONFIG + TEST_LIMITS     # the module's shared server has the operator


@pytest.fixture
def user(registered):
    """Factory: user("nick") -> a registered client of the server with an operator."""
    return registered


def oper_up(client):
    got = ask(client, "OPER admin pw")
    assert "381" in commands(got), got
    return got


# -- OPER ---------------------------------------------------------------------

def test_oper_success_gives_381_and_one_mode(user):
    """Modern OPER: RPL_YOUREOPER, and the user receives +o in one MODE message."""
    baz = user("baz")
    got = oper_up(baz)
    assert [(m.command, m.params) for m in got] == \
        [("381", ["baz", "You are now an IRC operator"]), ("MODE", ["baz", "+o"])]
    assert ask(baz, "MODE baz")[0].params == ["baz", "+o"]


@pytest.mark.parametrize("line", ["OPER admin nottheoperpassword", "OPER notanoperuser pw"])
def test_oper_failure_is_464_and_no_381(user, line):
    """RFC 2812 3.1.4: ERR_PASSWDMISMATCH (or ERR_NOOPERHOST); never RPL_YOUREOPER."""
    baz = user("baz")
    got = ask(baz, line)
    assert commands(got) == ["464"] and got[0].params[0] == "baz"
    assert ask(baz, "MODE baz")[0].params == ["baz", "+"]
    # The module's server is shared: an operator's success forgives this
    # address its failures, so later tests never meet its OPER wait.
    oper_up(user("forgiver"))


def test_oper_without_password_is_461(user):
    """RFC 2812 3.1.4 numerics: ERR_NEEDMOREPARAMS."""
    baz = user("baz")
    got = ask(baz, "OPER admin")
    assert commands(got) == ["461"] and got[0].params[:2] == ["baz", "OPER"]


def test_oper_shows_in_whois_who_and_userhost(user):
    """RFC 2812: RPL_WHOISOPERATOR (313), the '*' flag of RPL_WHOREPLY and of
    RPL_USERHOST mark an operator."""
    boss, other = user("boss"), user("other")
    oper_up(boss)
    whois = ask(other, "WHOIS boss")
    assert [m.params for m in whois if m.command == "313"] == [["other", "boss", "is an IRC operator"]]
    ask(boss, "AWAY :busy")
    who = ask(other, "WHO boss")
    assert who[0].params[6] == "G*"
    assert ask(other, "USERHOST boss")[0].params[1] == "boss*=-boss@127.0.0.1"


# -- OPER back-off per address -------------------------------------------------
# Each test has a server of its own (the module's shared one must not learn to
# distrust 127.0.0.1), whose operator password is a real scrypt hash.

ADDRESS_WAIT = worker_commands.OPER_ADDRESS_WAIT_TEXT.split("{")[0]


@pytest.fixture
def guarded(make_server):
    """A server whose operator "admin" has the hashed password "pw"."""
    hashed = passwords.hash_password("pw")
    return make_server(config_text=f'[[operators]]\nname = "admin"\npassword = "{hashed}"\n'
                                   + TEST_LIMITS)


def connect(guarded, nick, source=None):
    client = IrcTestClient(guarded.port, source=source)
    client.register(nick)
    return client


def fail_oper_once(guarded, nick):
    """A new connection from 127.0.0.1 fails OPER once, then leaves.  The PING
    after it is answered only once the broker has counted the failure."""
    client = connect(guarded, nick)
    client.send("OPER admin wrong")
    assert client.expect("464").params[-1] == "Password incorrect"
    client.sync()
    client.close()


def assert_told_to_wait(client, since):
    """OPER with the right password is refused for the address, unchecked.

    The first address-wide wait lasts FIRST_DELAY_S from the failure sent at
    `since`; a machine too slow to ask within it proves nothing either way."""
    client.send("OPER admin pw")
    reply = client.expect(lambda m: m.command in ("464", "381"))
    if reply.command == "381" and time.monotonic() - since >= operguard.FIRST_DELAY_S:
        pytest.skip("the address-wide wait was over before the test could ask")
    assert reply.command == "464" and reply.params[-1].startswith(ADDRESS_WAIT)
    assert reply.params[-1].endswith((" 1 s", " 2 s"))     # the first address wait is 2 s


def fail_past_the_free_ones(server, prefix):
    """The address's free failures and one more, each on a connection of its
    own; returns when that last one was sent (the wait starts there)."""
    for index in range(operguard.FREE_FAILURES):
        fail_oper_once(server, f"{prefix}{index}")
    since = time.monotonic()
    fail_oper_once(server, f"{prefix}last")
    return since


def test_failures_past_the_free_ones_make_the_address_wait(guarded):
    """Reconnecting does not shed the wait: after the free failures and one more,
    each from a connection of its own, a new connection from the same address is
    refused at once, its password not even checked, and so is a connection that
    was already there; the broker logs the start of the wait once."""
    bystander = connect(guarded, "bystander")
    since = fail_past_the_free_ones(guarded, "guess")
    newcomer = connect(guarded, "newcomer")
    assert_told_to_wait(newcomer, since)
    assert_told_to_wait(bystander, since)
    guarded.wait_for_text(f"OPER from 127.0.0.1 must wait: {operguard.FREE_FAILURES + 1} "
                          "failed attempts, the last as 'admin'")
    newcomer.send("QUIT")
    newcomer.expect_closed()
    guarded.wait_for_text("newcomer closing")       # the worker's log is read up to here
    log = guarded.log_text()
    assert "failed OPER attempt as 'admin' by newcomer" not in log       # no hash, no failure
    assert "failed OPER attempt as 'admin' by bystander" not in log
    assert log.count("must wait") == 1
    newcomer.close()
    bystander.close()


def test_below_the_free_failures_an_operator_still_gets_in(guarded):
    """One person's typos behind a shared address do not lock out the operator
    sharing it, and the operator's success forgives them; one failure more than
    the free ones, and the next connection must wait."""
    for round_ in range(2):
        for index in range(operguard.FREE_FAILURES):
            fail_oper_once(guarded, f"typo{round_}{index}")
        operator = connect(guarded, f"operator{round_}")
        operator.send("OPER admin pw")
        operator.expect("381")
        operator.close()
    since = fail_past_the_free_ones(guarded, "typo2")
    late = connect(guarded, "late")
    assert_told_to_wait(late, since)
    late.close()


def test_the_wait_covers_the_address_block(make_server):
    """Failed OPERs count per address block, as the connection limits do: a
    guesser with an IPv6 /64 would otherwise have fresh addresses without end.
    With ipv4_prefix = 24, 127.0.0.2 waits for the failures of 127.0.0.1."""
    hashed = passwords.hash_password("pw")
    server = make_server(config_text=f'[[operators]]\nname = "admin"\npassword = "{hashed}"\n'
                                     + TEST_LIMITS + "ipv4_prefix = 24\n")
    since = fail_past_the_free_ones(server, "guess")
    neighbour = connect(server, "neighbour", source="127.0.0.2")
    assert_told_to_wait(neighbour, since)
    server.wait_for_text("OPER from 127.0.0.0/24 must wait")
    neighbour.close()


# -- KILL ---------------------------------------------------------------------

def test_kill_by_oper_closes_target_and_room_sees_quit(user):
    """RFC 2812 3.7.1: KILL closes the client-server connection; the victim's rooms
    see it quit; modern: the reason names the killer."""
    ircop, alice, bob = user("ircop"), user("alice"), user("bob")
    joined(alice, bob, room="#chan")
    oper_up(ircop)
    assert ask(ircop, "KILL alice :some arbitrary reason") == []
    closing = alice.expect_closed()
    kills = [m for m in closing if m.command == "KILL"]
    assert kills and kills[0].prefix == "ircop!ircop@127.0.0.1" and kills[0].params[0] == "alice"
    assert closing[-1].command == "ERROR" and "some arbitrary reason" in closing[-1].params[0]
    got = drain(bob)
    assert [(m.command, m.prefix) for m in got] == [("QUIT", "alice!alice@127.0.0.1")]
    assert got[0].params == ["Killed (ircop (some arbitrary reason))"]
    assert commands(ask(bob, "WHOIS alice"))[0] == "401"


def test_kill_with_one_argument(user):
    """irctest testKillOneArgument (ergo): `KILL nick` without a comment also works."""
    ircop, alice = user("ircop"), user("alice")
    oper_up(ircop)
    ask(ircop, "KILL alice")
    assert alice.expect_closed()[-1].command == "ERROR"


def test_kill_by_non_oper_is_481(user):
    """Modern KILL: "ERR_NOPRIVILEGES" for a non-operator; nobody is killed, not even
    the sender naming itself."""
    alice, bob = user("alice"), user("bob")
    assert commands(ask(alice, "KILL bob :some arbitrary reason")) == ["481"]
    assert commands(ask(alice, "KILL alice :some arbitrary reason")) == ["481"]
    assert ask(alice, "PRIVMSG bob :still alive?") == []
    assert commands(drain(bob)) == ["PRIVMSG"]


def test_kill_errors_for_oper(user):
    """RFC 2812 3.7.1 numerics: ERR_NEEDMOREPARAMS, ERR_NOSUCHNICK."""
    ircop = user("ircop")
    oper_up(ircop)
    assert commands(ask(ircop, "KILL")) == ["461"]
    assert commands(ask(ircop, "KILL nobody :x")) == ["401"]


# -- WALLOPS ------------------------------------------------------------------

def test_wallops_reaches_only_plus_w_users(user):
    """RFC 2812 4.7: WALLOPS goes to "all users who have set the 'w' user mode";
    only operators may send it here (481 otherwise)."""
    ircop, watcher, quiet = user("ircop"), user("watcher"), user("quiet")
    assert [(m.command, m.params) for m in ask(watcher, "MODE watcher +w")] == \
        [("MODE", ["watcher", "+w"])]
    assert commands(ask(quiet, "WALLOPS :hello opers")) == ["481"]
    oper_up(ircop)
    assert ask(ircop, "WALLOPS :server restart soon") == []      # ircop is not +w
    assert [(m.command, m.prefix, m.params) for m in drain(watcher)] == \
        [("WALLOPS", "ircop!ircop@127.0.0.1", ["server restart soon"])]
    assert drain(quiet) == []
    assert commands(ask(ircop, "WALLOPS")) == ["461"]


# -- user MODE ----------------------------------------------------------------

def test_user_mode_query_and_changes(user):
    """RFC 2812 3.1.5: MODE <nickname> gives RPL_UMODEIS; +i and +w are set by the
    user; "If a user attempts to make themselves an operator using the "+o" flag,
    the attempt should be ignored"; -o is allowed."""
    alice = user("alice")
    assert ask(alice, "MODE alice")[0].params == ["alice", "+"]
    assert [(m.command, m.params) for m in ask(alice, "MODE alice +iw")] == \
        [("MODE", ["alice", "+iw"])]
    assert ask(alice, "MODE alice +i") == []
    assert ask(alice, "MODE alice +o") == []
    assert ask(alice, "MODE alice")[0].params == ["alice", "+iw"]
    assert [(m.command, m.params) for m in ask(alice, "MODE alice -w")] == \
        [("MODE", ["alice", "-w"])]
    oper_up(alice)
    assert [(m.command, m.params) for m in ask(alice, "MODE alice -o")] == \
        [("MODE", ["alice", "-o"])]
    assert commands(ask(alice, "KILL alice")) == ["481"]


def test_user_mode_errors(user):
    """RFC 2812 3.1.5 numerics: ERR_UMODEUNKNOWNFLAG (501), ERR_USERSDONTMATCH (502)
    for another user's modes, ERR_NOSUCHNICK, ERR_NEEDMOREPARAMS."""
    alice, bob = user("alice"), user("bob")
    assert commands(ask(alice, "MODE alice +Z")) == ["501"]
    assert [(m.command, m.params) for m in ask(alice, "MODE alice +iZ")] == \
        [("MODE", ["alice", "+i"]), ("501", ["alice", "Unknown MODE flag"])]
    assert commands(ask(alice, "MODE bob +i")) == ["502"]
    assert commands(ask(alice, "MODE bob")) == ["502"]
    assert commands(ask(alice, "MODE nobody +i")) == ["401"]
    assert commands(ask(alice, "MODE")) == ["461"]
    assert ask(bob, "MODE bob")[0].params == ["bob", "+"]


# -- STATS --------------------------------------------------------------------

def test_stats_process_figures_for_operators_only(user):
    """Design section 2: STATS with process figures from psutil (workers, memory),
    for operators; a non-operator gets 481 for them, and anyone gets 219 at the end."""
    plain, ircop = user("plain"), user("ircop")
    assert commands(ask(plain, "STATS p")) == ["481"]
    uptime = ask(plain, "STATS u")
    assert commands(uptime) == ["242", "219"] and uptime[0].params[1].startswith("Server Up")
    oper_up(ircop)
    got = ask(ircop, "STATS p")
    assert commands(got)[-1] == "219" and got[-1].params[1] == "p"
    lines = [m.params[-1] for m in got if m.command == "249"]
    text = " ".join(lines).lower()
    assert "worker" in text and ("rss" in text or "memory" in text or "mib" in text)
    # the whole server's tree: supervisor, broker, spawner and both workers at least
    # (a worker that measured from its parent, the spawner, saw 3 and no broker)
    processes = int(lines[0].split()[1])
    assert processes >= 5 and any(line.startswith("broker ") for line in lines), lines


def test_command_right_after_oper_sees_the_operator(user):
    """Answers come in the order of the commands: after `OPER` succeeds, the very next
    line (sent in the same packet) is judged with operator rights."""
    ircop = user("ircop")
    ircop.send("OPER admin pw\r\nSTATS p")
    got = drain(ircop)
    assert commands(got)[:2] == ["381", "MODE"]
    assert "481" not in commands(got)
