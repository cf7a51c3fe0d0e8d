"""What the client shows: IRC messages translated into UiEvents, and text.

`translate(msg, me)` is pure: one parsed IRC line in, zero or more UiEvents
out, with no sockets and no screen.  Both front ends (the curses interface and
line mode) consume the same events, and `line_text()` renders one as the
single line that line mode prints, e.g. `12:05 <alice> hello`.  Text coming
from other people is stripped of control characters here, at one edge, so an
escape sequence sent by someone can never reach a terminal.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import time
from typing import Callable

from forkchat.client import ircmsg

# Unicode's bidirectional controls: the embeddings and overrides (LRE RLE PDF
# LRO RLO), the isolates (LRI RLI FSI PDI) and the marks (LRM RLM ALM).  In a
# nick or a message they reorder the rest of the line as the terminal shows
# it ("Trojan Source"): `<mallory> ` with an RLO and reversed text can read
# as a line said by someone else.
BIDI_CONTROLS = "\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c"
# Unicode's LINE and PARAGRAPH SEPARATOR: line breaks to str.splitlines()
# and other Unicode-aware readers of line mode's output, where a message
# holding one read as two events, the second made up by its sender
# (`hi<U+2028>12:05 <admin> ...`).  (NEL, U+0085, is a C1 control.)
LINE_SEPARATORS = "\u2028\u2029"
# mIRC colour/format codes, then any other C0/C1 control, DEL, bidi control
# or line separator.
_FORMATTING = re.compile(r"\x03(\d{1,2}(,\d{1,2})?)?|\x04[0-9a-fA-F]{0,6}"
                         r"|[\x00-\x1f\x7f\x80-\x9f" + BIDI_CONTROLS + LINE_SEPARATORS + "]")
# The member prefixes that may stand before a room's name as a message's
# target (STATUSMSG: to the room's operators, voiced ...).
_STATUS_TARGET = re.compile(r"[~&@%+]+(?=[#&])")
# RPL_TRYAGAIN (263), a scan refused for now (forkchat's queue was full or
# it waited 30 s), answers the command just typed: shown where it was typed,
# as the 4xx refusals are, not in the status buffer with the server's news.
_REFUSAL_NUMERICS = frozenset([263])
_SERVER_TEXT_NUMERICS = frozenset(
    list(range(1, 100)) + list(range(250, 267)) + [372, 375, 376, 422]) - _REFUSAL_NUMERICS
_SILENT_NUMERICS = frozenset([318, 321, 329, 333, 369])
# Server text whose counts are repeated in the text itself (RPL_LOCALUSERS,
# RPL_GLOBALUSERS: `1 1 :Current local users 1, max 1`): the text alone.
_TEXT_ONLY_NUMERICS = frozenset([265, 266])
# RPL_ENDOFNAMES, RPL_ENDOFWHO: the end of a list, shown when it was empty.
_LIST_ENDS = {366: "names_end", 315: "who_end"}
# RPL_LIST and RPL_LISTEND: a /list's rows and end, kinds of their own so
# that the full-screen interface can put them in buffer 1 (see buffers).
_ROOM_LIST = {322: "list", 323: "list_end"}
# Refusals whose text does not say what was refused (`Password incorrect`,
# forkchat's `Too soon after a failed OPER attempt ...`): the command they
# answer.  After registration 464 and 491 only ever answer OPER.
_REFUSED_COMMAND = {464: "OPER", 491: "OPER"}
# The parameters without which a command says nothing: a bare `NICK` is the
# tutorial port's greeting to a client pointed at it, and was shown as
# `*  is now known as ` before the server's refusal.
_REQUIRED_PARAMS = {"PRIVMSG": 2, "NOTICE": 2, "JOIN": 1, "PART": 1, "NICK": 1,
                    "KICK": 2, "TOPIC": 1, "MODE": 1, "INVITE": 2}


@dataclasses.dataclass(frozen=True)
class UiEvent:
    """One thing to show.

    kind is one of: msg action notice join part quit nick kick topic mode
    invite names names_end who who_end list list_end reply server error
    status ctcp.  The
    *_end kinds close a NAMES or WHO list: shown only when the list was
    empty, so that an answer with no rows is not silence.  buffer is the
    room or the query partner it belongs to ("" = status/active buffer).
    other holds a second name (new nick, kicked nick, CTCP argument).
    """

    kind: str
    time: float
    buffer: str = ""
    nick: str = ""
    text: str = ""
    other: str = ""
    private: bool = False
    own: bool = False
    names: tuple[str, ...] = ()


def sanitize(text: str) -> str:
    """Drop IRC formatting codes, control characters and bidirectional
    controls from remote text.

    A tab becomes a space first: `df` or TSV output piped into a room kept
    its columns apart with tabs, and dropping them glued the words together.
    """
    return _FORMATTING.sub("", text.replace("\t", " "))


def message_time(msg: ircmsg.Message) -> float:
    """The server-time tag when the server sends one, else now."""
    stamp = msg.tags.get("time", "")
    if stamp:
        try:
            return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    return time.time()


def _event(kind: str, msg: ircmsg.Message, **fields: object) -> UiEvent:
    """Build an event stamped with the message's time, remote text cleaned."""
    for key in ("text", "other", "nick", "buffer"):
        if isinstance(fields.get(key), str):
            fields[key] = sanitize(fields[key])  # type: ignore[arg-type]
    return UiEvent(kind, message_time(msg), **fields)  # type: ignore[arg-type]


def _same(a: str, b: str) -> bool:
    return ircmsg.casefold(a) == ircmsg.casefold(b)


def _talk(kind: str, msg: ircmsg.Message, me: str) -> list[UiEvent]:
    """PRIVMSG/NOTICE: a room message, a private one, an action or a CTCP.

    One to a room's operators (or voiced: `@#room`, `+#room`, the servers'
    STATUSMSG) belongs to the room, marked `(to @#room)`: read as sent to a
    nick, it opened a private conversation with its sender, as if said to
    us alone (ChanServ's notices to a room's operators, on many networks).
    """
    status, target = status_target(msg.param(0))
    text = _marked(msg.param(1), f"(to {status}{target}) ") if status else msg.param(1)
    private = not ircmsg.is_room(target)
    own = _same(msg.nick, me)
    if "!" not in msg.prefix and kind == "notice":
        return [_event("server", msg, nick=msg.nick, text=text)]
    buffer = (target if own else msg.nick) if private else target
    if text.startswith("\x01"):
        body = text.strip("\x01")
        ctcp, _, arg = body.partition(" ")
        if ctcp.upper() == "ACTION" and kind == "msg":
            kind, text = "action", arg
        else:
            kind = "notice" if kind == "notice" else "ctcp"
            return [_event(kind, msg, buffer=buffer, nick=msg.nick, text=body,
                           other=ctcp.upper(), private=private, own=own)]
    return [_event(kind, msg, buffer=buffer, nick=msg.nick, text=text,
                   private=private, own=own)]


def status_target(target: str) -> tuple[str, str]:
    """(`@`, `#ops`) for a message to a room's operators, `@#ops`;
    ('', target) for any other target."""
    status = _STATUS_TARGET.match(target)
    return (status.group(), target[status.end():]) if status else ("", target)


def _marked(text: str, mark: str) -> str:
    """`mark` before the text, inside an ACTION (`\x01ACTION (to @#r) waves`)."""
    if text.startswith("\x01ACTION "):
        return "\x01ACTION " + mark + text[len("\x01ACTION "):]
    return text if text.startswith("\x01") else mark + text


def _privmsg(msg: ircmsg.Message, me: str) -> list[UiEvent]:
    return _talk("msg", msg, me)


def _notice(msg: ircmsg.Message, me: str) -> list[UiEvent]:
    return _talk("notice", msg, me)


def _join(msg: ircmsg.Message, me: str) -> list[UiEvent]:
    return [_event("join", msg, buffer=msg.param(0), nick=msg.nick,
                   own=_same(msg.nick, me))]


def _part(msg: ircmsg.Message, me: str) -> list[UiEvent]:
    return [_event("part", msg, buffer=msg.param(0), nick=msg.nick,
                   text=msg.param(1), own=_same(msg.nick, me))]


def _quit(msg: ircmsg.Message, me: str) -> list[UiEvent]:
    return [_event("quit", msg, nick=msg.nick, text=msg.param(0),
                   own=_same(msg.nick, me))]


def _nick(msg: ircmsg.Message, me: str) -> list[UiEvent]:
    return [_event("nick", msg, nick=msg.nick, other=msg.param(0),
                   own=_same(msg.nick, me))]


def _kick(msg: ircmsg.Message, me: str) -> list[UiEvent]:
    return [_event("kick", msg, buffer=msg.param(0), nick=msg.nick,
                   other=msg.param(1), text=msg.param(2),
                   own=_same(msg.param(1), me))]


def _topic(msg: ircmsg.Message, me: str) -> list[UiEvent]:
    return [_event("topic", msg, buffer=msg.param(0), nick=msg.nick,
                   text=msg.param(1), own=_same(msg.nick, me))]


def _mode(msg: ircmsg.Message, me: str) -> list[UiEvent]:
    target = msg.param(0)
    buffer = target if ircmsg.is_room(target) else ""
    return [_event("mode", msg, buffer=buffer, nick=msg.nick, other=target,
                   text=" ".join(msg.params[1:]), own=_same(msg.nick, me))]


def _invite(msg: ircmsg.Message, me: str) -> list[UiEvent]:
    return [_event("invite", msg, nick=msg.nick, other=msg.param(1))]


def _error(msg: ircmsg.Message, me: str) -> list[UiEvent]:
    return [_event("status", msg, text="Server closed the connection: " + msg.param(0))]


def _wallops(msg: ircmsg.Message, me: str) -> list[UiEvent]:
    return [_event("server", msg, nick=msg.nick, text="WALLOPS: " + msg.param(0))]


def _nothing(msg: ircmsg.Message, me: str) -> list[UiEvent]:
    return []


COMMANDS: dict[str, Callable[[ircmsg.Message, str], list[UiEvent]]] = {
    "PRIVMSG": _privmsg, "NOTICE": _notice, "JOIN": _join, "PART": _part,
    "QUIT": _quit, "NICK": _nick, "KICK": _kick, "TOPIC": _topic,
    "MODE": _mode, "INVITE": _invite, "ERROR": _error, "WALLOPS": _wallops,
    "PING": _nothing, "PONG": _nothing, "CAP": _nothing,
}


def _list_entry(room: str, count: str, topic: str) -> str:
    """One LIST line: `#ops (3 users): topic`, with no dangling colon when
    the room has no topic."""
    users = "1 user" if count == "1" else f"{count} users"
    return f"{room} ({users}): {topic}" if topic else f"{room} ({users})"


def _reply_text(code: int, p: tuple[str, ...]) -> str:
    """Readable text for an informational numeric (params without our nick)."""
    formats: dict[int, Callable[[], str]] = {
        301: lambda: f"{p[0]} is away: {p[-1]}",
        311: lambda: f"{p[0]} is {p[1]}@{p[2]} ({p[-1]})",
        312: lambda: f"{p[0]} is on {p[1]} ({p[-1]})",
        313: lambda: f"{p[0]} {p[-1]}",
        317: lambda: f"{p[0]} has been idle {p[1]} s",
        319: lambda: f"{p[0]} is in {p[-1]}",
        322: lambda: _list_entry(p[0], p[1], p[2] if len(p) > 2 else ""),
        324: lambda: f"Mode of {p[0]}: {' '.join(p[1:])}",
        331: lambda: f"{p[0]}: no topic is set",
        341: lambda: f"Invited {p[0]} to {p[1]}",
        352: lambda: f"{p[0]} {p[4]} {p[5]} {p[1]}@{p[2]} ({p[-1].partition(' ')[2]})",
    }
    try:
        return formats[code]()
    except (KeyError, IndexError):
        return " ".join(p)


def _numeric(code: int, msg: ircmsg.Message) -> list[UiEvent]:
    """Translate a numeric reply; params[0] is always our own nick."""
    params = msg.params[1:]
    if code in _SILENT_NUMERICS:
        return []
    if code in _TEXT_ONLY_NUMERICS and params:
        return [_event("server", msg, nick=msg.prefix, text=params[-1])]
    if code in _SERVER_TEXT_NUMERICS:
        return [_event("server", msg, nick=msg.prefix, text=" ".join(params))]
    if code == 332:
        return [_event("topic", msg, buffer=msg.param(1), text=msg.param(2))]
    if code == 353:
        names = tuple(sanitize(msg.param(3)).split())    # a tuple: _event cleans strings only
        return [_event("names", msg, buffer=msg.param(2), names=names)]
    if code in _LIST_ENDS:
        return [_event(_LIST_ENDS[code], msg, buffer=msg.param(1), text=msg.param(2))]
    if code == 352:
        return [_event("who", msg, text=_reply_text(code, params))]
    if code in _ROOM_LIST:
        return [_event(_ROOM_LIST[code], msg, text=_reply_text(code, params))]
    if code in _REFUSED_COMMAND:
        reason = params[-1] if params else str(code)
        return [_event("error", msg, text=f"{_REFUSED_COMMAND[code]} refused: {reason}",
                       other=str(code))]
    if 400 <= code < 600 or code in _REFUSAL_NUMERICS:
        where = " ".join(params[:-1])
        text = f"{where}: {params[-1]}" if where else (params[-1] if params else str(code))
        room = params[0] if len(params) > 1 and ircmsg.is_room(params[0]) else ""
        return [_event("error", msg, buffer=room, text=text, other=str(code))]
    return [_event("reply", msg, text=_reply_text(code, params))]


def well_formed(msg: ircmsg.Message) -> bool:
    """Whether the message has the parameters its command needs; one that
    lacks them is no event (and no change of nick or rooms) at all.

    So is a NICK to a name that cannot be one (empty, or with a space): a
    server renaming us to `NICK :` made "" the nick asked for at every
    reconnect, each refused, and the client never registered again."""
    if msg.command == "NICK" and msg.params and not ircmsg.can_be_nick(msg.params[0]):
        return False
    return len(msg.params) >= _REQUIRED_PARAMS.get(msg.command, 0)


def translate(msg: ircmsg.Message, me: str) -> list[UiEvent]:
    """Turn one IRC message into events; `me` is our current nick."""
    if msg.command.isdigit():
        return _numeric(int(msg.command), msg)
    handler = COMMANDS.get(msg.command)
    if handler is None:
        return [_event("server", msg, nick=msg.nick,
                       text=" ".join((msg.command,) + msg.params))]
    return handler(msg, me)


def clock(stamp: float) -> str:
    """HH:MM in local time."""
    return time.strftime("%H:%M", time.localtime(stamp))


def _reason(text: str) -> str:
    return f" ({text})" if text else ""


def _describe_topic(e: UiEvent) -> str:
    """A TOPIC with no text removes the topic (irssi's `/topic -delete`):
    "changed the topic to:" and nothing read as a line cut short."""
    if not e.nick:
        return f"Topic for {e.buffer}: {e.text}"
    if not e.text:
        return f"{e.nick} removed the topic of {e.buffer}"
    return f"{e.nick} changed the topic of {e.buffer} to: {e.text}"


DESCRIBE: dict[str, Callable[[UiEvent], str]] = {
    "join": lambda e: f"{e.nick} joined {e.buffer}",
    "part": lambda e: f"{e.nick} left {e.buffer}{_reason(e.text)}",
    "quit": lambda e: f"{e.nick} quit{_reason(e.text)}",
    "nick": lambda e: (f"You are now known as {e.other}" if e.own
                       else f"{e.nick} is now known as {e.other}"),
    "kick": lambda e: (f"You were kicked from {e.buffer} by {e.nick}{_reason(e.text)}" if e.own
                       else f"{e.other} was kicked from {e.buffer} by {e.nick}{_reason(e.text)}"),
    "topic": _describe_topic,
    "mode": lambda e: f"{e.nick} sets mode {e.text} on {e.other}",
    "invite": lambda e: f"{e.nick} invites you to {e.other}",
    "names": lambda e: f"Members of {e.buffer}: {' '.join(e.names)}",
    "ctcp": lambda e: f"{e.nick} sent CTCP {e.other}",
    "action": lambda e: f"{e.nick} {e.text}",
    "reply": lambda e: e.text,
    "who": lambda e: e.text,
    "list": lambda e: e.text,
    "list_end": lambda e: e.text,
    "names_end": lambda e: f"{e.buffer}: {e.text}",
    "who_end": lambda e: f"{e.buffer}: {e.text}",
    "server": lambda e: e.text,
    "error": lambda e: e.text,
    "status": lambda e: e.text,
}


def describe(event: UiEvent) -> str:
    """The text of a non-talk event, without time or marker."""
    return DESCRIBE[event.kind](event)


def line_text(event: UiEvent, current: str = "") -> str:
    """Render an event as one line-mode line.

    Talk in the current room reads `HH:MM <nick> text`; talk in another
    room names it (`HH:MM #room <nick> text`); private talk is marked
    `HH:MM <nick> [private] text`; notices read `HH:MM -nick- text`;
    everything else `HH:MM * description`.
    """
    stamp = clock(event.time)
    where = ""
    if event.buffer and not event.private and not _same(event.buffer, current):
        where = event.buffer + " "
    mark = "[private] " if event.private else ""
    if event.kind == "msg":
        return f"{stamp} {where}<{event.nick}> {mark}{event.text}"
    if event.kind == "notice":
        return f"{stamp} {where}-{event.nick}- {mark}{event.text}"
    if event.kind == "action":
        return f"{stamp} {where}* {mark}{event.nick} {event.text}"
    return f"{stamp} * {describe(event)}"
