"""The broker paces commands that scan the whole server (broker.SCAN_SHARE).

A NAMES of every room or a WHO of a mask costs the broker time in
proportion to the whole server, and every client waits while it runs:
scan time is spent from a credit that refills at a third of a second a
second, and a scan asked for while it is spent is answered 263.
The broker's scan clock is replaced by one that moves only when read.
"""

from __future__ import annotations

import json
import socket

import pytest

from forkchat import broker, config, ipc, protocol, state_query


class SteppingClock:
    """Each reading is `step` seconds after the one before."""

    def __init__(self, step: float) -> None:
        self.t = 100.0
        self.step = step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


@pytest.fixture
def paced(tmp_path):
    """A Broker with one registered client, alice (cid 1), in #room."""
    socks = [*socket.socketpair(), *socket.socketpair(), *socket.socketpair()]
    cfg = config.Config(server=config.Server(state_dir=str(tmp_path)))
    made = broker.Broker(socks[0], socks[2], cfg, "today")
    made.scan_clock = SteppingClock(0.1)
    made.scan_cpu_clock = SteppingClock(0.1)     # each scan takes 0.1 s of CPU
    made.scan_credit_at = made.scan_clock.t
    mine, theirs = socks[4], socks[5]
    mine.setblocking(False)
    theirs.setblocking(False)
    link = broker.Link(mine, 1 << 20)
    made._dispatch(link, ipc.Kind.HELLO, b'{"cid": 1, "host": "h", "proto": "irc"}')
    made._dispatch(link, ipc.Kind.REQUEST, b"NICK alice")
    made._dispatch(link, ipc.Kind.REGISTER, json.dumps({"user": "a", "realname": "A"}).encode())
    made._dispatch(link, ipc.Kind.REQUEST, b"JOIN #room")
    answers(made, link, theirs, b"PING")
    yield lambda line: answers(made, link, theirs, line), made
    made.selector.close()
    for sock in socks:
        sock.close()


def answers(made: broker.Broker, link: broker.Link, peer: socket.socket,
            line: bytes) -> list[str]:
    """The numerics alice is sent for one command: 'code target-param'."""
    made._dispatch(link, ipc.Kind.REQUEST, line)
    made.last_flush = 0.0
    made._maybe_flush()
    lines = []
    while True:
        try:
            data = peer.recv(1 << 20)
        except BlockingIOError:
            break
        lines += [payload.decode().split() for kind, payload in ipc.FrameReader().feed(data)
                  if kind in (ipc.Kind.DELIVER, ipc.Kind.REPLY)]
    return [f"{words[1]} {words[3]}" for words in lines if len(words) > 3]


def test_a_scan_while_the_credit_is_spent_is_answered_263(paced):
    """Each reading of the clock is 0.1 s after the one before, so each scan
    takes 0.1 s and a third of the time between scans comes back as credit:
    the 0.05 s burst, less 0.1, is -0.05 after the NAMES; -0.017 at the
    WHO (refused); +0.017 at the LIST, which runs (-0.083); -0.05 at the
    NAMES after it (refused); and a second later the credit is back."""
    ask, made = paced
    assert ask(b"NAMES")[-1] == "366 *"
    assert ask(b"WHO *") == ["263 WHO", "315 *"]
    assert ask(b"LIST")[-1] == "323 :End"
    assert ask(b"NAMES #room,#room") == ["263 NAMES", "366 #room"]     # a list may name a big room often
    made.scan_clock.t += 1.0
    assert ask(b"WHOWAS a*")[-1] == "369 a*"
    assert ask(b"WHOWAS *") == ["263 WHOWAS", "369 *"]
    made.scan_clock.t += 1.0
    assert ask(b"WHO *")[-1] == "315 *"


def test_a_refused_scan_still_ends_its_reply(paced):
    """A client waits for the end numeric of what it asked: after the 263
    comes the 323, 315, 366 or 369 it would have ended with (irssi showed
    nothing of a bare 263 and kept its WHO query pending)."""
    ask, made = paced
    made.scan_clock.step = 0.0
    made.scan_credit = -1.0
    assert ask(b"LIST") == ["263 LIST", "323 :End"]
    assert ask(b"WHO a*") == ["263 WHO", "315 a*"]
    assert ask(b"NAMES") == ["263 NAMES", "366 *"]
    assert ask(b"NAMES #a,#B,#b") == ["263 NAMES", "366 #a", "366 #B"]
    assert ask(b"WHOWAS x*") == ["263 WHOWAS", "369 x*"]


def _fill(made: broker.Broker, name: str, members: int) -> None:
    """Make room `name` hold `members` registered clients (alice not among them)."""
    made.state.connect(1000, "h")          # an op, so that the room exists
    made.state.request(1000, protocol.parse_text("NICK owner"), made.outbox)
    made.state.register(1000, "o", "O", made.outbox)
    made.state.request(1000, protocol.parse_text(f"JOIN {name}"), made.outbox)
    room = made.state.find_room(name)
    for cid in range(1001, 1000 + members):
        made.state.connect(cid, "h")
        made.state.request(cid, protocol.parse_text(f"NICK n{cid}"), made.outbox)
        made.state.register(cid, "u", "U", made.outbox)
        room.members[cid] = ""
        made.state.clients[cid].joined[protocol.casefold(name)] = room


def test_a_who_of_a_room_of_more_than_500_is_paced(paced):
    """A 352 costs the broker about 8 us: a WHO of a room of 5000 members
    (the default members_per_room) took it 40 ms, twice a paced WHO of a
    mask, and any member could ask twice a second, unpaced."""
    ask, made = paced
    _fill(made, "#big", 501)
    made.scan_clock.step = 0.0
    made.scan_credit = -1.0
    assert ask(b"WHO #big") == ["263 WHO", "315 #big"]
    assert ask(b"WHO #BIG o") == ["263 WHO", "315 #BIG"]
    made.state.disconnect(1001, "bye", made.outbox)
    assert len(made.state.find_room("#big").members) == state_query.WHO_ROOM_PACED == 500
    assert len([line for line in ask(b"WHO #big") if line.startswith("352")]) == 500
    assert ask(b"WHO #room") == ["352 #room", "315 #room"]


def test_quick_scans_run_back_to_back(paced):
    """Scans of a small server take far less than the burst: a client that
    sends several at once gets every answer."""
    ask, made = paced
    made.scan_clock.step = 0.001
    made.scan_cpu_clock.step = 0.001
    for line, end in [(b"NAMES", "366 *"), (b"WHO *", "315 *"), (b"LIST", "323 :End")] * 5:
        assert ask(line)[-1] == end


def test_an_operator_is_not_paced(paced):
    ask, made = paced
    made.state.set_oper(1, "admin", made.outbox)
    assert ask(b"NAMES")[-1] == "366 *"
    assert ask(b"NAMES")[-1] == "366 *"


def test_commands_that_name_what_they_look_at_are_not_paced(paced):
    ask, _made = paced
    assert ask(b"NAMES")[-1] == "366 *"
    assert ask(b"NAMES #room")[-1] == "366 #room"
    assert ask(b"WHO #room")[-1] == "315 #room"
    assert ask(b"WHO alice")[-1] == "315 alice"
    assert ask(b"LIST #room")[-1] == "323 :End"
    assert ask(b"WHOWAS bob")[-1] == "369 bob"


def test_a_scan_is_charged_the_cpu_it_took_not_the_time_it_was_preempted(paced):
    """On a busy machine the broker may wait for a core in the middle of a
    scan: charged by the wall clock, a cheap scan spent the credit, and a
    small server answered 263."""
    ask, made = paced
    made.scan_clock.step = 0.5          # much time passes during each scan ...
    made.scan_cpu_clock.step = 0.0001   # ... little of it running
    for line, end in [(b"NAMES", "366 *"), (b"WHO *", "315 *"), (b"LIST", "323 :End")] * 5:
        assert ask(line)[-1] == end
