"""Room bans: the compile-free matcher (rooms.ban_match) against the
expression every other mask match uses, its memory and work bounds, and
ban masks whose host starts with ':'."""

from __future__ import annotations

import gc
import re
import sys
import tracemalloc

import pytest
from hypothesis import given, settings, strategies

from forkchat import protocol, rooms, state_rooms

from tests.unit.test_state import World

MASK_CHARS = "ab*?!@.:[\\("


def _old_match(pattern: str, text: str) -> bool:
    """How a ban matched before: its own compiled expression."""
    return rooms.glob_regex(pattern).fullmatch(text) is not None


@pytest.mark.parametrize("pattern, text", [
    ("", ""), ("", "a"), ("*", ""), ("?", ""), ("?", "a"), ("??", "a"), ("a", "a"),
    ("a", "ab"), ("a*", "a"), ("*a", "ba"), ("a*a", "a"), ("a*a", "aa"), ("*a*", "b"),
    ("a?c", "abbc"), ("a*?", "a"), ("a*?", "ab"), ("*?a?*", "ba"), ("**a**", "xxa"),
    ("*a?b*", "aab"), ("*a?b*", "acab"), ("*ab?ab*", "ababab"), ("*ab?ab*", "abxab"),
    ("?*a?a*?", "xaxax"), ("*!*@127.*", "x!y@127.0.0.1"), ("*!*@10.*", "x!y@127.0.0.1"),
    ("bob!*@*", "bobby!u@h"), ("b?b!*", "bab!x@y"), ("*a*a*a*a*a*a*a*a*a*b", "a" * 200),
])
def test_ban_match_examples(pattern, text):
    assert rooms.ban_match(pattern, text) is _old_match(pattern, text)


@settings(max_examples=1500, deadline=None)
@given(strategies.text(MASK_CHARS, max_size=14),
       strategies.text(MASK_CHARS.replace("*", ""), max_size=16))
def test_ban_match_agrees_with_the_compiled_expression(pattern, text):
    """The ban matcher answers exactly as the old one, a compiled
    `glob_regex` per ban, on any mask and text."""
    assert rooms.ban_match(pattern, text) is _old_match(pattern, text)


@settings(max_examples=500, deadline=None)
@given(strategies.lists(strategies.sampled_from(["*", "?", "a", "b", "ab", "?a", "a?b"]),
                        max_size=12),
       strategies.text("ab", max_size=20))
def test_ban_match_agrees_on_piecewise_masks(parts, text):
    """Masks built of pieces, so that many have several stars and '?'
    inside the pieces, where the matcher's search loops."""
    pattern = "".join(parts)
    assert rooms.ban_match(pattern, text) is _old_match(pattern, text)


@settings(max_examples=300, deadline=None)
@given(strategies.text(MASK_CHARS, max_size=12), strategies.text("ab", max_size=12))
def test_a_room_ban_matches_as_the_old_one(mask, nick):
    """Through Room.is_banned, on a casefolded prefix."""
    room = rooms.Room("#r", 0)
    ban = rooms.Ban.of(mask, "op", 0)
    room.bans[ban.folded] = ban
    prefix = protocol.casefold(f"{nick}!u@h")
    assert room.is_banned(prefix) is _old_match(ban.folded, prefix)


def _hostile_masks(count: int) -> list[str]:
    """200-character masks of '*x' pieces, all different: what made a
    compiled expression of some 6 KB per ban."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join("*" + letters[(i * 7 + j * (i % 5 + 1)) % 26] for j in range(100))
            for i in range(count)]


def test_checked_bans_hold_no_more_than_their_masks():
    """100 hostile bans, checked against a member: the room grows by about
    the masks, under 1 KB a ban (a compiled expression per ban held 6 KB),
    and nothing is compiled for them."""
    w = World(bans_per_room=100)
    w.add("alice")
    w.add("bob")
    w.cmd("alice", "JOIN #r")
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for mask in _hostile_masks(100):
            w.cmd("alice", f"MODE #r +b {mask.upper()}")     # two spellings kept: the worst
        assert w.to("bob", "JOIN #r")[0] == w.p("bob") + " JOIN #r"
        w.cmd("bob", "PRIVMSG #r :hi")
        w.cmd("bob", "PART #r")
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(w.st.rooms["#r"].bans) == 100
    assert grown / 100 < 1024


def test_checking_a_ban_compiles_nothing(monkeypatch):
    room = rooms.Room("#r", 0)
    for mask in _hostile_masks(5) + ["*!*@127.*", "bob!*@*", "*a?b*"]:
        ban = rooms.Ban.of(mask, "op", 0)
        room.bans[ban.folded] = ban

    def refuse(*args, **kwargs):
        raise AssertionError("compiled an expression for a ban")

    monkeypatch.setattr(re, "compile", refuse)
    monkeypatch.setattr(rooms, "glob_regex", refuse)
    assert room.is_banned("bob!u@127.0.0.1")
    assert not room.is_banned("carol!u@10.0.0.1")


def _steps(check) -> int:
    """Lines of rooms.py that `check()` runs."""
    steps = 0

    def count(frame, event, arg):
        nonlocal steps
        if event == "line" and frame.f_code.co_filename == rooms.__file__:
            steps += 1
        return count

    sys.settrace(count)
    try:
        check()
    finally:
        sys.settrace(None)
    return steps


def _text(nicklen: int) -> str:
    return "a" * nicklen + "!" + "a" * 16 + "@127.0.0.1"


# Masks sized to the prefix, `a` its number of a's, so that the walk runs
# instead of stopping at once for want of characters.
HOSTILE = {
    "every piece found": lambda a: "*a" * a + "*",
    "pieces and stars": lambda a: "*a**" * a,
    "the last piece missing": lambda a: "*a" * (a - 1) + "*b*",
    "'?' inside a piece": lambda a: "*" + "a?" * (a // 3) + "b*",
    "'?' pieces found": lambda a: "*a?a" * (a // 3) + "*",
    "'?' around runs": lambda a: "*?a?" * (a // 3) + "*",
    "mixed": lambda a: ("*" + "a?" * 3 + "a*a") * (a // 9) + "*b?*",
}


@pytest.mark.parametrize("shape", HOSTILE)
@pytest.mark.parametrize("nicklen", [30, 64])
def test_ban_check_work_grows_at_most_with_the_prefix(shape, nicklen):
    """Without an expression a ban is checked by a Python walk, and a
    hostile mask must not make it long: its steps stay within a few per
    character of the prefix (at most some 130: nicklen 64, USERLEN 16 and
    an address), whatever the mask, so 100 such bans cost a join or an
    unvoiced message well under what one WHO with a mask costs."""
    text = _text(nicklen)
    mask = HOSTILE[shape](text.count("a"))[:rooms.MAX_MASK_CHARS]
    assert rooms.ban_match(mask, text) is _old_match(mask, text)
    rooms._places.cache_clear()             # the prefix's places made afresh too
    assert _steps(lambda: rooms.ban_match(mask, text)) <= 8 * len(text) + 40


@pytest.mark.parametrize("piece", ["a?b", "a?a?a?a?a?b", "aa?a?b", "a??a?b", "a?!"])
def test_a_piece_with_marks_costs_a_few_steps_wherever_its_runs_are(piece):
    """A piece with '?' between literal runs is found bit-parallel: a
    prefix of a's, that holds its runs at every character, costs it no
    more steps than any other (tried place by place, it cost one turn of
    a loop for each)."""
    text = _text(64)
    mask = "*" + piece + "*"
    assert rooms.ban_match(mask, text) is _old_match(mask, text)    # the prefix's places kept
    assert _steps(lambda: rooms.ban_match(mask, text)) <= 40


# -- hosts that start with ':' ------------------------------------------------

@pytest.mark.parametrize("mask, expected", [
    ("*!*@::1", "*!*@0::1"),
    ("u@::1", "*!u@0::1"),
    ("*!*@:*", "*!*@0:*"),
    ("*!*@0::1", "*!*@0::1"),
    ("*!*@1:*", "*!*@1:*"),
    ("a:b!*@*", "a:b!*@*"),
    ("n!u:x@h", "n!u:x@h"),
])
def test_a_mask_host_is_spelled_as_a_client_host(mask, expected):
    assert rooms.normalize_mask(mask) == expected


def test_a_ban_on_a_colon_host_bans_the_client_from_it():
    """The worker shows ::1 as 0::1 (session.client_host); a ban typed as
    *!*@::1 is kept as *!*@0::1, so it bans that client, and -b with either
    spelling lifts it."""
    w = World()
    w.add("alice")
    w.cids["bob"] = 2
    w.st.connect(2, "0::1")
    w.cmd("bob", "NICK bob")
    w.st.register(2, "bu", "Bob", w.out)
    w.out.take()
    w.cmd("alice", "JOIN #r")
    assert w.to("alice", "MODE #r +b *!*@::1") == [":alice!au@127.0.0.1 MODE #r +b *!*@0::1"]
    assert w.to("bob", "JOIN #r") == [":srv 474 bob #r :Cannot join channel (+b)"]
    assert w.to("alice", "MODE #r -b *!*@::1") == [":alice!au@127.0.0.1 MODE #r -b *!*@0::1"]
    assert w.to("bob", "JOIN #r")[0] == ":bob!bu@0::1 JOIN #r"


def test_a_kept_ban_on_a_colon_host_is_spelled_as_the_client_host():
    """A ban kept in the room store as *!*@::1 (set before masks were
    spelled so) bans the client from ::1 once the room is restored."""
    room = rooms.Room("#r", 0)
    room.apply_meta({"bans": [["*!*@::1", "op", 5], ["Bob!*@*", "op", 6]]})
    assert [(b.mask, b.folded) for b in room.bans.values()] == [
        ("*!*@0::1", "*!*@0::1"), ("Bob!*@*", "bob!*@*")]
    assert room.is_banned("x!u@0::1") and room.is_banned("bob!u@h")
    assert not room.is_banned("x!u@127.0.0.1")


def test_meta_keeps_bans_as_set():
    room = rooms.Room("#r", 0)
    for mask in ["*!*@0::1", "Bob!*@*"]:
        ban = rooms.Ban.of(mask, "op", 1)
        room.bans[ban.folded] = ban
    copy = rooms.Room("#r", 0)
    copy.apply_meta(room.meta())
    assert copy.bans == room.bans


@pytest.mark.parametrize("room_name", ["#r", "#" + "\u00e9" * 49, "#" + "\U0001f600" * 49],
                         ids=["ascii", "latin", "emoji"])
@pytest.mark.parametrize("mask", ["\u00e9" * 200, "*!*@" + "\u20ac" * 196, "n!" + "u" * 197 + "@h",
                                  "x" * 200], ids=["latin", "euro-host", "long-user", "ascii"])
def test_a_ban_mask_reaches_members_and_the_ban_list_whole_or_is_refused(room_name, mask):
    """A mask of 200 characters fits 512 bytes in ASCII, not in UTF-8:
    'MODE #room +b' with 200 e-acute (400 bytes) in a room of 49 of them
    was echoed cut at 384 bytes, so the members kept a mask the room did
    not have (and '-b' with it lifted nothing), and its 367 line lost the
    setter and the time.  A mask the lines would cut is refused (696);
    one taken reaches the members and the list whole, and is lifted by
    the widest member there may be."""
    w = World(nicklen=30)
    op = "a" * 30
    w.add(op, user="u" * 16)
    w.add("bob")
    prefix = f"{op}!{'u' * 16}@127.0.0.1"
    w.cmd(op, f"JOIN {room_name}")
    w.cmd("bob", f"JOIN {room_name}")
    lines = w.cmd(op, f"MODE {room_name} +b {mask}")
    bans = w.st.rooms[protocol.casefold(room_name)].bans
    if not bans:
        budget = state_rooms.ban_mask_bytes(w.st, w.st.rooms[protocol.casefold(room_name)], prefix)
        shown = protocol.truncate_utf8(mask.encode(), rooms.SHOWN_MASK_BYTES).decode()
        assert lines == [(w.cids[op], f":srv 696 {op} {room_name} b {shown} "
                                      f":Ban mask too long: at most {budget} bytes here")]
        assert len(rooms.normalize_mask(mask).encode()) > budget
        return
    [kept] = bans.values()
    assert [line for who, line in lines if who == w.cids["bob"]] == [
        f":{prefix} MODE {room_name} +b {kept.mask}"]
    listing = w.to("bob", f"MODE {room_name} +b")
    head = f":srv 367 bob {room_name} {kept.mask} {prefix} "
    assert listing[0].startswith(head) and listing[0][len(head):].isdigit(), listing[0]
    widest = "w" * 30
    w.st.connect(9, "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255")
    w.cids[widest] = 9
    w.cmd(widest, f"NICK {widest}")
    w.st.register(9, "v" * 16, "Real", w.out)
    w.cmd(widest, f"JOIN {room_name}")
    w.cmd(op, f"MODE {room_name} +o {widest}")
    lifted = w.to(widest, f"MODE {room_name} -b {mask}")
    assert lifted == [f":{widest}!{'v' * 16}@ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 "
                      f"MODE {room_name} -b {kept.mask}"]
    assert not bans
