"""A room's talk of one flush window, gathered before it reaches the links
(broker.RoomBatch): each member gets it as one DELIVER, in the order it
was sent, and everything else a member is sent keeps its place around it."""

from __future__ import annotations

import socket
import types

import pytest

from forkchat import broker, config, ipc
from tests.support.brokerpeer import BrokerPeer


class Member(BrokerPeer):
    """One registered client's link to a broker with no loop running."""

    def frames(self) -> list[tuple[int, bytes]]:
        """The frames that reached the worker since the last look."""
        data = b""
        while True:
            try:
                chunk = self.theirs.recv(1 << 20)
            except BlockingIOError:
                chunk = b""
            if not chunk:       # (all there is, or the link closed)
                return ipc.FrameReader().feed(data)
            data += chunk

    def heard(self) -> list[str]:
        """What reached the client since the last look, as 'nick COMMAND
        last-word' (':alice!u@h PRIVMSG #room :hi' is 'alice PRIVMSG hi')."""
        said = []
        for kind, payload in self.frames():
            if kind in (ipc.Kind.DELIVER, ipc.Kind.REPLY):
                for line in payload.decode().splitlines():
                    words = line.split()
                    said.append(f"{words[0][1:].split('!')[0]} {words[1]} "
                                f"{words[-1].lstrip(':')}")
        return said


def flush(made: broker.Broker) -> None:
    made.last_flush -= broker.FLUSH_WINDOW_S
    made._maybe_flush()


@pytest.fixture
def room(tmp_path):
    """alice, bob and carol (cids 1-3) in #room, and what each was sent so far read."""
    socks = [*socket.socketpair(), *socket.socketpair()]
    cfg = config.Config(server=config.Server(state_dir=str(tmp_path)))
    made = broker.Broker(socks[0], socks[2], cfg, "today")
    members = [Member(made, cid, nick) for cid, nick in enumerate(["alice", "bob", "carol"], 1)]
    flush(made)
    for member in members:
        member.frames()
    yield made, members
    made.selector.close()
    for sock in socks:
        sock.close()
    for member in members:
        member.link.sock.close()
        member.theirs.close()


def test_a_rooms_talk_waits_for_the_flush_on_no_link_and_comes_as_one_deliver(room):
    """The lines of one window to a room are queued on the members' links
    at the flush, each member's joined (a sender's without its own)."""
    made, (alice, bob, carol) = room
    alice.send("PRIVMSG #room :one")
    bob.send("PRIVMSG #room :two")
    alice.send("PRIVMSG #room :three")
    assert [member.link.writer.pending for member in room[1]] == [0, 0, 0]
    flush(made)
    lines = [b":alice!u@h PRIVMSG #room :one\r\n", b":bob!u@h PRIVMSG #room :two\r\n",
             b":alice!u@h PRIVMSG #room :three\r\n"]
    assert carol.frames() == [(ipc.Kind.DELIVER, b"".join(lines))]
    assert bob.frames() == [(ipc.Kind.DELIVER, lines[0] + lines[2])]
    assert alice.frames() == [(ipc.Kind.DELIVER, lines[1])]


def test_what_else_a_member_is_sent_keeps_its_place_among_the_rooms_talk(room):
    made, (alice, bob, carol) = room
    alice.send("PRIVMSG #room :one")
    bob.send("PRIVMSG carol :aside")
    alice.send("PRIVMSG #room :two")
    bob.send("AWAY :gone")                   # (answered to bob alone, as a REPLY)
    alice.send("PRIVMSG #room :three")
    flush(made)
    assert carol.heard() == ["alice PRIVMSG one", "bob PRIVMSG aside", "alice PRIVMSG two",
                             "alice PRIVMSG three"]
    assert bob.heard() == ["alice PRIVMSG one", "alice PRIVMSG two", "forkchat.local 306 away",
                           "alice PRIVMSG three"]


def test_a_member_who_joins_or_leaves_within_the_window_hears_only_its_share(room):
    made, (alice, bob, carol) = room
    dave = Member(made, 4, "dave", room="")
    alice.send("PRIVMSG #room :before")
    dave.send("JOIN #room")
    alice.send("PRIVMSG #room :between")
    bob.send("PART #room :bye")
    alice.send("PRIVMSG #room :after")
    flush(made)
    assert carol.heard() == ["alice PRIVMSG before", "dave JOIN #room", "alice PRIVMSG between",
                             "bob PART bye", "alice PRIVMSG after"]
    assert [line for line in dave.heard() if "PRIVMSG" in line] == [
        "alice PRIVMSG between", "alice PRIVMSG after"]
    assert [line for line in bob.heard() if "PRIVMSG" in line] == [
        "alice PRIVMSG before", "alice PRIVMSG between"]


def test_a_member_dropped_at_the_flush_is_heard_quitting_after_its_last_words(room):
    """The room's talk overflowed alice's link when it was queued there,
    at the flush: her QUIT comes after the lines she sent in that window,
    to every member, whatever their order in the room."""
    made, (alice, bob, carol) = room
    alice.send("PRIVMSG #room :last words")
    bob.send("PRIVMSG #room :" + "x" * 400)
    alice.link.writer.limit = 100
    flush(made)
    expected = ["alice PRIVMSG words", "bob PRIVMSG " + "x" * 400, "alice QUIT exceeded"]
    assert carol.heard() == expected
    assert bob.heard() == [expected[0], expected[2]]
    assert alice.frames() == [(ipc.Kind.DROP, b"Max SendQ exceeded")]


def test_members_dropped_at_the_same_flush_are_dropped_once_each(room):
    """bob's link, refused the room's talk, is refused alice's QUIT too,
    and dropped then: not a second time for the talk."""
    made, (alice, bob, carol) = room
    carol.send("PRIVMSG #room :" + "x" * 400)
    alice.link.writer.limit, bob.link.writer.limit = 100, 10
    flush(made)
    assert alice.frames() == [(ipc.Kind.DROP, b"Max SendQ exceeded")]
    assert bob.frames() == [(ipc.Kind.DROP, b"Max SendQ exceeded")]
    assert sorted(line for line in carol.heard() if "QUIT" in line) == [
        "alice QUIT exceeded", "bob QUIT exceeded"]


def test_the_rooms_talk_not_queued_yet_counts_against_a_links_bound(room):
    """A worker that reads nothing is not read either while the broker
    holds more than its bound for it (Broker._must_wait), the talk
    gathered for it included."""
    made, (alice, bob, carol) = room
    carol.link.writer.limit = 300
    assert not made._over_bound(carol.link)
    alice.send("PRIVMSG #room :" + "y" * 400)
    assert carol.link.writer.pending == 0
    assert made._over_bound(carol.link)


def test_the_rooms_talk_alone_waits_for_the_window_and_no_longer(room, monkeypatch):
    """Talk gathered for five workers or more waits for the flush window,
    and the loop wakes for it within the window; for four or fewer it goes
    at once (Broker._maybe_flush)."""
    made, members = room
    clock = types.SimpleNamespace(now=made.last_flush + broker.FLUSH_WINDOW_S / 2)
    clock.monotonic = lambda: clock.now
    monkeypatch.setattr(broker, "time", clock)
    made.next_beat = clock.now + broker.HEARTBEAT_S
    made.store_dirty = False
    alice = members[0]
    alice.send("PRIVMSG #room :few")
    made._maybe_flush()                       # three members: at once
    assert members[1].heard() == ["alice PRIVMSG few"] and made.batch is None
    more = [Member(made, cid, f"m{cid}") for cid in range(4, 7)]
    made._flush_dirty()
    for member in [*members, *more]:
        member.frames()
    made.store_dirty = False
    alice.send("PRIVMSG #room :many")
    made._maybe_flush()                       # six members: held for the window
    assert members[1].heard() == [] and not made.dirty and made.batch is not None
    assert 0.0 < made._timeout() <= broker.FLUSH_WINDOW_S
    clock.now += broker.FLUSH_WINDOW_S
    assert made._timeout() == 0.0
    made._maybe_flush()
    assert [member.heard() for member in more] == [["alice PRIVMSG many"]] * 3
    for member in more:
        member.link.sock.close()
        member.theirs.close()


def test_a_member_who_quits_within_the_window_is_sent_the_talk_before_its_quit(room):
    """bob's worker said goodbye after alice spoke: his link is still
    written to until the flush, and it gets her line before the answer
    to its BYE, as when each line was queued at once (found by review22)."""
    made, (alice, bob, carol) = room
    alice.send("PRIVMSG #room :before you go")
    bob.frame(ipc.Kind.BYE, b"leaving")
    flush(made)
    assert bob.frames() == [(ipc.Kind.DELIVER, b":alice!u@h PRIVMSG #room :before you go\r\n"),
                            (ipc.Kind.SYNC, broker.BYE_SYNC)]
    assert carol.heard() == ["alice PRIVMSG go", "bob QUIT leaving"]


def test_talk_that_reaches_four_workers_goes_at_once_as_before_it_was_gathered(room, monkeypatch):
    """Output for FLUSH_AT_ONCE_LINKS workers or fewer goes at once: the
    talk gathered counts as the links it reaches, its sender's not among
    them when it hears nothing, nor a link already counted (found by
    review22: a room of five waited for the window, as did a room of four
    where one had a private message just before)."""
    made, members = room
    clock = types.SimpleNamespace(now=made.last_flush + broker.FLUSH_WINDOW_S / 2)
    clock.monotonic = lambda: clock.now
    monkeypatch.setattr(broker, "time", clock)
    dave = Member(made, 4, "dave")
    made._flush_dirty()
    alice, bob, carol = members
    for member in [*members, dave]:
        member.frames()
    bob.send("PRIVMSG carol :first")
    alice.send("PRIVMSG #room :four of us")
    made._maybe_flush()
    assert carol.heard() == ["bob PRIVMSG first", "alice PRIVMSG us"]
    assert made.batch is None and not made.dirty
    eve = Member(made, 5, "eve")
    made._flush_dirty()
    for member in [*members, dave, eve]:
        member.frames()
    alice.send("PRIVMSG #room :five of us")
    made._maybe_flush()
    assert [member.heard() for member in (bob, carol, dave, eve)] == [["alice PRIVMSG us"]] * 4
    for member in (dave, eve):
        member.link.sock.close()
        member.theirs.close()


def test_a_sender_is_not_held_for_its_own_lines_in_the_rooms_talk(room):
    """alice alone spoke in the window: her own lines, which she is not
    sent, do not count against her link's bound (here lower than the
    others').  Counted, they stalled her link with nothing queued on it,
    unwatched, and the flush, queueing nothing on it, never looked again
    (found by review22).  With every bound the same, the others' links
    overflowed too and her link was queued their QUITs, which ended her
    stall; it still held her next frames until the flush, for nothing."""
    made, (alice, bob, carol) = room
    alice.link.writer.limit = 2000
    said = [(ipc.Kind.REQUEST, f"PRIVMSG #room :{n} ".encode() + b"z" * 400) for n in range(6)]
    made._run_frames(alice.link, [*said, (ipc.Kind.REQUEST, b"ISON bob")])
    flush(made)
    flush(made)
    assert alice.link.stalled is None
    assert len(bob.heard()) == 6
    assert alice.heard() == ["forkchat.local 303 bob"]
