"""Live fuzzing: hostile clients hammer a running server; the polite ones never notice.

Eight fuzzing clients (and two more on the tutorial listener) connect again and again and send random bytes and
random valid-looking IRC lines (every real command, random parameters, long
ones, Unicode, NUL, bare CR, invalid UTF-8, 100 KB lines, spoofed prefixes),
then leave in a random way (QUIT, close, half-close, reset).  Meanwhile
three well-behaved clients talk in a room in lock-step rounds and check
that they receive each other's messages, every one, in order, and that
every line reaching them is a valid IRC line.

Bounded: FUZZ_SECONDS of fuzzing (a cap on connections and lines per
fuzzer too).  Flood limits stay at their defaults, so fuzzers may well be
dropped with "Excess Flood": that is a clean drop, not a failure.  The
polite clients send one line per round and wait for the round to finish,
so they stay inside the default token bucket without any pacing.

Afterwards: the supervisor and the original broker are alive (no broker
restart in the log), the polite clients' workers are the ones they started
with, no worker exited abnormally, the log holds no traceback, every
fuzzer's worker is gone (exactly one broker and three workers remain), and
a newcomer is served.

FORKCHAT_FUZZ_SEED=<n> replays another fuzz sequence (what each fuzzer
sends is a function of the seed; the interleaving is not).
"""

from __future__ import annotations

import os
import random
import re
import select
import socket
import struct
import threading
import time

import psutil
import pytest

from forkchat import commands, protocol, state
from tests.support.ircclient import IrcTestClient
from tests.support.server import broker_pid, spawner_pid, worker_pid

FUZZERS = 8
TUTORIAL_FUZZERS = 2
LOBBY = "#lobby"
FUZZ_SECONDS = 20.0
CONNECTIONS_PER_FUZZER = 40
ITEMS_PER_CONNECTION = 60
PACE_S = 0.05            # a fuzzer reads answers this long after each item
GOOD = ("good0", "good1", "good2")
ROOM = "#fuzzsafe"
READ_TIMEOUT = 15.0
SEED = int(os.environ.get("FORKCHAT_FUZZ_SEED", "6"))

# Flood limits a little above the defaults: fuzzers get deep enough into a
# session to reach the handlers, and big junk still overflows the recvq.
FUZZ_CONFIG = """
[limits]
flood_burst = 40
flood_rate = 20.0

[[operators]]
name = "admin"
password = "not-guessable-by-a-fuzzer-7c1f"
"""

REAL_COMMANDS = sorted(set(state.HANDLERS) | set(commands.COMMANDS))
EXTRA_COMMANDS = ["privmsg", "Join", "BOGUS", "CRASH", "001", "ERROR", "SERVICE", "SQUIT",
                  "CONNECT", "DIE", "REHASH", "ENCAP", "", "\u00c9T\u00c9"]
PARAM_POOL = [ROOM, "#fuzzsafe,#other", "#other", "&amp", "#", "0", "*", "*!*@*", "good0",
              "good1,good2", "good0!*@*", "+o", "-o", "+b", "+ov-b", "+imnpst", "+kl", "+l",
              "sekrit", "-1", "99999999999999999999", "LS", "302", "REQ", "END", "LIST",
              "multi-prefix", "admin", ":", "::", "::x", "\u00e9\u00e8", "\U0001f600" * 30,
              "\u202e", "\u2028", "\t", "\xa0", "x" * 600, "a,b,c,d,e,f,g,h,i,j,k,l,m,n,o",
              "nick!user@host", "@time=now", "p"]

AIMED = ["JOIN #fuzzsafe", "JOIN #fuzzsafe", "PRIVMSG #fuzzsafe :{t}", "PRIVMSG #fuzzsafe :{t}",
         "NOTICE #fuzzsafe :{t}", "PRIVMSG good0,good1 :{t}", "NOTICE good2 :{t}",
         "PART #fuzzsafe :{t}", "NICK {p}", "TOPIC #fuzzsafe :{t}", "MODE #fuzzsafe +o {p}",
         "KICK #fuzzsafe good0 :{t}", "INVITE good1 #{p}", "AWAY :{t}", "QUIT :{t}",
         "PRIVMSG #fuzzsafe :\x01ACTION {t}\x01", "WHOIS good0", "JOIN #{p}", "JOIN 0",
         "MODE {p} +iw", "WHO #fuzzsafe", "NAMES #fuzzsafe", "LIST {p}", "OPER admin {p}"]


class Fuzzer(threading.Thread):
    """One hostile client: connect, spray, leave in some way, again, until the time is up."""

    def __init__(self, port: int, index: int, deadline: float) -> None:
        super().__init__(daemon=True, name=f"fuzzer-{index}")
        self.port = port
        self.index = index
        self.deadline = deadline
        self.rng = random.Random(SEED * 1000 + index)
        self.stats = {"connections": 0, "items": 0, "bytes": 0, "cut_off": 0,
                      "refused": 0, "received": 0}
        self.error: BaseException | None = None
        self.drops: dict[str, int] = {}      # why the server closed us, as its ERROR said

    def run(self) -> None:
        try:
            for conn in range(CONNECTIONS_PER_FUZZER):
                if time.monotonic() >= self.deadline:
                    break
                self._one_connection(conn)
        except BaseException as error:       # reported by the test, never swallowed
            self.error = error

    def _connect(self) -> socket.socket | None:
        """A new connection, counted; None (counted as refused) if there is none."""
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        except OSError:
            self.stats["refused"] += 1
            return None
        self.stats["connections"] += 1
        sock.settimeout(5)
        return sock

    def _one_connection(self, conn: int) -> None:
        rng = self.rng
        sock = self._connect()
        if sock is None:
            return
        try:
            if rng.random() < 0.7:
                self._send(sock, f"NICK fz{self.index}_{conn}\r\nUSER f 0 * :fuzz\r\n".encode())
            for _ in range(rng.randint(1, ITEMS_PER_CONNECTION)):
                if time.monotonic() >= self.deadline:
                    break
                self._send(sock, self._item())
                self.stats["items"] += 1
                self._drain(sock, PACE_S)
            self._leave(sock)
        except OSError:             # dropped, reset, or not read from for 5 s
            self.stats["cut_off"] += 1
        finally:
            sock.close()

    def _send(self, sock: socket.socket, data: bytes) -> None:
        sock.sendall(data)
        self.stats["bytes"] += len(data)

    def _drain(self, sock: socket.socket, period: float) -> None:
        """Read whatever comes for `period` seconds; EOF means the server dropped us.

        This is the fuzzer's rhythm (about 1/PACE_S items a second, near the
        flood rate): each connection lives long enough to see its answers,
        to sit in rooms while others talk, and sometimes to hit flood control.
        """
        end = time.monotonic() + period
        while True:
            left = end - time.monotonic()
            if not select.select([sock], [], [], max(0.0, left))[0]:
                if left <= 0:
                    return
                continue
            data = sock.recv(65536)
            if not data:
                raise ConnectionResetError("server closed")
            self.stats["received"] += len(data)
            for match in re.finditer(rb"ERROR :[^\r\n]*\(([^)\r\n]*)", data):
                reason = match.group(1).decode("utf-8", "replace").split(":")[0]
                self.drops[reason] = self.drops.get(reason, 0) + 1

    def _leave(self, sock: socket.socket) -> None:
        how = self.rng.randrange(4)
        if how == 0:
            self._send(sock, b"QUIT :fuzz over\r\n")
        elif how == 1:
            sock.shutdown(socket.SHUT_WR)            # half-open: the server must still end it
        elif how == 2:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    # -- what to send --------------------------------------------------------------

    def _item(self) -> bytes:
        roll = self.rng.random()
        if roll < 0.15:
            return self.rng.randbytes(self.rng.randint(1, 2000))
        if roll < 0.20:
            return self._huge_line()
        if roll < 0.25:
            return self._broken_line()
        if roll < 0.50:
            return self._aimed_line()
        return self._irc_line()

    def _aimed_line(self) -> bytes:
        """A well-formed line with a nasty argument, aimed at the polite clients' room."""
        template = self.rng.choice(AIMED)
        text = template.format(p=self._param().replace(" ", ""), t=self._param())
        return text.encode("utf-8", "surrogatepass") + b"\r\n"

    def _irc_line(self) -> bytes:
        rng = self.rng
        command = rng.choice(REAL_COMMANDS if rng.random() < 0.85 else EXTRA_COMMANDS)
        params = [self._param() for _ in range(rng.randint(0, 17))]
        head = ""
        if rng.random() < 0.1:
            head += "@" + self._param().replace(" ", "") + " "
        if rng.random() < 0.1:
            head += ":" + rng.choice(["good0!g@127.0.0.1", "srv", "x", ""]) + " "
        text = head + " ".join([command] + params)
        if rng.random() < 0.5:
            text += " :" + self._param()
        end = rng.choice(["\r\n", "\r\n", "\n", "\r\r\n", "\n\n"])
        return text.encode("utf-8", "surrogatepass") + end.encode()

    def _param(self) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.6:
            return rng.choice(PARAM_POOL)
        if roll < 0.8:
            return "".join(chr(rng.choice([rng.randint(33, 126), rng.randint(0xa0, 0x2fff),
                                            rng.randint(0x10000, 0x10ffff)]))
                           for _ in range(rng.randint(1, 20)))
        if roll < 0.9:
            return "x" * rng.randint(100, 1200)
        return rng.choice(["a\rb", "a\0b", "\0", "\r", "\ud800", "a\x01ACTION x\x01"])

    def _huge_line(self) -> bytes:
        size = self.rng.choice([513, 4096, 20_000, 100_000])
        return b"PRIVMSG " + ROOM.encode() + b" :" + b"y" * size + b"\r\n"

    def _broken_line(self) -> bytes:
        return self.rng.choice([
            b"PRIVMSG #fuzzsafe :bad \xff\xfe utf8\r\n",
            b"PRIVMSG #fuzzsafe :nul \x00 inside\r\n",
            b"PRIVMSG #fuzzsafe :bare\rcr inside\r\n",
            b"\r\n\r\n\r\n",
            b"   \r\n",
            b":only-a-prefix\r\n",
            b"\xc3\r\n",
            b"JOIN " + b"#" * 5000 + b"\r\n",
        ])


class TutorialFuzzer(Fuzzer):
    """A hostile client of the tutorial listener: a junk name, then junk chunks."""

    def _one_connection(self, conn: int) -> None:
        rng = self.rng
        sock = self._connect()
        if sock is None:
            return
        try:
            self._drain(sock, PACE_S)
            for _ in range(rng.randint(1, ITEMS_PER_CONNECTION)):
                if time.monotonic() >= self.deadline:
                    break
                self._send(sock, self._chunk())
                self.stats["items"] += 1
                self._drain(sock, PACE_S)
        except OSError:
            self.stats["cut_off"] += 1
        finally:
            sock.close()

    def _chunk(self) -> bytes:
        rng = self.rng
        roll = rng.random()
        if roll < 0.3:
            return rng.randbytes(rng.randint(1, 1500))
        if roll < 0.4:
            return b"z" * rng.choice([1024, 5000, 70_000])
        return f"fz: {self._param()} {self._param()}".encode("utf-8", "surrogatepass")


class Polite:
    """The well-behaved clients and what they must see."""

    def __init__(self, port: int) -> None:
        self.clients = []
        for nick in GOOD:
            client = IrcTestClient(port, timeout=READ_TIMEOUT)
            client.register(nick)
            self.clients.append(client)
        for client in self.clients:
            client.join(ROOM)
        self.clients[0].expect(lambda m: m.command == "JOIN" and m.prefix.startswith("good2!"))
        self.last_seen = {(me, sender): -1 for me in GOOD for sender in GOOD if me != sender}
        self.rounds = 0
        self.lines_seen = 0

    def one_round(self) -> None:
        """Each says its round number; each must then hear the other two say it, in order."""
        number = self.rounds
        for nick, client in zip(GOOD, self.clients):
            client.send(f"PRIVMSG {ROOM} :{nick} round {number}")
        for nick, client in zip(GOOD, self.clients):
            waiting = {sender for sender in GOOD if sender != nick}
            while waiting:
                msg = self._next(client)
                sender = msg.prefix.split("!")[0]
                if msg.command != "PRIVMSG" or sender not in GOOD or msg.params[0] != ROOM:
                    continue
                seen = int(msg.params[1].rsplit(" ", 1)[1])
                assert seen == self.last_seen[(nick, sender)] + 1, \
                    f"{nick} got {sender}'s round {seen} after {self.last_seen[(nick, sender)]}"
                self.last_seen[(nick, sender)] = seen
                waiting.discard(sender)
        self.rounds += 1

    def _next(self, client: IrcTestClient) -> protocol.Message:
        line = client.read_line(READ_TIMEOUT)
        assert line is not None, f"{client.nick} was disconnected"
        assert len(line) + 2 <= protocol.MAX_LINE_BYTES, line[:80]
        assert b"\0" not in line and b"\r" not in line, line[:80]
        self.lines_seen += 1
        msg = protocol.parse_line(line)
        if msg.command == "PING":
            client.send(f"PONG :{msg.params[-1]}")
        return msg

    def close(self) -> None:
        for client in self.clients:
            client.close()


@pytest.mark.timeout(180)
def test_fuzzers_hurt_nobody_but_themselves(make_server):
    server = make_server(config_text=FUZZ_CONFIG, extra_args=["--tutorial-listen", "127.0.0.1:0"])
    broker = broker_pid(server)
    polite = Polite(server.port)
    polite.clients[0].join(LOBBY)     # where tutorial chunks are relayed
    good_pids = {nick: worker_pid(server, nick) for nick in GOOD}
    deadline = time.monotonic() + FUZZ_SECONDS
    fuzzers = [Fuzzer(server.port, index, deadline) for index in range(FUZZERS)]
    fuzzers += [TutorialFuzzer(server.port_of("tutorial"), FUZZERS + index, deadline)
                for index in range(TUTORIAL_FUZZERS)]
    for fuzzer in fuzzers:
        fuzzer.start()
    try:
        while any(fuzzer.is_alive() for fuzzer in fuzzers):
            polite.one_round()
        for _ in range(3):
            polite.one_round()          # and still served once the storm is over
    finally:
        for fuzzer in fuzzers:
            fuzzer.join(30)
    for fuzzer in fuzzers:
        assert fuzzer.error is None, f"{fuzzer.name}: {fuzzer.error!r}"
    totals = {key: sum(f.stats[key] for f in fuzzers) for key in fuzzers[0].stats}
    drops: dict[str, int] = {}
    for fuzzer in fuzzers:
        for reason, count in fuzzer.drops.items():
            drops[reason] = drops.get(reason, 0) + count
    print(f"\nfuzz seed {SEED}: {totals}; server's reasons: {drops}; "
          f"polite rounds {polite.rounds}, lines seen {polite.lines_seen}")
    assert totals["connections"] >= FUZZERS and totals["items"] >= 100, totals

    # every fuzzer's worker goes away; the polite ones and the broker stay
    keep = set(good_pids.values()) | {broker, spawner_pid(server)}
    leftovers = server.settle_children(keep, timeout=20)
    assert not leftovers, f"fuzzers' workers still running: {leftovers}"
    assert server.proc.poll() is None, "the supervisor died"
    for nick, pid in good_pids.items():
        assert psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE, \
            f"{nick}'s worker {pid} died"
    assert psutil.pid_exists(broker)
    assert sorted(p.pid for p in server.descendants()) == sorted(keep)

    newcomer = IrcTestClient(server.port)
    newcomer.register("newcomer")
    newcomer.join(ROOM)
    polite.clients[0].expect(lambda m: m.command == "JOIN" and m.prefix.startswith("newcomer!"))
    newcomer.send(f"PRIVMSG {ROOM} :hello after the storm")
    msg = polite.clients[1].expect(lambda m: m.command == "PRIVMSG"
                                   and m.prefix.startswith("newcomer!"))
    assert msg.params == [ROOM, "hello after the storm"]
    newcomer.close()
    polite.close()

    log = server.log_text()
    assert "Traceback" not in log, log[log.index("Traceback") - 2000:][:6000]
    assert log.count("broker started") == 1 and "restarting the broker" not in log
    bad = [line for line in log.splitlines()
           if "exited with status" in line or "killed by" in line]
    assert not bad, bad
