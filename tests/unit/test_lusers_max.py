"""LUSERS's highest user count (265, 266 "max") outlives the broker.

The broker counts the users and tells the supervisor the highest count in
its heartbeats, and in the turn the count rises; the supervisor keeps the
highest it was told, even a dead broker's last word, and starts the next
broker with it (forkchat(7), What a broker death loses).
"""

from __future__ import annotations

import os
import selectors
import socket

from forkchat import broker, config, ipc, protocol, supervisor


def _boss() -> tuple[supervisor.Supervisor, list[tuple]]:
    """A supervisor whose broker forks are recorded, not made."""
    targets = supervisor.Targets(broker=lambda *args: None, worker=lambda *args: None)
    boss = supervisor.Supervisor(config.Config(), targets)
    started: list[tuple] = []

    def start(kind, target, args, peer="", cid=0):
        # (the broker's end of the control socket outlives the supervisor's close)
        started.append((socket.socket(fileno=os.dup(args[1].fileno())), *args[1:]))
        child = supervisor.Child(kind, 4000 + len(started), None, -1)
        boss.children[child.pid] = child
        return child
    boss._start = start
    return boss, started


def _counts(most: int, clients: int = 1) -> bytes:
    return ipc.encode_json(ipc.Kind.CONTROL, {"op": "counts", "clients": clients,
                                              "rooms": 0, "most": most})


def test_the_next_broker_is_started_with_the_highest_count_told():
    boss, started = _boss()
    try:
        assert boss.spawn_broker()
        assert started[-1][4] == 0           # the first: nobody yet
        theirs = started[-1][0]
        theirs.sendall(_counts(7, clients=7) + _counts(3, clients=3))
        boss.on_control(selectors.EVENT_READ)
        assert boss.counts["clients"] == 3 and boss.most_users == 7
        theirs.sendall(_counts(9))               # the broker's last word ...
        theirs.close()                           # ... and its death, in one turn
        assert boss.spawn_broker()
        assert started[-1][4] == 9
        assert started[-1][5:] == ((),)      # the workers expected (none) after it, the last
    finally:
        for args in started:
            args[0].close()
        if boss.broker_control is not None:
            boss.broker_control.close()
        boss.broker_listener.close()
        boss.selector.close()


def _client(made: broker.Broker, cid: int, nick: str) -> None:
    made.state.connect(cid, "h")
    made.state.request(cid, protocol.parse_text(f"NICK {nick}"), made.outbox)
    made.state.register(cid, "u", "U", made.outbox)


def _told(sock: socket.socket) -> list[dict]:
    sock.setblocking(False)
    data = b""
    while True:
        try:
            data += sock.recv(65536)
        except BlockingIOError:
            return [ipc.decode_json(payload) for _kind, payload in ipc.FrameReader().feed(data)]


def test_a_broker_starts_from_the_count_it_is_given_and_tells_each_rise(tmp_path):
    socks = [*socket.socketpair(), *socket.socketpair()]
    cfg = config.Config(server=config.Server(state_dir=str(tmp_path)))
    made = broker.Broker(socks[0], socks[2], cfg, "today", most_users=3)
    try:
        _client(made, 1, "alice")
        assert made.state.max_registered == 3
        sent: list[tuple[int, bytes]] = []
        made.outbox.send = lambda cid, line: sent.append((cid, line))
        made.state.request(1, protocol.parse_text("LUSERS"), made.outbox)
        lines = [protocol.parse_line(line) for _cid, line in sent]
        assert [m.params[1:3] for m in lines if m.command in ("265", "266")] == [["1", "3"]] * 2
        made._heartbeat()
        assert _told(socks[3])[-1] == {"op": "counts", "clients": 1, "rooms": 0, "most": 3}
        for cid in (2, 3, 4):
            _client(made, cid, f"n{cid}")
        assert made.state.max_registered > made.most_told     # the loop tells it this turn
        made._heartbeat()
        assert _told(socks[3])[-1]["most"] == 4 and made.most_told == 4
    finally:
        made.selector.close()
        for sock in socks:
            sock.close()
