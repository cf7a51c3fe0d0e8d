"""Commands whose cost to others grows with the client's rooms: their limits.

A nick change is told to everyone sharing a room, a JOIN or PART to every
member: flood control's lines a second do not bound that, so these do.
"""

from tests.integration.chat_helpers import OPER_CONFIG, ask, commands, drain, joined
from tests.support.ircclient import IrcTestClient
from tests.integration.chat_helpers import clients, server, shared_server  # noqa: F401 (one server per module)

# Two nick changes a minute: a third is refused within any test's time.
SERVER_CONFIG = """
[limits]
flood_burst = 1000
flood_rate = 1000.0
nick_changes = 2
nick_change_window = 60
""" + OPER_CONFIG


def nick_lines(messages):
    return [m.params[0] for m in messages if m.command == "NICK"]


def answers(client, *lines):
    """Send lines, then a PING; everything the server sent before its PONG."""
    for line in lines:
        client.send(line)
    client.send("PING :done")
    got = []
    client.expect(lambda m: got.append(m) or (m.command == "PONG" and m.params[-1] == "done"))
    return got[:-1]


def rename(client, new):
    """Send NICK and return the answer; the client's nick follows a NICK echo."""
    got = answers(client, f"NICK {new}")
    if nick_lines(got):
        client.nick = new
    return got


def test_nick_changes_beyond_the_limit_get_438_and_reach_nobody(registered):
    """The NICK that registered is not counted; two changes go through, the
    third is refused with 438 naming the wait, and no neighbour hears of it."""
    alice, bob = registered("alice"), registered("bob")
    joined(alice, bob, room="#big")
    assert nick_lines(rename(alice, "alice1")) == ["alice1"]
    assert nick_lines(rename(alice, "alice2")) == ["alice2"]
    got = rename(alice, "alice3")
    assert commands(got) == ["438"]
    assert got[0].params[:2] == ["alice2", "alice3"]
    assert got[0].params[-1].startswith("Nick change too fast. Please wait ")
    seconds = int(got[0].params[-1].split()[-2])
    assert 0 < seconds <= 60
    assert nick_lines(drain(bob)) == ["alice1", "alice2"]
    assert nick_lines(ask(bob, "WHOIS alice3")) == [] and alice.nick == "alice2"


def test_refused_and_unchanged_nicks_do_not_count(registered):
    """Only a change the rooms were told of counts: a 433 or a NICK to the
    same nick costs nobody anything."""
    carol, dave = registered("carol"), registered("dave")
    for _ in range(3):
        assert commands(rename(carol, "dave")) == ["433"]
        assert rename(carol, "carol") == []
    assert nick_lines(rename(carol, "carol1")) == ["carol1"]
    assert nick_lines(rename(carol, "carol2")) == ["carol2"]
    assert commands(rename(carol, "carol3")) == ["438"]
    assert dave.nick == "dave"


def test_a_burst_of_nick_lines_is_counted_in_order(registered):
    """Lines sent at once are each checked after the change before them
    was counted: a burst cannot slip past the limit."""
    erin = registered("erin")
    got = answers(erin, *(f"NICK erin{index}" for index in range(5)))
    assert commands(got) == ["NICK", "NICK", "438", "438", "438"]
    assert nick_lines(got) == ["erin0", "erin1"]
    erin.nick = "erin1"


def test_operators_are_not_limited(registered):
    """An operator may need to rename often; as in hybrid and ratbox, no limit."""
    frank = registered("frank")
    assert commands(ask(frank, "OPER admin pw"))[0] == "381"
    for index in range(4):
        assert nick_lines(rename(frank, f"frank{index}")) == [f"frank{index}"]


# Three rooms at once, then a room every 100 seconds: what follows a full
# burst waits, held in a receive queue of the least size allowed.
ROOM_PACED = """
[limits]
flood_burst = 1000
flood_rate = 0.01
rooms_per_client = 3
recvq_bytes = 512
"""


def test_join_part_cycles_are_paced_per_room(make_server):
    """A JOIN naming three rooms spends the whole room burst: the JOIN 0
    after it waits, and a client cycling on is cut off as any flooder is,
    where one token per line let it make every room hear 2 lines a cycle."""
    server = make_server(config_text=ROOM_PACED)
    mallory = IrcTestClient(server.port)
    try:
        mallory.register("mallory")
        cycle = "JOIN #a,#b,#c\r\nJOIN 0\r\n"
        mallory.send((cycle * 30).rstrip("\r\n"))
        got = mallory.expect_closed()
        errors = [m.params[-1] for m in got if m.command == "ERROR"]
        assert errors and "Excess Flood" in errors[0]
        assert [m.command for m in got].count("PART") == 0
    finally:
        mallory.close()


def test_a_connect_time_join_of_every_room_is_not_held(make_server):
    """irssi and WeeChat join all their rooms (up to rooms_per_client, 50)
    in one JOIN on connect: it goes whole and at once, and the lines after
    it are not held for it (one line token), even at a slow flood rate."""
    server = make_server(config_text="[limits]\nflood_burst = 10\nflood_rate = 0.01\n")
    client = IrcTestClient(server.port)
    try:
        client.register("irssi")
        rooms = [f"#room{index}" for index in range(50)]
        client.send("JOIN " + ",".join(rooms))
        client.send("MODE #room0")
        client.send("PING :after")
        got = client.collect_until("PONG")
        assert [m.params[0] for m in got if m.command == "JOIN"] == rooms
        assert "324" in [m.command for m in got]
    finally:
        client.close()
