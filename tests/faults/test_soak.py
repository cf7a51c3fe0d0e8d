"""Fault injection under load: workers and the broker die while people talk.

One single-threaded driver plays every client.  Stayers (never killed)
and churners (come, go, and are the victims of SIGKILL) join and leave
rooms, talk and change nicks, while the driver kills random churners'
workers and, twice, the broker.  Every room message carries a unique id
and its sender's stable key, so delivery is checked whatever the nicks.

Who must receive a message: every member whose own JOIN echo arrived
before the message was sent (the broker had processed the JOIN first),
minus members with a PART under way; a member parts only once it has
received everything it must.  Excused, but counted: messages of a sender
whose worker was then killed, messages not yet delivered when the broker
was killed ("in flight"), and messages sent while it was down ("gap").
Only the excused may be missing; nothing may arrive twice or out of
order from one sender.

Afterwards: exactly one broker and one worker per connected client remain,
the stayers' workers are the ones they started with, the supervisor's fd
count and memory are back near their baseline, the broker's fds too, and
the log holds no traceback.  The loss measured across broker kills is
printed (run with -s to see it).
"""

from __future__ import annotations

import os
import random
import selectors
import signal
import time
from dataclasses import dataclass, field

import psutil
import pytest

from forkchat import protocol
from tests.support.ircclient import IrcTestClient
from tests.support.server import ServerProcess, broker_pid, spawner_pid, worker_pid

DURATION_S = 30.0
BROKER_KILLS_AT = (9.0, 20.0)     # seconds into the run
SETTLE_S = 20.0
STAYERS = 8
MAX_CHURNERS = 6
ROOMS = ("#soak0", "#soak1", "#soak2")
ACTIONS_PER_S = 60
SEED = int(os.environ.get("FORKCHAT_SOAK_SEED", "7"))
FD_TOLERANCE = 3
MEMORY_TOLERANCE = 8 << 20

SOAK_CONFIG = """
[limits]
flood_burst = 1000
flood_rate = 1000.0
max_clients_per_ip = 100
connect_burst = 1000
connect_rate = 1000.0
"""


@dataclass
class Message:
    mid: int
    room: str
    sender: str
    required: set[str]
    sent_at: float
    excuse: str = ""            # why it may be missing: "", "killed sender", "inflight N", "gap N"


@dataclass(eq=False)
class Member:
    key: str                   # stable: s3, c17 (the nick it registered with)
    client: IrcTestClient
    stayer: bool
    nick: str = ""
    pid: int = 0
    rooms: set[str] = field(default_factory=set)        # JOIN echo received
    parting: set[str] = field(default_factory=set)      # PART sent, echo not yet
    got: dict[int, int] = field(default_factory=dict)   # message id -> times received
    last: dict[tuple[str, str], int] = field(default_factory=dict)   # (sender, room) -> id
    errors: list[str] = field(default_factory=list)
    gone: bool = False         # quit or killed on purpose
    killed: bool = False
    round_trips: int = 0       # 221 replies seen (broker round trips)


class Soak:
    def __init__(self, server: ServerProcess, rng: random.Random) -> None:
        self.server = server
        self.rng = rng
        self.members: dict[str, Member] = {}
        self.messages: dict[int, Message] = {}
        self.selector = selectors.DefaultSelector()
        self.next_id = 0
        self.churn_serial = 0
        self.nick_serial = 0
        self.gap: str = ""          # "gap N" while broker N+1 is not back yet
        self.gap_mark = 0
        self.broker = broker_pid(server)
        self.kills: list[dict] = []
        self.worker_kills = 0
        self.unexpected: list[str] = []
        self.lost: list[str] = []           # excused deliveries that never came

    # -- clients ---------------------------------------------------------------

    def add(self, key: str, stayer: bool) -> Member:
        client = IrcTestClient(self.server.port, timeout=10)
        client.register(key)
        member = Member(key, client, stayer, nick=key, pid=worker_pid(self.server, key))
        self.members[key] = member
        self.selector.register(client.sock, selectors.EVENT_READ, member)
        for line in client.buffer.split(b"\n")[:-1]:
            self.on_line(member, line.rstrip(b"\r"))
        client.buffer = client.buffer.rsplit(b"\n", 1)[-1] if b"\n" in client.buffer \
            else client.buffer
        return member

    def alive(self) -> list[Member]:
        return [m for m in self.members.values() if not m.gone]

    def send(self, member: Member, line: str) -> None:
        member.client.send(line)

    def retire(self, member: Member, killed: bool) -> None:
        member.gone = True
        member.killed = killed
        self.selector.unregister(member.client.sock)
        member.client.close()

    # -- reading -----------------------------------------------------------------

    def pump(self, timeout: float) -> None:
        for key, _ in self.selector.select(timeout):
            member: Member = key.data
            try:
                data = member.client.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                self.unexpected.append(f"{member.key} ({member.nick}) was disconnected")
                self.retire(member, killed=False)
                continue
            member.client.buffer += data
            *lines, member.client.buffer = member.client.buffer.split(b"\n")
            for line in lines:
                self.on_line(member, line.rstrip(b"\r"))

    def on_line(self, member: Member, line: bytes) -> None:
        assert len(line) + 2 <= protocol.MAX_LINE_BYTES, line[:80]
        msg = protocol.parse_line(line)
        nick = msg.prefix.split("!")[0]
        own = protocol.casefold(nick) == protocol.casefold(member.nick)
        command = msg.command
        if command == "PRIVMSG" and msg.params[-1].startswith("m"):
            self.on_talk(member, msg)
        elif command == "PING":
            self.send(member, f"PONG :{msg.params[-1]}")
        elif command == "JOIN" and own:
            member.rooms.add(protocol.casefold(msg.params[0]))
        elif command == "PART" and own:
            room = protocol.casefold(msg.params[0])
            member.rooms.discard(room)
            member.parting.discard(room)
        elif command == "NICK" and own:
            member.nick = msg.params[0]
        elif command == "221":
            member.round_trips += 1
        elif command in ("ERROR", "KILL", "KICK", "401", "403", "404", "442", "461"):
            member.errors.append(line.decode("utf-8", "replace"))

    def on_talk(self, member: Member, msg: protocol.Message) -> None:
        mid_text, sender = msg.params[-1].split()[:2]
        mid = int(mid_text[1:])
        member.got[mid] = member.got.get(mid, 0) + 1
        order = (sender, protocol.casefold(msg.params[0]))
        if member.last.get(order, -1) >= mid:
            self.unexpected.append(f"{member.key} got m{mid} from {sender} after "
                                   f"m{member.last[order]}")
        member.last[order] = mid

    # -- what the clients do ----------------------------------------------------------

    def act(self) -> None:
        action = self.rng.choices(
            [self.talk, self.join, self.part, self.change_nick, self.arrive, self.leave,
             self.kill_worker], weights=[60, 8, 6, 5, 3, 3, 2])[0]
        action()

    def talk(self) -> None:
        speakers = [m for m in self.alive() if m.rooms - m.parting]
        if not speakers:
            return
        sender = self.rng.choice(speakers)
        room = self.rng.choice(sorted(sender.rooms - sender.parting))
        required = {m.key for m in self.alive()
                    if m is not sender and room in m.rooms and room not in m.parting}
        mid = self.next_id
        self.next_id += 1
        self.messages[mid] = Message(mid, room, sender.key, required, time.monotonic(),
                                     excuse=self.gap)
        padding = "x" * self.rng.choice([0, 0, 10, 200])
        self.send(sender, f"PRIVMSG {room} :m{mid} {sender.key} {padding}")

    def join(self) -> None:
        member = self.rng.choice(self.alive())
        room = self.rng.choice(ROOMS)
        if room not in member.rooms:
            self.send(member, f"JOIN {room}")

    def part(self) -> None:
        member = self.rng.choice(self.alive())
        rooms = sorted(member.rooms - member.parting)
        if not rooms:
            return
        room = self.rng.choice(rooms)
        if self.owed(member, room):
            return          # parts once it has what it must receive there
        member.parting.add(room)
        self.send(member, f"PART {room}")

    def owed(self, member: Member, room: str | None = None) -> list[Message]:
        """Messages `member` must receive and has not yet."""
        return [msg for msg in self.messages.values()
                if member.key in msg.required and (room is None or msg.room == room)
                and not msg.excuse and msg.mid not in member.got]

    def change_nick(self) -> None:
        member = self.rng.choice(self.alive())
        self.nick_serial += 1
        self.send(member, f"NICK x{self.nick_serial}_{member.key}")

    def arrive(self) -> None:
        if sum(1 for m in self.alive() if not m.stayer) >= MAX_CHURNERS:
            return
        self.churn_serial += 1
        member = self.add(f"c{self.churn_serial}", stayer=False)
        self.send(member, f"JOIN {self.rng.choice(ROOMS)}")

    def leave(self) -> None:
        churners = [m for m in self.alive() if not m.stayer]
        if churners:
            member = self.rng.choice(churners)
            self.send(member, "QUIT :soaked")
            self.retire(member, killed=False)

    def kill_worker(self) -> None:
        churners = [m for m in self.alive() if not m.stayer]
        if not churners:
            return
        member = self.rng.choice(churners)
        os.kill(member.pid, signal.SIGKILL)
        self.worker_kills += 1
        for msg in self.messages.values():
            if msg.sender == member.key and not msg.excuse and self.undelivered(msg):
                msg.excuse = "killed sender"
        self.retire(member, killed=True)

    def undelivered(self, msg: Message) -> list[str]:
        return [key for key in msg.required
                if not self.members[key].gone and msg.mid not in self.members[key].got]

    # -- the broker ----------------------------------------------------------------------

    def kill_broker(self) -> None:
        number = len(self.kills) + 1
        inflight = [msg for msg in self.messages.values()
                    if not msg.excuse and self.undelivered(msg)]
        for msg in inflight:
            msg.excuse = f"inflight {number}"
        self.gap_mark = self.server.log_length()
        os.kill(self.broker, signal.SIGKILL)
        self.gap = f"gap {number}"
        self.kills.append({"old": self.broker, "at": time.monotonic(), "inflight": len(inflight)})

    def check_recovery(self) -> None:
        """The gap ends when the new broker has every worker back (its log says so)."""
        if not self.gap:
            return
        lines = self.server.log_text().splitlines()[self.gap_mark:]
        if any("recovery done" in line or "did not re-register" in line for line in lines):
            self.broker = broker_pid(self.server, after=self.gap_mark)
            self.kills[-1]["gap_s"] = round(time.monotonic() - self.kills[-1]["at"], 3)
            self.kills[-1]["new"] = self.broker
            self.gap = ""

    # -- the end -----------------------------------------------------------------------------

    def settle(self, timeout: float) -> None:
        """Read until nobody is owed anything, then one broker round trip for everyone."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(self.owed(m) for m in self.alive()):
            self.pump(0.05)
        for member in self.alive():
            wanted = member.round_trips + 1
            self.send(member, f"MODE {member.nick}")
            while member.round_trips < wanted and time.monotonic() < deadline + 10:
                self.pump(0.05)

    def loss_report(self) -> dict[str, dict[str, int]]:
        """Per excuse: deliveries due (to members still here) and deliveries lost."""
        report: dict[str, dict[str, int]] = {}
        for msg in self.messages.values():
            if not msg.excuse:
                continue
            entry = report.setdefault(msg.excuse, {"messages": 0, "due": 0, "lost": 0})
            entry["messages"] += 1
            for key in msg.required:
                member = self.members[key]
                if not member.gone:
                    entry["due"] += 1
                    entry["lost"] += msg.mid not in member.got
                    if msg.mid not in member.got:
                        kill = self.kills[int(msg.excuse.split()[-1]) - 1]["at"] \
                            if msg.excuse.startswith(("gap", "inflight")) else msg.sent_at
                        self.lost.append(f"m{msg.mid} ({msg.excuse}, sent "
                                         f"{(msg.sent_at - kill) * 1000:+.1f} ms after the "
                                         f"kill) {msg.sender}->{key} in {msg.room}")
        return report


def process_figures(pid: int) -> tuple[int, int]:
    proc = psutil.Process(pid)
    return proc.num_fds(), proc.memory_full_info().uss


@pytest.mark.timeout(180)
def test_soak_with_worker_and_broker_kills(make_server):
    server = make_server(config_text=SOAK_CONFIG)
    soak = Soak(server, random.Random(SEED))
    for index in range(STAYERS):
        member = soak.add(f"s{index}", stayer=True)
        soak.send(member, f"JOIN {ROOMS[index % len(ROOMS)]}")
    while any(not m.rooms for m in soak.alive()):
        soak.pump(0.1)
    stayer_pids = {m.key: m.pid for m in soak.alive()}
    spawner = spawner_pid(server)
    assert server.settle_children(set(stayer_pids.values()) | {soak.broker, spawner}, 10) == []
    supervisor_base = process_figures(server.pid)
    broker_fds_base = process_figures(soak.broker)[0]
    worker_fds_base = {key: process_figures(pid)[0] for key, pid in stayer_pids.items()}

    start = time.monotonic()
    kills_due = list(BROKER_KILLS_AT)
    interval = 1.0 / ACTIONS_PER_S
    next_action = start
    while time.monotonic() - start < DURATION_S:
        now = time.monotonic()
        if kills_due and now - start >= kills_due[0] and not soak.gap:
            kills_due.pop(0)
            soak.kill_broker()
        if now >= next_action:
            soak.act()
            next_action = now + interval
        soak.pump(max(0.0, min(interval, next_action - time.monotonic())))
        soak.check_recovery()
    while soak.gap:
        soak.pump(0.1)
        soak.check_recovery()
    soak.settle(SETTLE_S)

    # -- delivery -------------------------------------------------------------------------
    missing = {m.key: [msg.mid for msg in soak.owed(m)] for m in soak.alive()}
    missing = {key: mids for key, mids in missing.items() if mids}
    twice = {m.key: [mid for mid, count in m.got.items() if count > 1] for m in soak.alive()}
    twice = {key: mids for key, mids in twice.items() if mids}
    errors = {m.key: m.errors for m in soak.alive() if m.errors}
    losses = soak.loss_report()
    print(f"\nsoak seed {SEED}: {len(soak.messages)} messages, {soak.worker_kills} workers "
          f"killed, {soak.churn_serial} churners, broker kills {soak.kills}")
    print(f"excused deliveries (due to members still connected / lost): {losses}")
    if soak.lost:
        print("lost:", soak.lost[:20])
    assert not soak.unexpected, soak.unexpected
    assert not missing, f"messages never delivered: {missing}"
    assert not twice, f"messages delivered twice: {twice}"
    assert not errors, errors
    assert len(soak.kills) == len(BROKER_KILLS_AT) and all("new" in k for k in soak.kills)

    # -- processes, fds, memory --------------------------------------------------------------
    everyone = {m.pid for m in soak.alive()} | {soak.broker, spawner}
    assert server.settle_children(everyone, 15) == [], "a killed or departed client's worker"
    assert sorted(p.pid for p in server.descendants()) == sorted(everyone)
    for member in [m for m in soak.alive() if not m.stayer]:
        soak.send(member, "QUIT :done")
        soak.retire(member, killed=False)
    stayers = soak.alive()
    assert sorted(m.key for m in stayers) == sorted(stayer_pids)
    for member in stayers:
        assert psutil.pid_exists(member.pid), f"{member.key}'s worker was replaced"
    keep = {m.pid for m in stayers} | {soak.broker, spawner}
    leftovers = server.settle_children(keep, 15)
    assert not leftovers, f"processes left behind: {leftovers}"
    assert sorted(p.pid for p in server.descendants()) == sorted(keep)
    fds, uss = process_figures(server.pid)
    broker_fds = process_figures(soak.broker)[0]
    print(f"supervisor fds {supervisor_base[0]} -> {fds}, USS {supervisor_base[1] >> 10} -> "
          f"{uss >> 10} KiB; broker fds {broker_fds_base} -> {broker_fds}")
    assert fds <= supervisor_base[0] + FD_TOLERANCE
    assert uss <= supervisor_base[1] + MEMORY_TOLERANCE
    assert broker_fds <= broker_fds_base + FD_TOLERANCE
    worker_fds = {m.key: process_figures(m.pid)[0] for m in stayers}
    assert worker_fds == worker_fds_base, "a worker's fds changed over two broker restarts"
    for member in stayers:
        member.client.close()

    log = server.log_text()
    assert "Traceback" not in log, log[log.index("Traceback") - 2000:][:6000]
    assert log.count("broker was killed by SIGKILL") == len(BROKER_KILLS_AT)
    assert log.count("broker started") == len(BROKER_KILLS_AT) + 1
    bad = [line for line in log.splitlines() if "exited with status" in line]
    assert not bad, bad


def test_worker_dying_during_recovery_does_not_hold_talk(make_server):
    """A worker that dies while the new broker awaits it can never re-register.

    The new broker holds all talk until every worker alive at the old
    broker's death is back.  When one of them dies meanwhile (here: stopped
    so that it cannot re-register, then killed once the new broker waits;
    in the soak, killed a moment before the broker and reaped just after
    the new broker started), the supervisor knows at once, but nobody tells
    the broker: every client's talk stalls for the whole recovery timeout
    (broker.RECOVERY_WAIT_S) and the log says workers "did not re-register".
    """
    server = make_server(config_text=SOAK_CONFIG)
    alice, bob, carol = (IrcTestClient(server.port) for _ in range(3))
    for client, nick in ((alice, "alice"), (bob, "bob"), (carol, "carol")):
        client.register(nick)
        client.join("#room")
    alice.sync()
    bob.sync()
    old = broker_pid(server)
    carol_pid = worker_pid(server, "carol")
    mark = server.log_length()
    os.kill(carol_pid, signal.SIGSTOP)
    os.kill(old, signal.SIGKILL)
    server.wait_for_text("awaiting 3 workers", start=mark)
    os.kill(carol_pid, signal.SIGKILL)
    server.wait_for_text("worker for conn 3 was killed", start=mark)
    alice.send("PRIVMSG #room :after both deaths")
    assert bob.expect("PRIVMSG", 10).params == ["#room", "after both deaths"]
    lines = server.log_text().splitlines()[mark:]
    assert not [line for line in lines if "did not re-register" in line], \
        "the new broker waited for a worker that was already dead:\n" + "\n".join(lines)
    for client in (alice, bob, carol):
        client.close()
