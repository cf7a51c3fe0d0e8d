"""The chat model behind the full-screen interface: buffers and routing.

Pure, no curses: `ChatModel.apply(event)` puts each UiEvent into the right
buffer (status, a room, a private conversation), keeps each room's members,
topic and unread count, and follows our own joins, parts and nick changes.
The curses view (`tui`) only draws what is here, so all of this is tested
with plain objects.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import time
from typing import Callable

from forkchat.client import connection, events, ircmsg, layout, slash

SCROLLBACK_LINES = 2000
STATUS_NAME = "(status)"
MEMBER_PREFIXES = "~&@%+"
# A word starting with one of these completes to a room name, not a nick:
# the room prefixes no word of talk starts with (`+1` and `!` do).
ROOM_COMPLETION_PREFIXES = "#&"
TALK_KINDS = frozenset(["msg", "action", "notice", "own", "ownaction", "ownnotice"])
# Talk that makes a buffer unread: someone else's, not our own echo.
UNREAD_KINDS = frozenset(["msg", "action", "notice"])
# A /who or /names answer of more rows than this goes to buffer 1, as
# /list's does: the WHO of a room of 1500 members pushed most of that
# room's history out of the buffer it was typed in.  Up to this many rows
# are held until the answer's end (so memory stays bounded) and then
# shown where it was typed, as they always were.
BIG_ANSWER_ROWS = 50


# NAMES lines sent and not yet answered that are followed, at most: a
# server that answers none (an unknown command) must not keep them forever.
NAMES_ASKED_MAX = 8
# Member lists of rooms the user did not ask for that are held at once, at
# most (the 366 ending each may never come: a never-ending stream of 353s,
# each for another room, held them all); past it the oldest is shown.
NAMES_HELD_MAX = 16


# Names a room's member list keeps, at most: the biggest rooms of the big
# networks have some tens of thousands, and a never-ending NAMES (or JOINs
# of ever new nicks) from an odd server grew it, and memory, without end.
MEMBERS_MAX = 100_000


# Private conversations that others' messages open, at most: past it, a
# message from someone new goes to buffer 1, marked [private].  Messages
# from ever new nicks (a spam wave, an odd server) opened a buffer each,
# without end, and every message and redraw went over them all.
PRIVATE_BUFFERS_MAX = 100


# Characters a nick can hold (RFC 2812 2.3.1, and ~, the fold of ^): a
# name inside a longer run of them is another word, not a mention.
_NICK_CHARS = r"A-Za-z0-9\[\]\\`_^{|}~-"


def names(text: str, nick: str) -> bool:
    """True when `text` names `nick` as a word (`bob:`, `@bob`, `hi Bob`),
    not inside another one: a short nick like `al` was found in `really`,
    and every such line was bold and starred as if it called us."""
    if not nick:
        return False
    pattern = rf"(?<![{_NICK_CHARS}]){re.escape(ircmsg.casefold(nick))}(?![{_NICK_CHARS}])"
    return re.search(pattern, ircmsg.casefold(text), re.IGNORECASE) is not None


def list_note(rows: int) -> str:
    """Said where /list was typed once its rows are in buffer 1; past what
    a buffer keeps, also how to ask for fewer (forkchat and most servers
    take masks and member counts)."""
    rooms = "1 room" if rows == 1 else f"{rows} rooms"
    note = f"/list: {rooms}, listed in buffer 1 (Alt+1)"
    if rows >= SCROLLBACK_LINES:
        note += (f"; it keeps the last {SCROLLBACK_LINES} lines: /list *word* or"
                 " /list >N (rooms of more than N members) lists fewer")
    return note


def answer_note(command: str, rows: int, members: int = 0) -> str:
    """Said where a big /who or /names was typed once its rows are in
    buffer 1 (`/who #big: 1500 rows, listed in buffer 1 (Alt+1)`)."""
    count = f"{rows} row" if rows == 1 else f"{rows} rows"
    if members:
        count = f"{members} members in {count}"
    return f"{command}: {count}, listed in buffer 1 (Alt+1)"


@dataclasses.dataclass
class Line:
    """One entry in a buffer; kind as UiEvent.kind, or own/ownaction/info."""

    time: float
    kind: str
    nick: str = ""
    text: str = ""
    # The view's memo of how it lays this line out (where its rows begin
    # at the last width): wrapping a 64 KB line at every redraw made
    # typing lag.  Not part of the line's value.
    wrapped: layout.Memo | None = dataclasses.field(default=None, repr=False, compare=False)


@dataclasses.dataclass(eq=False)
class Buffer:
    name: str
    lines: collections.deque[Line] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=SCROLLBACK_LINES))
    members: dict[str, str] = dataclasses.field(default_factory=dict)
    topic: str = ""
    unread: int = 0
    highlight: bool = False
    joined: bool = False
    scroll: int = 0     # rows of the view below the bottom of the pane (reading back)
    # Lines added under a scrolled-back view since it was last drawn: the
    # view adds their rows to `scroll` (only it knows how many rows a line
    # wraps into), so that what is being read back stays still.
    below: int = 0

    @property
    def is_room(self) -> bool:
        return ircmsg.is_room(self.name)

    def add_member(self, nick: str) -> None:
        """A member joined or was listed; none past MEMBERS_MAX."""
        if len(self.members) < MEMBERS_MAX:
            self.members[ircmsg.casefold(nick)] = nick


@dataclasses.dataclass(eq=False)
class Answer:
    """A /who or /names answer on its way: where it was typed, its first
    rows (held until its end shows whether it is big), and its counts."""

    buffer: Buffer
    command: str        # as the note names it: `/names #Room`, `/who`
    held: list[Line] = dataclasses.field(default_factory=list)
    rows: int = 0
    members: int = 0
    # A NAMES the user sent: the folded rooms whose 366 is still to come
    # ("*" for a NAMES of every room, which one 366 for "*" ends), and the
    # rooms whose rows came.
    awaits: set[str] = dataclasses.field(default_factory=set)
    listed: set[str] = dataclasses.field(default_factory=set)


class ChatModel:
    """Buffers and what goes in them: pure, unit-testable."""

    def __init__(self) -> None:
        self.buffers: list[Buffer] = [Buffer(STATUS_NAME)]
        self.active = 0
        self.me = ""
        self.pending_switch: set[str] = set()
        self._names_quiet: set[str] = set()
        self._names_seen: set[str] = set()
        self._who_rows = False                 # a 352 came since the last 315
        self._list_rows = 0                    # 322s since the last 323
        # /who and /names answers under way: "who", "names #room" folded,
        # or "asked N" for the Nth NAMES the user sent (see `sent`).
        self._answers: dict[str, Answer] = {}
        self._asked = 0

    # ---- buffers -----------------------------------------------------------

    @property
    def current(self) -> Buffer:
        return self.buffers[self.active]

    @property
    def target(self) -> str:
        """Where a plain line goes: the room or nick, '' for status."""
        return "" if self.active == 0 else self.current.name

    def find(self, name: str) -> Buffer | None:
        folded = ircmsg.casefold(name)
        return next((b for b in self.buffers if ircmsg.casefold(b.name) == folded), None)

    def open(self, name: str) -> Buffer:
        buffer = self.find(name)
        if buffer is None:
            buffer = Buffer(name)
            self.buffers.append(buffer)
        return buffer

    def switch(self, buffer: Buffer) -> None:
        self.active = self.buffers.index(buffer)
        buffer.unread, buffer.highlight = 0, False

    def switch_to(self, spec: str) -> bool:
        """/switch: by number (1 = status) or by name."""
        if spec.isdigit():
            index = int(spec) - 1
            if 0 <= index < len(self.buffers):
                self.switch(self.buffers[index])
                return True
            return False
        buffer = self.find(spec)
        if buffer is not None:
            self.switch(buffer)
        return buffer is not None

    def cycle(self, step: int) -> None:
        self.switch(self.buffers[(self.active + step) % len(self.buffers)])

    def close(self, buffer: Buffer) -> None:
        if buffer is self.buffers[0]:
            return
        index = self.buffers.index(buffer)
        self.buffers.remove(buffer)
        if self.active >= index:
            self.active = max(0, self.active - 1)

    def add(self, buffer: Buffer, line: Line) -> None:
        buffer.lines.append(line)
        if buffer is not self.current and line.kind in UNREAD_KINDS:
            buffer.unread += 1
            mentioned = names(line.text, self.me)
            buffer.highlight = buffer.highlight or mentioned or not buffer.is_room
        elif buffer is self.current and buffer.scroll:
            buffer.below += 1  # keep the view still while reading back

    def info(self, text: str, buffer: Buffer | None = None, kind: str = "info") -> None:
        for part in text.split("\n"):
            self.add(buffer or self.current, Line(time.time(), kind, text=part))

    def members_everywhere(self, nick: str) -> list[Buffer]:
        folded = ircmsg.casefold(nick)
        return [b for b in self.buffers if folded in b.members
                or (not b.is_room and ircmsg.casefold(b.name) == folded)]

    def completions(self, word: str, at_start: bool) -> list[str]:
        """Commands after a leading /, the names of our rooms for a word
        starting with # or & (`/switch #ro`, with 30 rooms open, had only
        nicks to offer), else the nicks here."""
        if word.startswith("/"):
            return slash.command_names() if at_start else []
        if word[:1] in ROOM_COMPLETION_PREFIXES:
            return [buffer.name for buffer in self.buffers if buffer.is_room]
        nicks = list(self.current.members.values())
        if self.active and not self.current.is_room:
            nicks.append(self.current.name)
        return [n for n in nicks if ircmsg.casefold(n) != ircmsg.casefold(self.me)]

    def sent(self, line: str) -> str | None:
        """A line the user sent: a NAMES (`/names #a,#b`, `/raw NAMES` for
        every room) makes its rows, whichever rooms they list, one answer,
        judged as one against BIG_ANSWER_ROWS.  Judged room by room, the
        NAMES of 300 rooms of 10 members each filled the room it was typed
        in; and the rows of a NAMES of every room, ended by one 366 for
        `*` and none for any room, were held and never shown at all.
        Returns the answer's key for `answered`, None for other lines."""
        names = ircmsg.names_asked(line)
        if names is None:
            return None
        query, rooms = names
        asked = [key for key in self._answers if key.startswith("asked ")]
        for key in asked[:max(0, len(asked) - NAMES_ASKED_MAX + 1)]:
            self._answer_end(key)
        self._asked += 1
        self._answers[f"asked {self._asked}"] = Answer(
            self.current, f"/names {query}".rstrip(), awaits=rooms)
        return f"asked {self._asked}"

    def answered(self, key: str) -> None:
        """The server has answered the user's NAMES `key` as far as it will
        (a PING sent behind it came back): the ends still awaited are not
        coming, and what came is shown.  Many servers (solanum, ratbox:
        Libera, OFTC) list only the first room of `NAMES #a,#b`, and a bad
        name gets an error and no end: the rows of #a were held for the end
        of #b, never shown, and the answer stayed open.  An answer of
        nothing at all (a server that ends each room of a NAMES of every
        room with its own 366 and has none to list) says so: it was
        silence."""
        answer = self._answers.get(key)
        if answer is None:
            return
        if not answer.rows and not answer.held:
            answer.held.append(Line(time.time(), "info", text=f"{answer.command}: no one listed"))
        self._end_asked(key)

    def _asked_key(self, folded: str, rows: bool) -> str | None:
        """The user's NAMES that rows of room `folded` (or its 366) answer:
        the first that names the room, else the first of every room, for
        rows and for the end of a room it listed; None when no NAMES of
        the user's asks for it.  Some servers (miniircd) end each room of
        a NAMES of every room with its own 366, and none for `*`: each
        end was shown apart, `#a: End of /NAMES list` among the rows."""
        asked = [(key, answer) for key, answer in self._answers.items()
                 if key.startswith("asked ")]
        named = next((key for key, answer in asked if folded in answer.awaits), None)
        if named is not None:
            return named
        return next((key for key, answer in asked
                     if "*" in answer.awaits and (rows or folded in answer.listed)), None)

    # ---- routing events ------------------------------------------------------

    def apply(self, event: events.UiEvent) -> None:
        ROUTES.get(event.kind, ChatModel._to_active)(self, event)

    def _line(self, event: events.UiEvent) -> Line:
        text = event.text if event.kind in TALK_KINDS else events.describe(event)
        return Line(event.time, event.kind, event.nick, text)

    def _talk(self, event: events.UiEvent) -> None:
        """Talk goes to its room or conversation.  A private CTCP request
        (VERSION, TIME ...: answered or not, nothing to read) is noted in
        buffer 1 and opens no conversation: some networks' bots ask every
        client that connects, and each left a buffer behind.  Past
        PRIVATE_BUFFERS_MAX conversations, one from someone new goes to
        buffer 1 too."""
        buffer: Buffer | None
        if event.private and event.kind == "ctcp":
            buffer = self.buffers[0]
        elif event.private and event.kind == "notice" and self.find(event.buffer) is None:
            self.add(self.current, self._private_notice(event))
            return
        elif event.private and self._private_room_for(event.buffer):
            buffer = self.open(event.buffer)
        elif event.private:
            self.add(self.buffers[0], self._private_notice(event))   # marked [private]
            return
        else:
            buffer = self.find(event.buffer)
        if buffer is None:
            self.add(self.buffers[0], self._roomless(event))
            return
        self.add(buffer, self._line(event))

    def _private_room_for(self, nick: str) -> bool:
        """Whether a private message from `nick` may have a buffer: it has
        one, or fewer than PRIVATE_BUFFERS_MAX conversations are open."""
        if self.find(nick) is not None:
            return True
        opened = sum(1 for buffer in self.buffers[1:] if not buffer.is_room)
        return opened < PRIVATE_BUFFERS_MAX

    def _private_notice(self, event: events.UiEvent) -> Line:
        """A private notice from someone we have no conversation with
        (NickServ, a bot, a CTCP reply) goes where we are, as irssi shows
        notices in the active window, marked `[private]` as line mode marks
        it: it opened a conversation buffer with each service that spoke,
        which a notice (never to be answered) does not call for."""
        line = self._line(event)
        line.text = f"[private] {line.text}"
        return line

    def _roomless(self, event: events.UiEvent) -> Line:
        """Talk in a room that has no buffer (closed by our PART, or by
        /part after a kick, while lines sent to it were on their way): in
        buffer 1, marked `(to #room)` as our own talk elsewhere is; it read
        as said to no room at all.  No buffer is reopened for it: a room's
        buffer closes only once we are out of it, and a reopened one would
        stand for a room we are not in."""
        line = self._line(event)
        marked = rf"\(to [{re.escape(MEMBER_PREFIXES)}]+{re.escape(event.buffer)}\) "
        if not re.match(marked, line.text, re.IGNORECASE):    # STATUSMSG is marked already
            line.text = f"(to {event.buffer}) {line.text}"
        return line

    def own_talk(self, kind: str, target: str, text: str) -> None:
        """Echo what we sent (servers do not send it back).

        A room we have no buffer for (`/msg #other hi` without being in it)
        is echoed where we are, marked `(to #other)`, so that it does not
        read as said to the current room; so is a notice to a nick we have
        no conversation with (a notice opens none).  One to a room's
        operators (`/msg @#ops`) goes to the room, marked `(to @#ops)`, as
        theirs do, not to a conversation named `@#ops`."""
        status, room = events.status_target(target)
        if status and self.find(room) is not None:
            target, text = room, f"(to {status}{room}) {text}"
        opens = kind != "ownnotice" and not ircmsg.is_room(target) and not status
        buffer = self.open(target) if opens else self.find(target)
        if buffer is None:
            buffer, text = self.current, f"(to {target}) {text}"
        self.add(buffer, Line(time.time(), kind, self.me, text))

    def _join(self, event: events.UiEvent) -> None:
        folded = ircmsg.casefold(event.buffer)
        buffer = self.open(event.buffer) if event.own else self.find(event.buffer)
        if buffer is None:
            return
        if event.own:
            buffer.joined = True
            self._names_quiet.add(folded)
            if folded in self.pending_switch:
                self.pending_switch.discard(folded)
                self.switch(buffer)
        buffer.add_member(event.nick)
        self.add(buffer, self._line(event))

    def _part(self, event: events.UiEvent) -> None:
        buffer = self.find(event.buffer)
        if buffer is None:
            return
        if event.own:
            self.close(buffer)
            self.info(events.describe(event), self.buffers[0])
            return
        buffer.members.pop(ircmsg.casefold(event.nick), None)
        self.add(buffer, self._line(event))

    def _kick(self, event: events.UiEvent) -> None:
        buffer = self.find(event.buffer)
        if buffer is not None:
            buffer.members.pop(ircmsg.casefold(event.other), None)
            buffer.joined = buffer.joined and not event.own
            self.add(buffer, self._line(event))

    def _quit(self, event: events.UiEvent) -> None:
        for buffer in self.members_everywhere(event.nick):
            buffer.members.pop(ircmsg.casefold(event.nick), None)
            self.add(buffer, self._line(event))

    def _nick(self, event: events.UiEvent) -> None:
        touched = self.members_everywhere(event.nick)
        for buffer in touched:
            if buffer.members.pop(ircmsg.casefold(event.nick), None) is not None:
                buffer.members[ircmsg.casefold(event.other)] = event.other
            if not buffer.is_room and buffer is not self.buffers[0]:
                buffer.name = event.other
            self.add(buffer, self._line(event))
        if event.own:
            self.me = event.other
            if not touched:
                self.add(self.buffers[0], self._line(event))

    def _topic(self, event: events.UiEvent) -> None:
        buffer = self.find(event.buffer)
        if buffer is not None:
            buffer.topic = event.text
        self.add(buffer or self.current, self._line(event))

    def _names(self, event: events.UiEvent) -> None:
        folded = ircmsg.casefold(event.buffer)
        buffer = self.find(event.buffer)
        if buffer is not None:
            if folded not in self._names_seen:
                buffer.members.clear()
                self._names_seen.add(folded)
            for name in event.names:
                buffer.add_member(name.lstrip(MEMBER_PREFIXES))
        if folded not in self._names_quiet:
            key = self._asked_key(folded, rows=True)
            if key is not None:
                self._answers[key].listed.add(folded)
            else:
                key = f"names {folded}"
                self._make_room_for(key)
            self._answer_row(key, f"/names {event.buffer}", self._line(event), len(event.names))

    def _make_room_for(self, key: str) -> None:
        """A member list not asked for by a NAMES of the user's (`/names`
        in a room sends NAMES #room, asked): past NAMES_HELD_MAX of them
        under way, the oldest is shown as it is, no longer waiting for its
        end, so that a stream of 353s that never ends holds a bounded lot."""
        if key in self._answers:
            return
        held = [name for name in self._answers if name.startswith("names ")]
        for name in held[:max(0, len(held) - NAMES_HELD_MAX + 1)]:
            self._answer_end(name)

    def _names_end(self, event: events.UiEvent) -> None:
        """Quiet after the member list; the whole answer when there was none.
        Of a NAMES of the user's, the end of the last room it awaits ends it."""
        folded = ircmsg.casefold(event.buffer)
        key = None if folded in self._names_quiet else self._asked_key(folded, rows=False)
        answer = self._answers.get(key or "")
        if answer is not None:
            if folded not in answer.listed and not (folded == "*" and answer.rows):
                self._answer_row(key or "", "", self._line(event), counted=False)
            answer.awaits.discard(folded)
            if not answer.awaits:
                self._end_asked(key or "")
        elif folded not in self._names_quiet and f"names {folded}" not in self._answers:
            self._to_active(event)     # no rows came: the end is the whole answer
        self._answer_end(f"names {folded}")
        self._forget_names(folded)

    def _forget_names(self, folded: str) -> None:
        """A room's member list is over: the next one replaces its members."""
        self._names_seen.discard(folded)
        self._names_quiet.discard(folded)

    def _end_asked(self, key: str) -> None:
        """The user's NAMES is answered: the rooms it listed are done too
        (a NAMES of every room ends with one 366, for `*`)."""
        answer = self._answers[key]
        for room in answer.listed:
            self._forget_names(room)
        self._answer_end(key)

    def _who(self, event: events.UiEvent) -> None:
        self._who_rows = True
        self._answer_row("who", "/who", self._line(event))

    def _who_end(self, event: events.UiEvent) -> None:
        """Quiet after WHO rows; the whole answer when there were none."""
        if not self._who_rows:
            self._to_active(event)
        self._who_rows = False
        self._answer_end("who", f"/who {event.buffer}")

    def _answer_row(self, key: str, command: str, line: Line, members: int = 0,
                    counted: bool = True) -> None:
        """One row of a /who or /names answer: held while the answer is
        small, in buffer 1 once it is past BIG_ANSWER_ROWS (the held rows
        first, in order).  Where it was typed is the buffer current at its
        first row.  A line not `counted` (the end of an empty room's list
        in the answer to `/names #a,#b`) goes along but is no row."""
        answer = self._answers.setdefault(key, Answer(self.current, command))
        answer.rows += counted
        answer.members += members
        if answer.rows <= BIG_ANSWER_ROWS:
            answer.held.append(line)
            return
        for held in answer.held:
            self.add(self.buffers[0], held)
        answer.held.clear()
        self.add(self.buffers[0], line)

    def _answer_end(self, key: str, command: str = "") -> None:
        """A small answer's rows go where it was typed, as they always
        did; a big one's are in buffer 1 already, and where it was typed
        one line says how many (`command` names a WHO's mask, which only
        its end says).  A buffer closed meanwhile: the current."""
        answer = self._answers.pop(key, None)
        if answer is None:
            return
        command = command or answer.command
        buffer = answer.buffer if answer.buffer in self.buffers else self.current
        for held in answer.held:
            self.add(buffer, held)
        if answer.rows > BIG_ANSWER_ROWS and buffer is not self.buffers[0]:
            members = answer.members if key != "who" else 0
            self.info(answer_note(command, answer.rows, members), buffer)

    def _list(self, event: events.UiEvent) -> None:
        """A /list row goes to buffer 1, as irssi puts it in its status
        window: in the buffer where /list was typed, a server of more rooms
        than a buffer keeps lines pushed that room's whole history out."""
        self._list_rows += 1
        self._to_status(event)

    def _list_end(self, event: events.UiEvent) -> None:
        """After rows, where /list was typed: how many and where they are.
        With none (nothing matched, or a 263 before it) the end is the
        whole answer, shown there, as an empty /names is."""
        rows, self._list_rows = self._list_rows, 0
        if not rows:
            self._to_active(event)
            return
        self._to_status(event)
        if self.current is not self.buffers[0]:
            self.info(list_note(rows))

    def _status(self, event: events.UiEvent) -> None:
        """Link news goes to the status buffer and to every room.  An
        answer cut off by the disconnection shows what came of it first."""
        if event.other == connection.STATUS_DISCONNECTED:
            for key in list(self._answers):
                self._answer_end(key)
        for buffer in self.buffers:
            if buffer is self.buffers[0] or buffer.joined:
                self.add(buffer, self._line(event))
        if event.other == connection.STATUS_DISCONNECTED:
            self._list_rows = 0     # an answer cut off: the next /list counts anew
            for buffer in self.buffers:
                buffer.joined = False

    def _to_status(self, event: events.UiEvent) -> None:
        self.add(self.buffers[0], self._line(event))

    def _to_active(self, event: events.UiEvent) -> None:
        self.add(self.current, self._line(event))

    def _error(self, event: events.UiEvent) -> None:
        """Shown where we are, and in the room it is about (a refused rejoin
        says there why the room's buffer is no longer joined)."""
        self._to_active(event)
        buffer = self.find(event.buffer) if event.buffer else None
        if buffer is not None and buffer is not self.current:
            self.add(buffer, self._line(event))

    def _mode(self, event: events.UiEvent) -> None:
        self.add(self.find(event.buffer) or self.buffers[0], self._line(event))


ROUTES: dict[str, Callable[[ChatModel, events.UiEvent], None]] = {
    "msg": ChatModel._talk, "action": ChatModel._talk, "notice": ChatModel._talk,
    "ctcp": ChatModel._talk, "join": ChatModel._join, "part": ChatModel._part,
    "kick": ChatModel._kick, "quit": ChatModel._quit, "nick": ChatModel._nick,
    "topic": ChatModel._topic, "names": ChatModel._names,
    "names_end": ChatModel._names_end, "status": ChatModel._status,
    "who": ChatModel._who, "who_end": ChatModel._who_end,
    "list": ChatModel._list, "list_end": ChatModel._list_end,
    "server": ChatModel._to_status, "mode": ChatModel._mode,
    "error": ChatModel._error,
}
