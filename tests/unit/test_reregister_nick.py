"""A nick lost to a race after a broker restart is announced as a forced NICK.

After a restart every worker re-registers; when two claim the same nick the
later one becomes Guest<cid>.  Its IRC client and the members of its rooms
still hold the old nick, so the state must emit `:old!user@host NICK new`
to them (and an UPDATE to the worker), as a server does on a forced rename.
"""

from __future__ import annotations

from forkchat import protocol
from tests.unit.test_state import HOST, World


def _restarted_with_holder(holder_in_room: bool) -> World:
    """A fresh state where bob came back in #room and a new client took `alice`."""
    fresh = World()
    fresh.st.connect(2, HOST)
    fresh.st.reregister(2, {"nick": "bob", "user": "bu", "host": HOST, "rooms": {"#room": ""}},
                        fresh.out)
    fresh.cids = {"bob": 2}
    fresh.st.connect(9, HOST)
    fresh.st.request(9, protocol.parse_text("NICK alice"), fresh.out)
    fresh.st.register(9, "other", "Other alice", fresh.out)
    fresh.cids["alice"] = 9
    if holder_in_room:
        fresh.cmd("alice", "JOIN #room")
    fresh.out.take()
    return fresh


def _reregister_old_alice(fresh: World) -> list[tuple[int, str]]:
    fresh.st.connect(1, HOST)
    fresh.st.reregister(1, {"nick": "alice", "user": "au", "host": HOST,
                            "realname": "Real alice", "rooms": {"#room": "@"}}, fresh.out)
    return fresh.out.lines


def test_forced_rename_reaches_the_client_and_its_room():
    fresh = _restarted_with_holder(holder_in_room=False)
    lines = _reregister_old_alice(fresh)
    assert fresh.out.updates == [(1, {"nick": "Guest1"})]
    assert sorted(lines) == [(1, f":alice!au@{HOST} NICK Guest1"),
                             (2, f":alice!au@{HOST} NICK Guest1")]
    assert fresh.st.clients[1].nick == "Guest1"
    assert fresh.st.find_room("#room").members == {2: "", 1: "@"}


def test_forced_rename_is_not_sent_to_the_new_holder_of_the_nick():
    """The holder would read `:alice!... NICK Guest1` as its own rename."""
    fresh = _restarted_with_holder(holder_in_room=True)
    lines = _reregister_old_alice(fresh)
    assert sorted(lines) == [(1, f":alice!au@{HOST} NICK Guest1"),
                             (2, f":alice!au@{HOST} NICK Guest1")]


def test_no_nick_line_without_a_collision_or_before_registration():
    fresh = World()
    fresh.st.connect(1, HOST)
    fresh.st.reregister(1, {"nick": "alice", "user": "au", "host": HOST, "rooms": {"#r": "@"}},
                        fresh.out)
    fresh.st.connect(2, HOST)
    fresh.st.reregister(2, {"nick": "ALICE", "registered": False}, fresh.out)
    assert fresh.out.lines == []
    assert fresh.out.updates == [(2, {"nick": "Guest2"})]


def test_members_back_after_the_rename_are_told_when_recovery_ends():
    """Workers come back in any order.  A member of the renamed client's room
    that re-registers after it also holds the lost nick for it: it learns of
    the rename when recovery ends, once, and the nick's holder never does."""
    fresh = World()
    fresh.st.connect(9, HOST)
    fresh.st.reregister(9, {"nick": "ALICE", "user": "other", "host": HOST,
                            "rooms": {"#room": "@"}}, fresh.out)
    _reregister_old_alice(fresh)
    assert fresh.st.clients[1].nick == "Guest1"
    fresh.out.lines.clear()
    fresh.st.connect(2, HOST)
    fresh.st.reregister(2, {"nick": "bob", "user": "bu", "host": HOST, "rooms": {"#room": ""}},
                        fresh.out)
    assert fresh.out.lines == []
    fresh.st.finish_recovery(fresh.out)
    assert fresh.out.lines == [(2, f":alice!au@{HOST} NICK Guest1")]
    fresh.st.finish_recovery(fresh.out)
    assert len(fresh.out.lines) == 1


def test_a_renamed_client_gone_before_recovery_ends_is_not_announced():
    fresh = World()
    fresh.st.connect(9, HOST)
    fresh.st.reregister(9, {"nick": "alice", "user": "other", "host": HOST}, fresh.out)
    _reregister_old_alice(fresh)
    fresh.st.connect(2, HOST)
    fresh.st.reregister(2, {"nick": "bob", "user": "bu", "host": HOST, "rooms": {"#room": ""}},
                        fresh.out)
    fresh.st.disconnect(1, "Connection closed", fresh.out)
    fresh.out.lines.clear()
    fresh.st.finish_recovery(fresh.out)
    assert fresh.out.lines == []
