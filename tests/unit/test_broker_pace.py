"""The broker paces commands that scan the whole server (broker.SCAN_SHARE).

A NAMES of every room or a WHO of a mask costs the broker time in
proportion to the whole server, and every client waits while it runs:
scan time is spent from a credit that refills at a third of a second a
second, and a scan asked for while it is spent waits for its turn (263
only when SCAN_QUEUE scans wait already, or after SCAN_WAIT_S), unless
the broker's poll finds nothing else to do (a spare turn).
The broker's scan clock is replaced by one that moves only when read.
"""

from __future__ import annotations

import json
import selectors
import socket
import time

import pytest

from forkchat import broker, config, flood, ipc, protocol, state_query
from tests.support.brokerpeer import BrokerPeer


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
        lines += [line.decode().split() for kind, payload in ipc.FrameReader().feed(data)
                  if kind in (ipc.Kind.DELIVER, ipc.Kind.REPLY)
                  for line in payload.splitlines()]     # (a DELIVER may carry several)
    return [f"{words[1]} {words[3]}" for words in lines if len(words) > 3]


def test_a_scan_while_the_credit_is_spent_is_answered_263(paced, monkeypatch):
    """With no room to wait (SCAN_QUEUE 0), a scan that finds the credit
    spent is refused.  Each reading of the clock is 0.1 s after the one
    before, so each scan takes 0.1 s and a third of the time between scans
    comes back as credit: the 0.05 s burst, less 0.1, is -0.05 after the
    NAMES; -0.017 at the WHO (refused); +0.017 at the LIST, which runs
    (-0.083); -0.05 at the NAMES after it (refused); and a second later
    the credit is back."""
    ask, made = paced
    monkeypatch.setattr(broker, "SCAN_QUEUE", 0)
    assert ask(b"NAMES")[-1] == "366 *"
    assert ask(b"WHO *") == ["263 WHO", "315 *"]
    assert ask(b"LIST")[-1] == "323 :End"
    assert ask(b"NAMES #room,#room") == ["263 NAMES", "366 #room"]     # a list may name a big room often
    made.scan_clock.t += 1.0
    assert ask(b"WHOWAS a*")[-1] == "369 a*"
    assert ask(b"WHOWAS *") == ["263 WHOWAS", "369 *"]
    made.scan_clock.t += 1.0
    assert ask(b"WHO *")[-1] == "315 *"


def test_a_refused_scan_still_ends_its_reply(paced, monkeypatch):
    """A client waits for the end numeric of what it asked: after the 263
    comes the 323, 315, 366 or 369 it would have ended with (irssi showed
    nothing of a bare 263 and kept its WHO query pending).  (Refused at
    once: no room to wait, SCAN_QUEUE 0.)"""
    ask, made = paced
    monkeypatch.setattr(broker, "SCAN_QUEUE", 0)
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


def test_a_who_of_a_room_of_more_than_500_is_paced(paced, monkeypatch):
    """A 352 costs the broker about 8 us: a WHO of a room of 5000 members
    (the default members_per_room) took it 40 ms, twice a paced WHO of a
    mask, and any member could ask twice a second, unpaced.  (Refused at
    once: no room to wait, SCAN_QUEUE 0.)"""
    ask, made = paced
    monkeypatch.setattr(broker, "SCAN_QUEUE", 0)
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


# -- scans that wait for their turn ---------------------------------------------


class Peer(BrokerPeer):
    """One registered client's link to the broker, over a socket pair."""

    def take(self) -> list[str]:
        """What reached the worker since the last look: 'SYNC', or a line's
        second and fourth words ('352 #big', 'PRIVMSG :hi')."""
        self.made.last_flush = 0.0
        self.made._maybe_flush()
        got = []
        while True:
            try:
                data = self.theirs.recv(1 << 20)
            except BlockingIOError:
                break
            for kind, payload in ipc.FrameReader().feed(data):
                if kind == ipc.Kind.SYNC:
                    got.append(" ".join(["SYNC", payload.decode()][:1 + bool(payload)]))
                elif kind in (ipc.Kind.DELIVER, ipc.Kind.REPLY):
                    for line in payload.splitlines():   # (a DELIVER may carry several)
                        words = line.decode().split()
                        got.append(f"{words[1]} {words[3]}" if len(words) > 3
                                   else " ".join(words[1:]))
        return got


class StillClock:
    """A clock that moves only when the test moves it."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def crowd(tmp_path):
    """A Broker whose scans each take 0.1 s of CPU, on a clock the test
    moves; alice, bob, carol and dave in #room, and #big of 501 members."""
    socks = [*socket.socketpair(), *socket.socketpair()]
    cfg = config.Config(server=config.Server(state_dir=str(tmp_path)))
    made = broker.Broker(socks[0], socks[2], cfg, "today")
    made.scan_clock = StillClock()
    made.scan_cpu_clock = SteppingClock(0.1)       # each scan takes 0.1 s of CPU
    made.scan_credit_at = made.scan_clock.t
    peers = {nick: Peer(made, cid, nick)
             for cid, nick in enumerate(["alice", "bob", "carol", "dave"], start=1)}
    _fill(made, "#big", 501)
    for peer in peers.values():
        peer.take()
    yield made, peers
    made.selector.close()
    for sock in socks:
        sock.close()
    for peer in peers.values():
        peer.link.sock.close()
        peer.theirs.close()


def _spent(made: broker.Broker, credit: float = -0.1) -> None:
    made.scan_credit = credit
    made.scan_credit_at = made.scan_clock.t


def _idle(made: broker.Broker) -> None:
    """Nothing else due in the broker's loop for a minute (the heartbeat
    is due at start, and the JOINs left rooms to store)."""
    made.next_beat = time.monotonic() + 60
    made.store_dirty = False


def _later(made: broker.Broker, seconds: float) -> None:
    """Let `seconds` pass and the broker's loop serve the scans due."""
    made.scan_clock.t += seconds
    made._serve_waiting_scans()


def test_a_who_of_a_big_room_beyond_the_share_waits_and_is_answered(crowd):
    """irssi sends WHO #room on every JOIN, and after a second 263 never
    asks again: when hundreds rejoined a room of more than 500 at
    once, most were refused and kept no user@host for its members.  A scan
    beyond the share now waits until the credit is back, then is answered
    in full; the broker's loop sleeps until then."""
    made, peers = crowd
    alice = peers["alice"]
    _spent(made, -0.1)
    alice.send("WHO #big")
    assert alice.take() == []                      # not refused: waiting
    _idle(made)
    assert 0.3 < made._timeout() <= 0.31           # credit above 0 in 0.1 * 3 s
    _later(made, 0.2)
    assert alice.take() == []
    _later(made, 0.11)
    got = alice.take()
    assert got.count("352 #big") == 501 and got[-1] == "315 #big"
    assert made.waiting_scans == {}


def test_waiting_scans_are_answered_in_the_order_they_came(crowd):
    """One scan a turn while the credit lasts, oldest first; a scan that
    comes while others wait goes behind them even when the credit is back."""
    made, peers = crowd
    _spent(made, -0.01)
    for nick in ["carol", "alice", "bob"]:
        peers[nick].send("NAMES")
    made.scan_clock.t += 0.04                     # credit +0.003: carol's turn
    peers["dave"].send("LIST")                    # ... but dave comes after bob
    made._serve_waiting_scans()
    answered = {nick: peer.take() for nick, peer in peers.items()}
    assert answered["carol"][-1] == "366 *"
    assert answered["alice"] == answered["bob"] == answered["dave"] == []
    for nick, end in [("alice", "366 *"), ("bob", "366 *"), ("dave", "323 :End")]:
        _later(made, 0.31)
        answered = {nick: peer.take() for nick, peer in peers.items()}
        assert answered[nick][-1] == end
        assert sum(1 for got in answered.values() if got) == 1
    assert made.waiting_scans == {}


def test_commands_after_a_waiting_scan_are_answered_after_it(crowd):
    """The client's later commands wait behind its scan, so that answers
    come in the order asked: the worker's SYNC (sent before a JOIN, a PING
    or the next scan) and an ISON come back after the WHO's 315.  Talk
    with nothing held before it passes: bob reads alice at once."""
    made, peers = crowd
    alice, bob = peers["alice"], peers["bob"]
    _spent(made)
    alice.send("WHO #big")
    alice.send("PRIVMSG #room :hi")
    assert bob.take() == ["PRIVMSG :hi"]
    alice.frame(ipc.Kind.SYNC)
    alice.send("ISON bob")
    assert alice.take() == []
    _later(made, 0.31)
    got = alice.take()
    assert got[-3:] == ["315 #big", "SYNC", "303 :bob"]


def test_talk_after_a_held_command_waits_with_it(crowd):
    """What others see keeps the client's order: a message sent after a
    held TOPIC reaches the room after the new topic, not before."""
    made, peers = crowd
    alice, bob = peers["alice"], peers["bob"]
    _spent(made)
    alice.send("WHO #big")
    alice.send("TOPIC #room :new")
    alice.send("PRIVMSG #room :see the topic")
    assert bob.take() == []
    _later(made, 0.31)
    assert bob.take() == ["TOPIC :new", "PRIVMSG :see"]


def test_a_scan_is_refused_when_the_queue_is_full(crowd, monkeypatch):
    monkeypatch.setattr(broker, "SCAN_QUEUE", 1)
    made, peers = crowd
    _spent(made)
    peers["alice"].send("WHO #big")
    peers["bob"].send("NAMES")
    assert peers["bob"].take() == ["263 NAMES", "366 *"]
    assert peers["alice"].take() == []


def test_a_scan_that_waited_too_long_is_refused_then_what_followed_runs(crowd):
    """A client's commands that wait for their answers wait behind its
    scan: after SCAN_WAIT_S it is answered 263 (and its end numeric), and
    the broker's loop wakes for that even if the credit is still spent."""
    made, peers = crowd
    alice = peers["alice"]
    _spent(made, -100.0)
    alice.send("WHO #big")
    alice.send("ISON bob")
    _idle(made)
    assert broker.SCAN_WAIT_S - 1 < made._timeout() <= broker.SCAN_WAIT_S
    _later(made, broker.SCAN_WAIT_S - 0.1)
    assert alice.take() == []
    _later(made, 0.1)
    assert alice.take() == ["263 WHO", "315 #big", "303 :bob"]


def test_a_client_that_leaves_while_its_scan_waits(crowd):
    """Nobody would read the scan's answer: it is not run (nor charged),
    but what the client sent after it runs before it quits, as it would
    have without the wait."""
    made, peers = crowd
    alice, bob = peers["alice"], peers["bob"]
    _spent(made)
    cpu_before = made.scan_cpu_clock.t
    alice.send("WHO #big")
    alice.send("TOPIC #room :last words")
    alice.frame(ipc.Kind.BYE, b"gone")
    assert made.waiting_scans == {}
    assert bob.take() == ["TOPIC :last", "QUIT :gone"]
    assert made.scan_cpu_clock.t == cpu_before
    _later(made, 1.0)                       # nothing left to serve


def test_a_client_dropped_for_its_buffer_loses_its_waiting_scan(crowd):
    made, peers = crowd
    alice = peers["alice"]
    _spent(made)
    alice.send("WHO #big")
    made._overflow(alice.link)
    assert made.waiting_scans == {}


def test_an_operator_does_not_wait_behind_others(crowd):
    made, peers = crowd
    alice, bob = peers["alice"], peers["bob"]
    made.state.set_oper(1, "admin", made.outbox)
    alice.take()
    _spent(made)
    bob.send("NAMES")
    alice.send("WHO #big")
    assert alice.take()[-1] == "315 #big"
    assert bob.take() == []


def _loop_turn(made: broker.Broker) -> None:
    """One pass of the broker's loop as far as scans go: the poll, what it
    found, the scans due, and the flush of their answers.  (Nothing is
    registered with the broker's selector but what a test puts there.)"""
    made._serve_ready()
    made._maybe_flush()


def test_an_idle_broker_runs_waiting_scans_beyond_the_share(crowd):
    """When the broker's poll finds nothing else to do, the first waiting
    scan runs even though the credit is spent, one a turn, and is not
    charged to it: 550 clients rejoining a big room, each sending WHO of
    it, waited for a share of a broker that was mostly idle.  The poll
    does not sleep while a scan waits (the credit here never comes back:
    with a sleep the test would hang)."""
    made, peers = crowd
    _spent(made, -100.0)
    _idle(made)
    peers["alice"].send("WHO #big")
    peers["bob"].send("NAMES")
    peers["carol"].send("LIST")
    for nick, end in [("alice", "315 #big"), ("bob", "366 *"), ("carol", "323 :End")]:
        _loop_turn(made)
        answered = {nick: peer.take() for nick, peer in peers.items()}
        assert answered[nick][-1] == end
        assert sum(1 for got in answered.values() if got) == 1
    assert made.waiting_scans == {}
    assert made.scan_credit == -100.0


def test_a_busy_broker_keeps_waiting_scans_to_the_share(crowd):
    """While the poll finds frames ready, the share holds as before: bob's
    words are served turn after turn and alice's scan waits for the
    credit; the first turn with nothing ready runs it."""
    made, peers = crowd
    alice, bob, carol = peers["alice"], peers["bob"], peers["carol"]
    made.selector.register(bob.link.sock, selectors.EVENT_READ,
                           lambda mask: made.on_link(bob.link, mask))
    _spent(made, -100.0)
    _idle(made)
    alice.send("WHO #big")
    for n in range(5):
        bob.theirs.send(ipc.encode(ipc.Kind.REQUEST, f"PRIVMSG #room :{n}".encode()))
        _loop_turn(made)
        assert carol.take() == alice.take() == ["PRIVMSG :" + str(n)]    # no 352, no 315
    _loop_turn(made)
    assert alice.take()[-1] == "315 #big"
    assert made.scan_credit == -100.0


def test_no_scan_runs_beyond_the_share_ahead_of_output_waiting_to_go(crowd):
    """Output held for the flush window (a fan-out to many workers) goes
    before a scan runs beyond the share: the poll then sleeps until the
    flush is due, not on."""
    made, peers = crowd
    _spent(made, -100.0)
    peers["alice"].send("WHO #big")
    assert made._spare_turn_possible()
    made.dirty.add(peers["bob"].link)
    assert not made._spare_turn_possible()


def test_a_stopping_broker_refuses_the_scans_still_waiting(crowd):
    """A broker started after this one (a restart, the clients staying)
    knows nothing of them: answered 263 and their end numeric, the
    clients wait for nothing (irssi sends no query for any room it joins
    while one is pending)."""
    made, peers = crowd
    _spent(made)
    peers["alice"].send("WHO #big")
    peers["bob"].send("LIST")
    made._refuse_waiting_scans()
    assert peers["alice"].take() == ["263 WHO", "315 #big"]
    assert peers["bob"].take() == ["263 LIST", "323 :End"]


def test_forkchat7_states_the_queue_bounds():
    from tests.unit.test_manpages import rendered
    text = rendered("forkchat.7")
    assert f"At most {broker.SCAN_QUEUE} scans wait" in text
    assert f"none longer than {broker.SCAN_WAIT_S:.0f} seconds" in text


def test_what_a_link_sends_behind_its_waiting_scan_is_bounded(crowd):
    """A worker taken over through its client is not held to flood
    control: the frames it sent behind a waiting scan were all kept, as
    fast as the broker read them.  Past twice what flood control lets an
    honest worker send in SCAN_WAIT_S, its scan is answered 263 at once
    and what it sent runs, in order."""
    made, peers = crowd
    alice = peers["alice"]
    _spent(made, -100.0)
    alice.send("WHO #big")
    line = "ISON bob " + "x" * 490
    sent = 0
    while made.waiting_scans and sent < 1000:      # 500 kB; the defaults allow 36
        alice.send(line)
        sent += 1
    assert made.waiting_scans == {}
    got = alice.take()
    assert got[:2] == ["263 WHO", "315 #big"]
    assert got[2:] == ["303 :bob"] * sent
    alice.send("ISON bob")                     # nothing is held any more
    assert alice.take() == ["303 :bob"]


# -- what was held behind a scan, and the link's output bound ---------------------


def _request(line: str) -> tuple[int, bytes]:
    return (ipc.Kind.REQUEST, line.encode())


def _isons(first: int, count: int) -> list[tuple[int, bytes]]:
    """ISONs of #big's members, one each, padded to a long line."""
    return [_request(f"ISON n{cid} " + "x" * 480) for cid in range(first, first + count)]


def _answers_to_isons(first: int, count: int) -> list[str]:
    return [f"303 :n{cid}" for cid in range(first, first + count)]


def _read_all(made: broker.Broker, peer: Peer) -> list[str]:
    """What the peer's worker is sent, reading until nothing of it waits."""
    got = []
    for _ in range(1000):
        got += peer.take()
        if peer.link.stalled is None and not peer.link.writer.pending:
            return got + peer.take()
    raise AssertionError("the link's frames never all ran")


def test_what_waited_behind_a_scan_waits_while_its_output_is_over_the_bound(crowd):
    """A worker's frames behind its waiting scan ran, once it was
    answered, whatever its output: one taken over that sent LIST after
    LIST and read nothing had a reply queued for each.  Past the bound
    (here the WHO's answer alone) they wait as frames read then would,
    ahead of what the link sent after them (here stalled already), and
    run in order once the worker reads."""
    made, peers = crowd
    alice, bob = peers["alice"], peers["bob"]
    _spent(made)
    alice.send("WHO #big")
    alice.send("TOPIC #room :held")
    alice.frame(ipc.Kind.SYNC, b"1")
    alice.link.writer.limit = 1000
    later = [_request("PRIVMSG #room :later"), (ipc.Kind.SYNC, b"2")]
    made._stall(alice.link, later)
    _later(made, 0.31)
    assert alice.link.stalled == [_request("TOPIC #room :held"), (ipc.Kind.SYNC, b"1"), *later]
    assert bob.take() == []
    got = _read_all(made, alice)
    assert got[-4:] == ["315 #big", "TOPIC :held", "SYNC 1", "SYNC 2"]
    assert bob.take() == ["TOPIC :held", "PRIVMSG :later"]


def test_frames_released_amid_a_read_wait_with_the_rest_of_it(crowd):
    """Frames read in one go: a scan waits, and what follows it goes past
    _held_limit, so it is answered 263 there and what was held runs, as
    far as the bound; the rest of the read waits behind those, in order."""
    made, peers = crowd
    alice = peers["alice"]
    _spent(made, -100.0)
    alice.link.writer.limit = 2000
    made._run_frames(alice.link, [_request("WHO #big"), *_isons(1001, 200)])
    assert made.waiting_scans == {}
    assert alice.link.writer.pending <= 2000 + 64
    assert _read_all(made, alice) == ["263 WHO", "315 #big", *_answers_to_isons(1001, 200)]


def test_frames_released_as_a_recovery_ends_keep_their_order(crowd):
    """At the end of a broker's recovery its held frames run, in order: a
    scan among them may wait, and what follows it be released before
    the end.  Its frames held there, and those it sent after them, wait
    behind what the bound stopped, in order."""
    made, peers = crowd
    alice = peers["alice"]
    _spent(made, -100.0)
    alice.link.writer.limit = 2000
    made.awaiting = {99}                # a worker the broker waits for
    for kind, payload in [_request("WHO #big"), *_isons(1001, 200)]:
        made._on_frame(alice.link, kind, payload)
    made._stall(alice.link, _isons(1201, 10))       # read after those (_must_wait)
    made.awaiting.clear()
    made._end_recovery()
    assert alice.link.writer.pending <= 2000 + 64
    assert _read_all(made, alice) == ["263 WHO", "315 #big", *_answers_to_isons(1001, 210)]


def _leaves_over_its_bound(made, alice, bob, held_talk: list) -> list[str]:
    """alice's scan waits with ISONs (and `held_talk`) behind it, her output
    goes over its bound, she sends her last words and her worker goes:
    what bob then gets."""
    _spent(made, -100.0)
    alice.link.writer.limit = 2000
    made._run_frames(alice.link, [_request("WHO #big"), *_isons(1001, 100), *held_talk])
    alice.link.writer.queue_reply(b"x" * 5000)       # the worker read nothing of it
    made._stall(alice.link, [*_isons(1101, 60), _request("PRIVMSG #room :last")])
    alice.theirs.close()
    made._flush(alice.link)
    assert alice.link.closed
    return bob.take()


def test_frames_released_as_a_gone_workers_frames_run_all_run(crowd):
    """A worker gone: what it sent runs to the end, and its client
    leaves.  Frames released then (a scan answered 263 for what came
    behind it) run too, whatever its output: nobody will read it, and
    what it sent after them (its last words) is not lost."""
    made, peers = crowd
    got = _leaves_over_its_bound(made, peers["alice"], peers["bob"], [])
    assert got[0] == "PRIVMSG :last" and got[1].startswith("QUIT") and len(got) == 2


def test_frames_released_as_a_gone_worker_leaves_run_in_order_whatever_its_output(crowd):
    """As above, with talk among the frames released: run as frames that
    wait for the output bound, they were left on the link, which closed
    with them, and what the gone worker had sent after them ran first."""
    made, peers = crowd
    got = _leaves_over_its_bound(made, peers["alice"], peers["bob"],
                                 [_request("PRIVMSG #room :held")])
    assert got[:2] == ["PRIVMSG :held", "PRIVMSG :last"] and got[2].startswith("QUIT")
    assert len(got) == 3


# -- frames released after a scan, and their worker's flood control ---------------


def _flood_controlled(made: broker.Broker, peer: Peer, tokens: int) -> flood.TokenBucket:
    """Give the peer's link a worker (pid 4242) whose flood control at the
    broker holds `tokens` and refills only when the test says."""
    peer.link.pid = 4242
    bucket = flood.TokenBucket(tokens, 1.0, clock=StillClock())
    made.buckets[4242] = bucket
    return bucket


def _released_over_the_bound(made: broker.Broker, alice: Peer, frames: list) -> None:
    """alice's worker sends a WHO of #big, which waits, and `frames`
    behind it, all read (and charged to its flood control) in one go; the
    WHO's answer then takes her output over its bound, so what was held
    behind it is released to wait for her worker to read."""
    _spent(made)
    alice.link.writer.limit = 2000
    made._run_frames(alice.link, [_request("WHO #big"), *frames])
    assert made.waiting_scans
    _later(made, 0.31)
    assert alice.link.stalled == frames


def test_frames_released_after_a_scan_are_charged_their_flood_control_once(crowd):
    """Frames held behind a waiting scan took their flood control's token
    when they were read; released over the output bound, they waited, and
    were charged again as they ran: a worker with 20 such frames and 9
    tokens left had 11 of them wait (at twice its client's rate) for
    tokens it had paid already, and less left for what it sent next."""
    made, peers = crowd
    alice = peers["alice"]
    bucket = _flood_controlled(made, alice, 30)
    _released_over_the_bound(made, alice, _isons(1001, 20))
    assert _read_all(made, alice)[-21:] == ["315 #big", *_answers_to_isons(1001, 20)]
    assert bucket.wait_time(9) == 0 and bucket.wait_time(10) > 0     # 21 of 30 taken


def test_a_gone_workers_frames_released_after_a_scan_are_not_charged_again(crowd):
    """As above, the worker then gone: what it sent runs as far as its
    flood control allows (Broker._leave), and the frames it had paid for
    were charged again, so that its client's last messages beyond the
    tokens left were dropped as over its flood control."""
    made, peers = crowd
    alice, bob = peers["alice"], peers["bob"]
    _flood_controlled(made, alice, 30)
    talk = [_request(f"PRIVMSG #room :m{number}") for number in range(20)]
    _released_over_the_bound(made, alice, [_request("ISON bob"), *talk])
    alice.theirs.close()
    made._flush(alice.link)
    assert alice.link.closed
    got = bob.take()
    assert got[:20] == ["PRIVMSG :m%d" % number for number in range(20)]
    assert got[20].startswith("QUIT") and len(got) == 21
