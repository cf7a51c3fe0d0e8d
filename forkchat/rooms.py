"""Rooms: the Room record and pure channel-mode parsing and applying.

A room keeps its members as a dict cid -> status ("@", "+", "@+" or ""),
so that a fan-out is one pass over the dict keys and a status check is one
lookup.  Mode strings are handled in two steps, as RFC 2812 3.2.3 reads them:
`parse_modes` turns "+ov-b a b mask" into `ModeChange`s (no state touched),
and `apply_modes` applies them to one room, keeping only the changes that
took effect, so the echoed MODE line never repeats a no-op.  Nothing here
knows about sockets, clients or numerics formatting: errors are returned as
`numerics.Reply` values for the caller to send.
"""

from __future__ import annotations

import functools
import itertools
import operator
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

from forkchat import numerics, protocol, session

STATUS_PREFIX = {"o": "@", "v": "+"}     # PREFIX=(ov)@+
FLAG_MODES = "imnpst"                     # CHANMODES type D
KNOWN_MODES = "bklov" + FLAG_MODES
DEFAULT_FLAGS = frozenset("nt")
MAX_PARAM_MODES = 4                       # 005 MODES=4: parameter changes per MODE
KEYLEN = 23                               # RFC 2812 key = 1*23 chars
MAX_LIMIT = 1_000_000_000
MAX_MASK_CHARS = 200
_KEY_FORBIDDEN = set(" ,\t\v\f\r\n\0")

# resolve(nick) -> (cid, nick as registered) or None when no such nick.
Resolver = Callable[[str], "tuple[int, str] | None"]


@dataclass(slots=True)
class Ban:
    mask: str          # normalised nick!user@host, as the setter spelled it
    setter: str
    time: int
    folded: str        # casefolded mask, what matching uses (the same string
                       # as `mask` when the setter spelled it in lower case)

    @classmethod
    def of(cls, mask: str, setter: str, when: int) -> Ban:
        """A ban on a normalised mask; one string serves as both forms when
        casefolding changes nothing, as for most masks."""
        folded = protocol.casefold(mask)
        return cls(mask, setter, when, mask if folded == mask else folded)

    def matches(self, folded_prefix: str) -> bool:
        return ban_match(self.folded, folded_prefix)


@dataclass(eq=False)
class Room:
    name: str                                   # spelling at creation
    created: int
    members: dict[int, str] = field(default_factory=dict)
    topic: str = ""
    topic_setter: str = ""
    topic_time: int = 0
    flags: set[str] = field(default_factory=lambda: set(DEFAULT_FLAGS))
    key: str = ""
    limit: int = 0                              # 0: no +l
    bans: dict[str, Ban] = field(default_factory=dict)   # folded mask -> Ban
    invites: set[int] = field(default_factory=set)       # cids invited, used up on JOIN

    def meta(self) -> dict:
        """What outlives the members: the room's record for the state store."""
        return {"name": self.name, "created": self.created, "topic": self.topic,
                "topic_setter": self.topic_setter, "topic_time": self.topic_time,
                "flags": "".join(sorted(self.flags)), "key": self.key, "limit": self.limit,
                "bans": [[b.mask, b.setter, b.time] for b in self.bans.values()]}

    def apply_meta(self, meta: dict) -> None:
        """Restore a stored record; anything malformed is skipped, not trusted."""
        self.created = _int(meta.get("created"), self.created)
        self.topic = str(meta.get("topic") or "")
        self.topic_setter = str(meta.get("topic_setter") or "")
        self.topic_time = _int(meta.get("topic_time"), 0)
        self.flags = set(str(meta.get("flags") or "")) & set(FLAG_MODES)
        self.key = str(meta.get("key") or "")[:KEYLEN]
        self.limit = max(0, min(_int(meta.get("limit"), 0), MAX_LIMIT))
        bans = meta.get("bans")
        for entry in bans if isinstance(bans, list) else []:
            if isinstance(entry, list) and len(entry) == 3:
                ban = Ban.of(_with_shown_host(str(entry[0])), str(entry[1]), _int(entry[2], 0))
                self.bans[ban.folded] = ban

    def is_op(self, cid: int) -> bool:
        return "@" in self.members.get(cid, "")

    def can_talk(self, cid: int, folded_prefix: str) -> bool:
        """RFC 2812 3.3.1: +n keeps outsiders out, +m and bans silence non-voiced."""
        status = self.members.get(cid)
        if status is None and "n" in self.flags:
            return False
        if status:
            return True
        return "m" not in self.flags and not self.is_banned(folded_prefix)

    def is_banned(self, folded_prefix: str) -> bool:
        """Every ban, its key being its folded mask, tried with no Python
        loop around them: half the cost of a check of 100 usual bans."""
        return any(map(ban_match, self.bans, itertools.repeat(folded_prefix)))

    def is_hidden(self) -> bool:
        """+s (and +p) rooms are invisible to LIST, NAMES, WHO and WHOIS of outsiders."""
        return "s" in self.flags or "p" in self.flags

    def exists_for(self, cid: int) -> bool:
        """Whether client `cid` may learn that this room exists at all.

        RFC 2811 4.2.6: to a non-member the server acts as if a secret (+s)
        room did not exist, MODE excepted.  TOPIC, PART, KICK, INVITE and a
        refused PRIVMSG or NOTICE ask this and answer as for a missing room;
        LIST, NAMES, WHO and WHOIS leave the room out (`is_hidden`).
        """
        return "s" not in self.flags or cid in self.members

    def names_symbol(self) -> str:
        """The 353 symbol: '@' secret, '*' private, '=' public."""
        if "s" in self.flags:
            return "@"
        return "*" if "p" in self.flags else "="

    def mode_params(self, with_key: bool) -> list[str]:
        """'+nt' style string plus its parameters, for 324 RPL_CHANNELMODEIS."""
        letters = "".join(sorted(self.flags))
        params: list[str] = []
        if self.key:
            letters += "k"
            params.append(self.key if with_key else "*")
        if self.limit:
            letters += "l"
            params.append(str(self.limit))
        return ["+" + letters, *params]


@dataclass(frozen=True)
class ModeChange:
    adding: bool
    letter: str
    param: str = ""


@dataclass
class ParsedModes:
    changes: list[ModeChange] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)     # letters -> 472
    missing: list[str] = field(default_factory=list)     # letters without their parameter -> 461
    list_bans: bool = False                              # "b" without a mask: show the ban list


@dataclass
class Outcome:
    applied: list[ModeChange] = field(default_factory=list)
    errors: list[numerics.Reply] = field(default_factory=list)
    touched: set[int] = field(default_factory=set)       # cids whose status changed


def status_string(status: str) -> str:
    """Canonical order of a status: '@' before '+'."""
    return ("@" if "@" in status else "") + ("+" if "+" in status else "")


def highest_prefix(status: str) -> str:
    """The single prefix shown in NAMES and WHO (no multi-prefix)."""
    if "@" in status:
        return "@"
    return "+" if "+" in status else ""


def _takes_param(adding: bool, letter: str) -> bool:
    return letter in "bkov" or (letter == "l" and adding)


def parse_modes(modestring: str, params: list[str]) -> ParsedModes:
    """Split a room mode string and its parameters into changes.

    At most MAX_PARAM_MODES changes with a parameter are kept (005 MODES);
    '-k' may come without its key, 'b' without a mask lists the bans.
    """
    parsed = ParsedModes()
    queue = list(params)
    adding = True
    with_param = 0
    for letter in modestring:
        if letter in "+-":
            adding = letter == "+"
        elif letter not in KNOWN_MODES:
            if letter not in parsed.unknown:
                parsed.unknown.append(letter)
        elif not _takes_param(adding, letter):
            parsed.changes.append(ModeChange(adding, letter))
        elif letter == "b" and queue and not _mask_text(queue[0]):
            queue.pop(0)                # an empty mask would ban everyone: list instead
            parsed.list_bans = True
        elif queue:
            with_param += 1
            param = queue.pop(0)
            if with_param <= MAX_PARAM_MODES:
                parsed.changes.append(ModeChange(adding, letter, param))
        elif letter == "b":
            parsed.list_bans = True
        elif letter == "k" and not adding:
            parsed.changes.append(ModeChange(False, "k", "*"))
        else:
            parsed.missing.append(letter)
    return parsed


def _mask_text(mask: str) -> str:
    """The mask without whitespace and leading ':' (what normalize_mask completes)."""
    return "".join(mask.split()).lstrip(":")


def normalize_mask(mask: str) -> str:
    """Complete a ban mask to nick!user@host: 'bob' -> 'bob!*@*', 'u@h' -> '*!u@h',
    its host spelled as a client's is (`_with_shown_host`)."""
    mask = _mask_text(mask)[:MAX_MASK_CHARS]
    nick, bang, rest = mask.partition("!")
    if bang:
        user, _, host = rest.partition("@")
    elif "@" in mask:
        nick = "*"
        user, _, host = mask.partition("@")
    else:
        user = host = "*"
    return _with_shown_host(f"{nick or '*'}!{user or '*'}@{host or '*'}")


def _with_shown_host(mask: str) -> str:
    """A complete mask whose host part starts with ':' gets a 0 in front,
    as a client's host does (`session.client_host`: ::1 is shown 0::1), so
    that '*!*@::1', typed by hand or kept from before, bans the client
    from ::1 instead of nobody."""
    nick, _, rest = mask.partition("!")
    user, _, host = rest.partition("@")
    shown = session.client_host(host)
    return mask if shown == host else f"{nick}!{user}@{shown}"


def glob_match(pattern: str, text: str) -> bool:
    """IRC wildcard match ('*' any run, '?' one char), without backtracking.

    Both sides must already be casefolded.  The pattern becomes one regular
    expression run in C (`glob_regex`), so the cost stays small however
    hostile the mask: a WHO mask is matched against four fields of every
    user, and the step-by-step loop this replaced took milliseconds for
    '*' + 50 '?' + 'x' on each 100-character real name, for a WHO that
    stalled the broker.  Compiled once per mask (a WHO or LIST matches one
    mask against many texts in a row); bans compile nothing (`ban_match`).
    """
    return _cached_glob_regex(pattern).fullmatch(text) is not None


def names_server(target: str, server_name: str) -> bool:
    """Whether a server query's <target> names this server by itself: no
    target, its name, or a mask matching it (RFC 2812 3.4: "wildcard masks
    are usually valid").  A user's nick names it too, which only the
    broker can tell."""
    return not target or glob_match(protocol.casefold(target), protocol.casefold(server_name))


def glob_regex(pattern: str) -> re.Pattern:
    """The pattern as one compiled expression, for fullmatch (`_glob_source`)."""
    return re.compile(_glob_source(pattern), re.DOTALL)


def globs_regex(patterns: Iterable[str]) -> re.Pattern | None:
    """One expression, for fullmatch, that a text matches when any of the
    patterns does; None for no pattern.

    A LIST names up to about 250 masks in one line, and matching each in
    turn against each of 10000 rooms made a quarter million Python calls
    per thousand rooms: half a second of the broker for one LIST.  As
    alternatives of one expression the whole list is tried in C, once per
    room, and a mask given twice is tried once.
    """
    sources = list(dict.fromkeys(_glob_source(pattern) for pattern in patterns))
    if not sources:
        return None
    return re.compile("|".join(f"(?:{source})" for source in sources), re.DOTALL)


def _glob_source(pattern: str) -> str:
    """The pattern cut at its stars: the first piece matches at the start,
    the last at the end, and each piece between at its leftmost place after
    the one before (a later place could only leave less room for the rest),
    held there by an atomic group, so a failed match never tries another
    place: no backtracking, which a plain '.*' per star would do without
    end on '*a*a*a*a*b'."""
    pieces = ["".join("." if ch == "?" else re.escape(ch) for ch in piece)
              for piece in pattern.split("*")]
    if len(pieces) == 1:
        return pieces[0]
    middle = "".join(f"(?>.*?{piece})" for piece in pieces[1:-1])
    return f"{pieces[0]}{middle}.*{pieces[-1]}"


_cached_glob_regex = functools.lru_cache(maxsize=256)(glob_regex)


def ban_match(pattern: str, text: str) -> bool:
    """Whether a ban's casefolded mask matches a casefolded prefix, exactly
    as `glob_match` would, with no compiled expression to keep.

    A ban kept its own expression, some 6 KB for a 200-character mask of
    '*x' pieces: 100 bans in each of 10000 rooms could hold 6 GB.  A cache
    shared by all rooms instead could be thrashed by their bans (such a
    mask takes about half a millisecond to compile, and every unvoiced
    message in a room checks every ban).  Here the mask is cut at its
    stars when checked, and each piece is found in C: the first piece at
    the start, the last at the end, each one between at its leftmost place
    after the one before (`_glob_source` says why that is enough), by a str
    search, or bit-parallel when it has '?' between literal runs
    (`_find_marked`).  Most bans, '*!*@host' and 'nick!*@*', take a few
    steps.  A hostile mask takes a few steps per piece, and a piece is
    looked for only when the prefix (nick, user and address, some 130
    characters at most) is long enough for all the pieces, and each found
    uses some of it: tens of microseconds a ban at most, so that 100 such
    bans cost an unvoiced message or a join about what compiling one MODE
    line's four such masks did, and much less than a WHO with a mask on a
    full server.
    """
    if "?" in pattern:
        return _match_with_marks(pattern, text)
    head, star, last = pattern.rpartition("*")
    if not star:
        return text == pattern
    if not text.endswith(last):         # first: the host of most bans
        return False
    first, _, middle = head.partition("*")
    if not text.startswith(first) or len(text) < len(pattern) - pattern.count("*"):
        return False
    at, end = len(first), len(text) - len(last)
    for piece in filter(None, middle.split("*")):
        at = text.find(piece, at, end)
        if at < 0:
            return False
        at += len(piece)
    return True


def _match_with_marks(pattern: str, text: str) -> bool:
    """`ban_match` for a mask with '?': the same walk, a piece with '?'
    only around one literal run found by that run, one with '?' between
    runs by `_find_marked`."""
    if len(text) < len(pattern) - pattern.count("*"):
        return False
    first, star, rest = pattern.partition("*")
    if not star:
        return len(text) == len(pattern) and _fits(pattern, text, 0)
    middle, _, last = rest.rpartition("*")
    end = len(text) - len(last)
    if not (_fits(first, text, 0) and _fits(last, text, end)):
        return False
    at = len(first)
    for piece in filter(None, middle.split("*")):
        run = piece.strip("?")
        if "?" in run:
            at = _find_marked(piece, text, at, end)
        elif run:                               # (only '?': any characters, as many)
            lead = len(piece) - len(piece.lstrip("?"))
            found = text.find(run, at + lead, end - len(piece) + lead + len(run))
            at = found - lead if found >= 0 else -1
        if at < 0:
            return False
        at += len(piece)
    return at <= end


def _fits(piece: str, text: str, at: int) -> bool:
    """Whether a star-free piece ('?' any one character) matches the text
    from `at` to its end (the caller knows the text is long enough): the
    text's characters at the piece's other places, picked out in C and
    compared at once."""
    window = text[at:at + len(piece)]
    return "".join(itertools.compress(window, map("?".__ne__, piece))) == piece.replace("?", "")


def _find_marked(piece: str, text: str, at: int, end: int) -> int:
    """The leftmost place from `at` where a piece with '?' between literal
    runs matches inside text[:end], or -1, bit-parallel: the places where
    it matches are those where each of its characters is at its own
    distance, an AND of the text's places of each character (`_places`)
    shifted by that distance, done in C in a few steps however long the
    piece and however often its runs occur."""
    matches = functools.reduce(operator.and_, map(
        operator.rshift, map(_places(text).get, piece, _NONE), range(len(piece))))
    span = end - len(piece) - at + 1           # the places from `at` where it fits
    matches = matches >> at & (1 << span) - 1 if span > 0 else 0
    return (matches & -matches).bit_length() - 1 + at if matches else -1


_NONE = itertools.repeat(0)     # the places of a character the text lacks


@functools.lru_cache(maxsize=4)
def _places(text: str) -> dict[str, int]:
    """Each character of the text -> an int with bit i set where the text
    has it at i, and '?' (never a character of a mask's piece, always a
    wildcard) -> every bit: what `_find_marked` ANDs.  Kept for the last
    few texts, as all the bans of a room are checked against one prefix."""
    places = dict.fromkeys(text, 0)
    for index, char in enumerate(text):
        places[char] |= 1 << index
    places["?"] = (1 << len(text)) - 1
    return places


def valid_key(key: str) -> bool:
    """RFC 2812 key: 1 to 23 characters, no space, comma or line-breaking
    control char; a colon only after the first character (a leading one
    would read as the start of a trailing parameter)."""
    return (0 < len(key) <= KEYLEN and not key.startswith(":")
            and not any(ch in _KEY_FORBIDDEN for ch in key))


def parse_limit(text: str) -> int:
    """The +l parameter: a positive decimal integer, else 0."""
    if not text.isascii() or not text.isdigit():
        return 0
    value = int(text)
    return value if 0 < value <= MAX_LIMIT else 0


def apply_modes(room: Room, changes: list[ModeChange], resolve: Resolver,
                setter: str, now: int, bans_limit: int,
                mask_bytes: int = protocol.MAX_BODY_BYTES) -> Outcome:
    """Apply parsed changes to `room`; keep those that took effect, collect errors.

    A ban whose completed mask is longer than `mask_bytes` in UTF-8 is
    refused (696): the lines that carry it (the caller knows their heads)
    would cut it.  200 characters fit 512 bytes in ASCII, not in UTF-8: a
    mask of 200 e-acute was echoed cut, the members keeping a mask the room
    did not have, and its 367 line lost its setter and time.
    """
    outcome = Outcome()
    for change in changes:
        if change.letter == "b" and change.adding \
                and len(normalize_mask(change.param).encode()) > mask_bytes:
            outcome.errors.append(_mask_too_long(room, change.param, mask_bytes))
            continue
        applier = _APPLIERS.get(change.letter, _apply_flag)
        try:
            applied = applier(room, change, resolve, setter, now, bans_limit, outcome)
        except numerics.Reply as error:
            outcome.errors.append(error)
            continue
        if applied is not None:
            outcome.applied.append(applied)
    return outcome


# Of a mask refused as too long, the start its 696 shows: the whole one
# would push the text, which says why, off the line.
SHOWN_MASK_BYTES = 32


def _mask_too_long(room: Room, mask: str, mask_bytes: int) -> numerics.Reply:
    shown = protocol.truncate_utf8(_mask_text(mask).encode(), SHOWN_MASK_BYTES).decode()
    return numerics.Reply(numerics.ERR_INVALIDMODEPARAM, room.name, "b", shown or "*",
                          text=f"Ban mask too long: at most {mask_bytes} bytes here")


# RFC 2811 4.2.6: a room is never +p and +s at once; secret wins.
_EXCLUSIVE_FLAGS = {"s": "p", "p": "s"}


def _apply_flag(room: Room, change: ModeChange, _resolve: Resolver, _setter: str,
                _now: int, _bans: int, outcome: Outcome) -> ModeChange | None:
    if (change.letter in room.flags) == change.adding:
        return None
    other = _EXCLUSIVE_FLAGS.get(change.letter)
    if change.adding and other in room.flags:
        if change.letter == "p":
            return None                     # +p on a secret room changes nothing
        room.flags.discard(other)           # +s replaces +p, said as -p ...
        earlier = ModeChange(True, other)
        if earlier in outcome.applied:      # ... unless this very line set it
            outcome.applied.remove(earlier)
        else:
            outcome.applied.append(ModeChange(False, other))
    if change.adding:
        room.flags.add(change.letter)
    else:
        room.flags.discard(change.letter)
    return ModeChange(change.adding, change.letter)


def _apply_status(room: Room, change: ModeChange, resolve: Resolver, _setter: str,
                  _now: int, _bans: int, outcome: Outcome) -> ModeChange | None:
    found = resolve(change.param)
    if found is None:
        raise numerics.Reply(numerics.ERR_NOSUCHNICK, change.param)
    cid, nick = found
    if cid not in room.members:
        raise numerics.Reply(numerics.ERR_USERNOTINCHANNEL, nick, room.name)
    old = room.members[cid]
    mark = STATUS_PREFIX[change.letter]
    new = status_string(old + mark if change.adding else old.replace(mark, ""))
    if new == old:
        return None
    room.members[cid] = new
    outcome.touched.add(cid)
    return ModeChange(change.adding, change.letter, nick)


def _apply_ban(room: Room, change: ModeChange, _resolve: Resolver, setter: str,
               now: int, bans_limit: int, _outcome: Outcome) -> ModeChange | None:
    mask = normalize_mask(change.param)
    folded = protocol.casefold(mask)
    if not change.adding:
        ban = room.bans.pop(folded, None)
        return None if ban is None else ModeChange(False, "b", ban.mask)
    if folded in room.bans:
        return None
    if len(room.bans) >= bans_limit:
        raise numerics.Reply(numerics.ERR_BANLISTFULL, room.name, "b")   # RFC 2812: the mode
    ban = Ban.of(mask, setter, now)
    room.bans[ban.folded] = ban
    return ModeChange(True, "b", mask)


def _apply_key(room: Room, change: ModeChange, *_: object) -> ModeChange | None:
    if not change.adding:
        if not room.key:
            return None
        room.key = ""
        return ModeChange(False, "k", "*")
    if not valid_key(change.param):
        raise numerics.Reply(numerics.ERR_INVALIDKEY, room.name)
    if change.param == room.key:
        return None
    room.key = change.param
    return ModeChange(True, "k", change.param)


def _apply_limit(room: Room, change: ModeChange, *_: object) -> ModeChange | None:
    if not change.adding:
        if not room.limit:
            return None
        room.limit = 0
        return ModeChange(False, "l")
    limit = parse_limit(change.param)
    if not limit:
        raise numerics.Reply(numerics.ERR_INVALIDMODEPARAM, room.name, "l", change.param or "*",
                             text="Invalid limit, must be a positive integer")
    if limit == room.limit:
        return None
    room.limit = limit
    return ModeChange(True, "l", str(limit))


_APPLIERS: dict[str, Callable[..., ModeChange | None]] = {
    "o": _apply_status,
    "v": _apply_status,
    "b": _apply_ban,
    "k": _apply_key,
    "l": _apply_limit,
}


def mode_line_params(applied: list[ModeChange]) -> list[str]:
    """'+ov-b', 'a', 'b', 'mask': the applied changes as MODE parameters."""
    letters: list[str] = []
    params: list[str] = []
    sign = ""
    for change in applied:
        wanted = "+" if change.adding else "-"
        if wanted != sign:
            letters.append(wanted)
            sign = wanted
        letters.append(change.letter)
        if change.param:
            params.append(change.param)
    return ["".join(letters), *params]


def mode_line_groups(applied: list[ModeChange], room_bytes: int) -> list[list[ModeChange]]:
    """The applied changes cut into groups whose MODE parameters fit
    `room_bytes` each, so no echo is cut short (a member would keep a ban
    mask that does not exist), with at most MAX_PARAM_MODES parameters
    each (005 MODES), as a client may expect of any MODE line: a room's
    stored modes given back at once (a key, a limit and its bans) are more.
    A change costs its letter, perhaps a sign, and its parameter with a
    space."""
    groups: list[list[ModeChange]] = []
    group: list[ModeChange] = []
    used = with_param = 0
    for change in applied:
        cost = 2 + (len(change.param.encode()) + 1 if change.param else 0)
        if group and (used + cost > room_bytes
                      or (change.param and with_param == MAX_PARAM_MODES)):
            groups.append(group)
            group, used, with_param = [], 0, 0
        group.append(change)
        used += cost
        with_param += bool(change.param)
    if group:
        groups.append(group)
    return groups


def _int(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
