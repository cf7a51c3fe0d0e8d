"""After a broker SIGKILL, clients see what they saw before, as forkchat(7) promises.

forkchat(7) "What a broker death loses" lists the only things a broker death
may lose (in-flight frames, pending invitations, WHOWAS, sign-on and idle
times, OPER failure counts, room records younger than half a second).  These tests ask every query a client can make before and after
the kill and compare the answers, and check that a kill in the middle of a
burst leaves no client believing in rooms or a nick the new broker does not
give it.
"""

from __future__ import annotations

import os
import random
import signal

from forkchat import protocol
from tests.support.ircclient import IrcTestClient
from tests.support.server import ServerProcess, broker_pid, worker_pid

CONFIG = ("[limits]\nflood_burst = 1000\nflood_rate = 1000.0\n"
          '[[operators]]\nname = "boss"\npassword = "pw"\n')
# The queries whose answers must not change, and the numeric that ends each.
QUERIES = [
    ("NAMES #pub", "366"), ("NAMES #sec", "366"), ("NAMES #inv", "366"),
    ("MODE #pub", "324"), ("MODE #sec", "324"), ("MODE #inv", "324"),
    ("MODE #pub b", "368"), ("MODE #inv b", "368"), ("LIST", "323"),
    ("WHO #pub", "315"), ("WHO *", "315"), ("WHOIS Alice", "318"), ("WHOIS bob", "318"),
    ("WHOIS CAROL", "318"), ("LUSERS", "266"), ("ISON alice BOB carol dave", "303"),
    ("USERHOST alice bob carol dave", "302"), ("TOPIC #pub", "333"),
]
MESSAGES = 300                 # about 100 KB: more than one read of the link (64 KiB)
RESTARTING = {"317"}           # idle and sign-on times restart, as documented


def kill_broker(server: ServerProcess) -> None:
    mark = server.log_length()
    os.kill(broker_pid(server), signal.SIGKILL)
    broker_pid(server, after=mark)
    server.wait_for_text("recovery done", start=mark)


def answers(client: IrcTestClient, query: str, end: str) -> list[str]:
    """The answer lines, without the client's own nick, words in sorted order
    (member order in NAMES and WHO is not part of the promise)."""
    client.send(query)
    got = client.collect_until(end)
    lines = []
    for msg in got:
        if msg.command in RESTARTING or msg.command in ("329", "JOIN", "PRIVMSG"):
            continue
        params = msg.params[1:] if msg.command.isdigit() else msg.params
        last = " ".join(sorted(params[-1].split())) if params else ""
        lines.append(" ".join([msg.command, *params[:-1], last]))
    return sorted(lines)


def snapshot(watchers: list[IrcTestClient], everyone: list[IrcTestClient]) -> dict:
    seen = {}
    for index, client in enumerate(watchers):
        for query, end in QUERIES:
            seen[(index, query)] = answers(client, query, end)
    for client in everyone:
        seen[(client.nick, "umode")] = answers(client, f"MODE {client.nick}", "221")
    return seen


def build_up(alice: IrcTestClient, bob: IrcTestClient, carol: IrcTestClient,
             dave: IrcTestClient) -> None:
    """Nicks with capitals, user modes, an operator, away, three kinds of room."""
    alice.send("OPER boss pw")
    alice.expect("381")
    for client, line in ((alice, "MODE Alice +w"), (bob, "MODE BoB +i"), (dave, "MODE dave +w")):
        client.send(line)
        client.expect("MODE")
    carol.send("NICK Carol")          # WHOWAS has oldnick, which is lost
    carol.expect("NICK")
    carol.nick = "Carol"
    alice.send("AWAY :gone fishing")
    alice.expect("306")
    for client in (alice, bob, carol):
        client.join("#pub")
    for line in ("TOPIC #pub :hello world", "MODE #pub +v BoB", "MODE #pub +o Carol",
                 "MODE #pub +b *!*@bad.host", "MODE #pub +klm key1 5"):
        alice.send(line)
        alice.expect(lambda m: m.command in ("TOPIC", "MODE"))
    bob.join("#sec")
    bob.send("MODE #sec +s")
    bob.expect("MODE")
    carol.join("#inv")
    for line in ("MODE #inv +i", "MODE #inv +b nasty!*@*"):
        carol.send(line)
        carol.expect("MODE")
    carol.send("INVITE dave #inv")
    carol.expect("341")
    dave.expect("INVITE")


def test_what_a_client_can_ask_is_the_same_after_a_broker_kill(make_server):
    server = make_server(config_text=CONFIG)
    alice, bob, carol, dave = (IrcTestClient(server.port) for _ in range(4))
    try:
        for client, nick in ((alice, "Alice"), (bob, "BoB"), (carol, "oldnick"), (dave, "dave")):
            client.register(nick)
        build_up(alice, bob, carol, dave)
        everyone = [alice, bob, carol, dave]
        before = snapshot([alice, dave], everyone)
        assert before[(0, "TOPIC #pub")][0].startswith("332 #pub")
        assert "221 +ow" in before[("Alice", "umode")]
        kill_broker(server)
        after = snapshot([alice, dave], everyone)
        assert {k: (before[k], v) for k, v in after.items() if v != before[k]} == {}
        # what forkchat(7) says is lost with the broker
        dave.send("WHOWAS oldnick")
        dave.expect("406")
        dave.send("JOIN #inv")
        dave.expect("473")
    finally:
        for client in (alice, bob, carol, dave):
            client.close()


class OwnView:
    """What one client believes of itself, from the lines it received."""

    def __init__(self, nick: str) -> None:
        self.nick = nick
        self.rooms: dict[str, str] = {}      # folded room -> highest prefix

    def feed(self, msg: protocol.Message) -> None:
        own = "!" in msg.prefix and protocol.casefold(msg.prefix.split("!")[0]) == \
            protocol.casefold(self.nick)
        room = protocol.casefold(msg.params[0]) if msg.params else ""
        if own and msg.command == "NICK":
            self.nick = msg.params[0]
        elif own and msg.command == "JOIN":
            self.rooms[room] = ""
        elif own and msg.command == "PART":
            self.rooms.pop(room, None)
        elif msg.command == "KICK" and protocol.casefold(msg.params[1]) == \
                protocol.casefold(self.nick):
            self.rooms.pop(room, None)
        elif msg.command == "353":
            self._names(msg)
        elif msg.command == "MODE" and room in self.rooms:
            self._mode(room, msg.params[1], list(msg.params[2:]))

    def _names(self, msg: protocol.Message) -> None:
        room = protocol.casefold(msg.params[2])
        for name in msg.params[-1].split():
            bare = name.lstrip("@+")
            if room in self.rooms and protocol.casefold(bare) == protocol.casefold(self.nick):
                self.rooms[room] = name[:len(name) - len(bare)]

    def _mode(self, room: str, letters: str, args: list[str]) -> None:
        status, sign = set(self.rooms[room]), "+"
        for letter in letters:
            if letter in "+-":
                sign = letter
            elif letter in "ov":
                target = args.pop(0)
                if protocol.casefold(target) == protocol.casefold(self.nick):
                    mark = "@" if letter == "o" else "+"
                    status = status | {mark} if sign == "+" else status - {mark}
            elif letter in "bk" or (letter == "l" and sign == "+"):
                args.pop(0)
        self.rooms[room] = "@" if "@" in status else "".join(status)


def burst_line(rng: random.Random, index: int, step: int, count: int) -> str:
    room = rng.choice(["#b0", "#B1", "#b2"])
    other = f"u{rng.randrange(count)}"
    return rng.choice([
        f"JOIN {room}", f"JOIN {room}", f"JOIN {room}", f"PART {room}", f"KICK {room} {other}",
        f"MODE {room} +v {other}", f"MODE {room} +o {other}", f"MODE {room} -o {other}",
        f"PRIVMSG {room} :hi {step}", f"TOPIC {room} :t{step}", f"MODE {room} +i",
        f"MODE {room} -i",
        "NICK " + rng.choice([f"u{index}", f"U{index}",      # case changes, and swaps
                              f"x{rng.randrange(count)}", f"X{rng.randrange(count)}"]),
    ])


def test_a_kill_in_a_burst_leaves_every_client_where_the_broker_has_it(make_server):
    """JOIN, PART, KICK, MODE, NICK (case changes and swaps) from 4 clients, the
    broker killed near the end: afterwards each client's own idea of its nick
    (case included) and rooms with its status is what WHOIS says, and no two
    clients hold nicks equal but for case."""
    server = make_server(config_text=CONFIG)
    rng = random.Random(7)
    count, steps = 4, 60
    clients = [IrcTestClient(server.port) for _ in range(count)]
    try:
        views = []
        for index, client in enumerate(clients):
            client.register(f"u{index}")
            views.append(OwnView(f"u{index}"))
            for msg in client.join("#b0,#B1,#b2"):
                views[-1].feed(msg)
        for step in range(steps):
            if step == steps - 8:
                mark = server.log_length()
                os.kill(broker_pid(server), signal.SIGKILL)
            for index, client in enumerate(clients):
                client.send(burst_line(rng, index, step, count))
        broker_pid(server, after=mark)
        server.wait_for_text("recovery done", start=mark)
        for barrier in ("one", "two"):   # the second: every fan-out of the first is in
            for client in clients:
                client.send(f"ISON {barrier}")
            for client, view in zip(clients, views):
                client.expect(lambda m, v=view: v.feed(m) or m.command == "303", 10)
        folded = set()
        for client, view in zip(clients, views):
            client.send(f"WHOIS {view.nick}")
            reply = client.collect_until("318")
            for msg in reply:
                view.feed(msg)
            whois = [m for m in reply if m.command == "311"]
            assert whois and whois[0].params[1] == view.nick and whois[0].params[2] == client.nick
            listed = {}
            for msg in reply:
                if msg.command == "319":
                    for entry in msg.params[-1].split():
                        bare = entry.lstrip("@+")
                        listed[protocol.casefold(bare)] = entry[:len(entry) - len(bare)]
            assert listed == view.rooms, view.nick
            folded.add(protocol.casefold(view.nick))
        assert len(folded) == count
    finally:
        for client in clients:
            client.close()


def test_what_the_dead_broker_had_written_still_reaches_the_client(make_server):
    """Output the broker wrote to a worker's link before it died is delivered.

    forkchat(7) counts as lost only what the broker had not yet written.  A
    worker that wrote to the dead link before reading all of it (here: its
    client's line, with more than one read's worth of room messages waiting)
    used to close the link on the write error and drop what it had not read.
    """
    server = make_server(config_text=CONFIG)
    alice, bob = IrcTestClient(server.port), IrcTestClient(server.port)
    try:
        alice.register("alice")
        bob.register("bob")
        alice.join("#r")
        bob.join("#r")
        alice.expect("JOIN")
        stopped = worker_pid(server, "alice")
        os.kill(stopped, signal.SIGSTOP)
        try:
            alice.send("PRIVMSG #r :from alice")
            padding = "x" * 300
            for index in range(MESSAGES):
                bob.send(f"PRIVMSG #r :{index} {padding}")
            bob.send("ISON alice")     # answered after every message went to alice's link
            bob.expect("303")
            mark = server.log_length()
            os.kill(broker_pid(server), signal.SIGKILL)
            broker_pid(server, after=mark)
        finally:
            os.kill(stopped, signal.SIGCONT)
        got = [alice.expect("PRIVMSG", 10).params[1].split()[0] for _ in range(MESSAGES)]
        assert got == [str(index) for index in range(MESSAGES)]
        assert bob.expect("PRIVMSG", 10).params[1] == "from alice"
    finally:
        alice.close()
        bob.close()
