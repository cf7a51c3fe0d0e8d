"""A link that overflows amid the output of a command: its client is
dropped ("Max SendQ exceeded") once that command has been carried out,
not halfway through it.

A line fanned out to a room can overflow any member's link, the sender's
own included (its JOIN or NICK echo).  Disconnected there and then, the
client was forgotten while its command went on with it: a NICK gave the
forgotten client its new nick for good (nobody could take it again, WHOIS
showed a ghost), and a JOIN of two rooms added it to the second one and
then looked it up, which raised KeyError and ended the broker."""

from __future__ import annotations

from forkchat import config, ipc
from tests.unit.test_broker_batch import Member, flush, room  # noqa: F401 (room: a fixture)


def test_a_nick_change_that_overflows_its_own_link_frees_the_new_nick(room):
    made, (alice, bob, carol) = room
    bob.link.writer.limit = bob.link.writer.pending + 10      # takes no more lines
    bob.send("NICK robert")
    flush(made)
    assert bob.frames() == [(ipc.Kind.DROP, b"Max SendQ exceeded")]
    # every member hears the change, then the quit, under the new nick
    assert alice.heard() == carol.heard() == ["bob NICK robert", "robert QUIT exceeded"]
    assert "robert" not in made.state.nicks
    dave = Member(made, 4, "robert", room="")
    flush(made)
    assert [line.split()[1] for line in dave.heard()][0] == "001"


def test_a_join_of_two_rooms_that_overflows_the_joiners_link_leaves_no_trace(room):
    made, (alice, bob, carol) = room
    bob.link.writer.limit = bob.link.writer.pending + 10
    bob.send("JOIN #x,#y")
    flush(made)
    assert bob.frames() == [(ipc.Kind.DROP, b"Max SendQ exceeded")]
    assert 2 not in made.state.clients
    assert all(2 not in joined.members for joined in made.state.rooms.values())
    assert alice.heard() == carol.heard() == ["bob QUIT exceeded"]


def test_the_rooms_update_of_a_clients_own_join_is_not_held_against_its_link(room):
    """Each JOIN's answer ends with an UPDATE of every room the client is
    in, some 40 bytes a room: it was queued against broker_buffer_bytes, so
    at its floor (517) a client that read everything was dropped ('Max
    SendQ exceeded') at its 13th room here, though the reply to a
    client's own command is not counted (forkchat.toml(5))."""
    made, (alice, bob, carol) = room
    bob.link.writer.limit = config.AT_LEAST["broker_buffer_bytes"][0]
    for index in range(40):
        bob.send(f"JOIN #a-room-with-a-longer-name-{index:02d}")
        flush(made)
        frames = bob.frames()
        assert (ipc.Kind.DROP, b"Max SendQ exceeded") not in frames, index
    assert len(ipc.decode_json(frames[-1][1])["rooms"]) == 41


def many_rooms(made, alice, bob, count: int = 20) -> None:
    """bob in `count` rooms of long names, alice their operator."""
    for index in range(count):
        alice.send(f"JOIN #a-room-with-a-longer-name-{index:02d}")
        bob.send(f"JOIN #a-room-with-a-longer-name-{index:02d}")
    flush(made)
    alice.frames()
    bob.frames()


def test_the_rooms_update_a_kick_sends_its_target_is_not_held_against_its_link(room):
    """A KICK (or a MODE +o) ends with an UPDATE of every room of its
    target: held against broker_buffer_bytes, at its floor it dropped a
    target in 13 rooms or more, though it read everything."""
    made, (alice, bob, carol) = room
    many_rooms(made, alice, bob)
    bob.link.writer.limit = config.AT_LEAST["broker_buffer_bytes"][0]
    frames = []
    for line in ["KICK #a-room-with-a-longer-name-00 bob",
                 "MODE #a-room-with-a-longer-name-01 +o bob"]:
        alice.send(line)
        flush(made)
        frames += bob.frames()
    assert (ipc.Kind.DROP, b"Max SendQ exceeded") not in frames
    assert [len(ipc.decode_json(payload)["rooms"]) for kind, payload in frames
            if kind == ipc.Kind.UPDATE] == [20, 20]


def test_an_oper_wait_told_to_a_worker_that_does_not_read_is_bounded(room):
    """Each failed OPER past an address's free ones sends the address's
    wait to every connection from it, in an UPDATE that follows no line
    of its own: not held against broker_buffer_bytes, a worker taken over
    that reported failures without end grew the queue of one from its
    address that did not read (by some 60 bytes each) without bound."""
    made, (alice, bob, carol) = room
    limit = bob.link.writer.limit = config.AT_LEAST["broker_buffer_bytes"][0]
    for _ in range(50):         # no flush: bob's worker takes nothing
        alice.frame(ipc.Kind.OPER_FAILED, b'{"name": "x"}')
        assert bob.link.writer.pending <= 2 * limit
    assert bob.link.dropping
    flush(made)
    assert bob.frames()[-1] == (ipc.Kind.DROP, b"Max SendQ exceeded")


def test_a_kill_of_a_client_whose_link_is_full_closes_it_with_the_kill_reason(room):
    """An operator's KILL of a client near broker_buffer_bytes: the KILL
    line was held against the bound, overflowed the link, and the client
    read 'Max SendQ exceeded' as its last line instead of the operator's
    reason (which everyone else heard in its QUIT)."""
    made, (alice, bob, carol) = room
    made.state.set_oper(1, "admin", made.outbox)
    flush(made)
    alice.frames()
    bob.link.writer.limit = bob.link.writer.pending + 10      # takes no more lines
    alice.send("KILL bob :spamming")
    flush(made)
    reason = b"Killed (alice (spamming))"
    assert bob.frames() == [(ipc.Kind.DELIVER, b":alice!u@h KILL bob :" + reason + b"\r\n"),
                            (ipc.Kind.DROP, reason)]
    assert carol.heard() == ["bob QUIT (spamming))"]
    assert "bob" not in made.state.nicks


def test_a_link_dropped_once_is_sent_no_more_drops(room):
    """A drop is past the bound, for it ends the link: a worker that
    repeats a frame refused with a drop (REREGISTER to a broker that did
    not take its connection over) must not grow the queue with each."""
    made, (alice, bob, carol) = room
    for _ in range(3):
        made.outbox.drop(2, "Server error: session not restored")
    flush(made)
    assert bob.frames() == [(ipc.Kind.DROP, b"Server error: session not restored")]
