"""The /command table: what a typed line means.

`interpret(text, ctx)` is pure: it turns one input line into a `Result`, the
raw IRC lines to send plus local actions for the front end (switch buffer,
quit, show help, echo our own message).  Both the curses interface and line
mode use it, so `/join #ops` means the same in a terminal and in a pipe.

Local actions are (name, *args) tuples:
    ("own", target, text)        echo a message we sent
    ("ownaction", target, text)  echo a /me we sent
    ("ownnotice", target, text)  echo a /notice we sent
    ("joining", room)            we asked to join: switch to it once joined
    ("parting", room)            we asked to leave (line mode moves on at once)
    ("query", nick)              open (and switch to) a private conversation
    ("switch", name_or_number)   switch to an existing buffer
    ("quit", reason)             leave
    ("help", text)               show text locally
    ("close", nick)              close a private conversation (/part in it)
    ("note", text)               a warning about what was sent (text cut to fit)
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

from forkchat.client import ircmsg, lineedit

LINE_BYTES = 510          # 512 minus CRLF
PREFIX_RESERVE = 1 + 1 + 10 + 1 + 63 + 1   # ':' '!' user '@' host ' ' around our nick
# What servers (forkchat-server, hybrid, ratbox, solanum ...) put in front of
# a QUIT reason of the user's own when they relay it.
QUIT_PREFIX = "Quit: "


class SlashError(Exception):
    """A line that cannot be sent as typed; the message says why."""


@dataclasses.dataclass(frozen=True)
class Context:
    """What a command needs to know: where we are and who we are."""

    target: str = ""     # current room or query nick, "" in the status buffer
    nick: str = ""
    # Rooms (casefolded) whose buffers stay open though we are out of them
    # (kicked, rejoin refused): /part there closes the buffer.
    gone: frozenset[str] = frozenset()
    # What the server keeps of free text, in characters (005: TOPICLEN,
    # KICKLEN, AWAYLEN); a length it named not is not cut to.
    lengths: Mapping[str, int] = dataclasses.field(default_factory=dict)


Local = tuple[tuple[str, ...], ...]     # local actions, as listed above


@dataclasses.dataclass(frozen=True)
class Result:
    lines: tuple[str, ...] = ()
    local: Local = ()


@dataclasses.dataclass(frozen=True)
class SlashCommand:
    handler: Callable[[str, Context], Result]
    usage: str
    summary: str
    min_args: int = 0


def text_budget(nick: str, command: str, target: str, overhead: int = 0) -> int:
    """Bytes of text that fit once the server adds our full prefix; `target`
    is every word between the command and the text ('' for none)."""
    words = f"{command} {target}" if target else command
    fixed = len(f"{words} :".encode()) + len(nick.encode()) + PREFIX_RESERVE
    return max(16, LINE_BYTES - fixed - overhead)


def cut_text(text: str, limit: int, chars: int = 0) -> str:
    """The longest start of `text` within `limit` UTF-8 bytes (and `chars`
    characters, unless 0), ending with a whole character cluster (lineedit's:
    an emoji keeps its skin tone, a letter its accents) unless one cluster
    alone is longer than the limit."""
    end = len(text.encode()[:limit].decode("utf-8", "ignore"))
    if chars:
        end = min(end, chars)
    whole = end
    while 0 < whole < len(text) and lineedit.continues(text, whole):
        whole -= 1
    return text[:whole or end]


def _fitted(text: str, what: str, budget: int, ctx: Context | None = None,
            token: str = "") -> tuple[str, Local]:
    """`text` cut to fit, and a note saying so when it was cut; `token`
    names the server's own length for it (005), if it gave one.

    The last parameter of a PART, KICK, TOPIC, QUIT ... was sent whole: a
    server answers a line over 512 bytes with 417 and discards it, so a long
    /quit reason left as "Connection closed" and a long /part not at all.
    """
    chars = ctx.lengths.get(token, 0) if ctx and token else 0
    cut = cut_text(text, budget, chars)
    if cut == text:
        return text, ()
    by_chars = chars and len(cut_text(text, budget)) > chars
    limit = f"the server's {token} ({chars})" if by_chars else "an IRC line"
    return cut, (("note", f"{what} cut to its first {len(cut)} of {len(text)} characters"
                          f" to fit {limit}"),)


def split_text(text: str, limit: int) -> list[str]:
    """Cut text into pieces of at most `limit` UTF-8 bytes, at spaces if possible."""
    pieces: list[str] = []
    while len(text.encode()) > limit:
        cut = len(text.encode()[:limit].decode("utf-8", "ignore"))
        space = text.rfind(" ", 0, cut)
        if space > cut // 2:
            cut = space
        pieces.append(text[:cut])
        text = text[cut:].lstrip(" ")
    if text or not pieces:
        pieces.append(text)
    return pieces


def talk_lines(command: str, target: str, text: str, nick: str) -> tuple[str, ...]:
    """PRIVMSG/NOTICE lines for `text`, split to fit the line limit."""
    budget = text_budget(nick, command, target)
    return tuple(ircmsg.build(command, target, piece) for piece in split_text(text, budget))


def _room(name: str) -> str:
    """Accept `ops` for `#ops`, as most clients do."""
    return name if ircmsg.is_room(name) else "#" + name


def _need_target(ctx: Context) -> str:
    if not ctx.target:
        raise SlashError("no room or conversation here: /join a room or /query a nick first")
    return ctx.target


def _talk_target(ctx: Context) -> str:
    """Where a line or /me goes; not a room we were put out of, where the
    server would refuse it after we had shown it as said."""
    target = _need_target(ctx)
    if ircmsg.casefold(target) in ctx.gone:
        raise SlashError(f"you are not in {target}: /join {target} to talk there again,"
                         " /part to close it")
    return target


def _need_room(ctx: Context, what: str) -> str:
    if not ircmsg.is_room(ctx.target):
        raise SlashError(f"not in a room: name one, e.g. /{what} #room")
    return ctx.target


def _split_room(args: str, ctx: Context, what: str) -> tuple[str, str]:
    """`[#room] rest` -> (room, rest), defaulting to the current room."""
    first, _, rest = args.partition(" ")
    if ircmsg.is_room(first):
        return first, rest.strip()
    return _need_room(ctx, what), args.strip()


def say(text: str, ctx: Context) -> Result:
    """A plain line: a message to the current room or conversation."""
    target = _talk_target(ctx)
    return Result(talk_lines("PRIVMSG", target, text, ctx.nick), (("own", target, text),))


def _join(args: str, ctx: Context) -> Result:
    words = args.split()
    rooms = [_room(name) for name in words[0].split(",") if name]
    if not rooms:
        raise SlashError("usage: " + COMMANDS["join"].usage)
    line = ircmsg.build("JOIN", ",".join(rooms), *words[1:2])
    return Result((line,), (("joining", rooms[0]),))


def _part(args: str, ctx: Context) -> Result:
    if ctx.target and not ircmsg.is_room(ctx.target) and not ircmsg.is_room(args.strip()):
        return Result((), (("close", ctx.target),))  # /part in a private conversation
    room, reason = _split_room(args, ctx, "part")
    if ircmsg.casefold(room) in ctx.gone:
        return Result((), (("close", room),))  # the server would only refuse a PART
    reason, note = _fitted(reason, "part reason", text_budget(ctx.nick, "PART", room))
    params = (room, reason) if reason else (room,)
    return Result((ircmsg.build("PART", *params),), note + (("parting", room),))


def _msg(args: str, ctx: Context) -> Result:
    target, _, text = args.strip().partition(" ")
    if not text.strip():
        raise SlashError("usage: " + COMMANDS["msg"].usage)
    return Result(talk_lines("PRIVMSG", target, text, ctx.nick), (("own", target, text),))


def _notice(args: str, ctx: Context) -> Result:
    target, _, text = args.strip().partition(" ")
    if not text.strip():
        raise SlashError("usage: " + COMMANDS["notice"].usage)
    return Result(talk_lines("NOTICE", target, text, ctx.nick), (("ownnotice", target, text),))


def _query(args: str, ctx: Context) -> Result:
    nick, _, text = args.strip().partition(" ")
    if ircmsg.is_room(nick):
        raise SlashError("/query is for a nick; use /join for a room")
    ircmsg.build("PRIVMSG", nick, "-")     # a conversation no line could go to: ValueError
    if not text.strip():
        return Result((), (("query", nick),))
    sent = _msg(args, ctx)
    return Result(sent.lines, (("query", nick),) + sent.local)


def _me(args: str, ctx: Context) -> Result:
    target = _talk_target(ctx)
    budget = text_budget(ctx.nick, "PRIVMSG", target, overhead=len("\x01ACTION \x01"))
    lines = tuple(ircmsg.build("PRIVMSG", target, f"\x01ACTION {piece}\x01")
                  for piece in split_text(args.strip(), budget))
    return Result(lines, (("ownaction", target, args.strip()),))


def _nick(args: str, ctx: Context) -> Result:
    return Result((ircmsg.build("NICK", args.split()[0]),))


def _topic(args: str, ctx: Context) -> Result:
    room, text = _split_room(args, ctx, "topic")
    text, note = _fitted(text, "topic", text_budget(ctx.nick, "TOPIC", room), ctx, "TOPICLEN")
    params = (room, text) if text else (room,)
    return Result((ircmsg.build("TOPIC", *params),), note)


def _names(args: str, ctx: Context) -> Result:
    room = args.split()[0] if args.split() else _need_room(ctx, "names")
    return Result((ircmsg.build("NAMES", room),))


def _who(args: str, ctx: Context) -> Result:
    mask = args.split()[0] if args.split() else _need_target(ctx)
    return Result((ircmsg.build("WHO", mask),))


def _whois(args: str, ctx: Context) -> Result:
    return Result((ircmsg.build("WHOIS", args.split()[0]),))


def _kick(args: str, ctx: Context) -> Result:
    room, rest = _split_room(args, ctx, "kick")
    nick, _, reason = rest.partition(" ")
    if not nick:
        raise SlashError("usage: " + COMMANDS["kick"].usage)
    reason, note = _fitted(reason.strip(), "kick reason",
                           text_budget(ctx.nick, "KICK", f"{room} {nick}"), ctx, "KICKLEN")
    params = (room, nick, reason) if reason else (room, nick)
    return Result((ircmsg.build("KICK", *params),), note)


def _invite(args: str, ctx: Context) -> Result:
    words = args.split()
    room = words[1] if len(words) > 1 else _need_room(ctx, "invite " + words[0])
    return Result((ircmsg.build("INVITE", words[0], room),))


def _mode(args: str, ctx: Context) -> Result:
    """`/mode +o bob` is about the current room; `/mode #room|nick ...` names it."""
    words = args.split()
    if not words or words[0][0] in "+-":
        words.insert(0, _need_room(ctx, "mode"))
    return Result((ircmsg.build("MODE", *words),))


def _oper(args: str, ctx: Context) -> Result:
    words = args.split()
    return Result((ircmsg.build("OPER", words[0], words[1]),))


def _kill(args: str, ctx: Context) -> Result:
    nick, _, reason = args.strip().partition(" ")
    reason, note = _fitted(reason.strip(), "kill reason", text_budget(ctx.nick, "KILL", nick))
    params = (nick, reason) if reason else (nick,)
    return Result((ircmsg.build("KILL", *params),), note)


def _list(args: str, ctx: Context) -> Result:
    return Result((ircmsg.build("LIST", *args.split()[:2]),))


def _away(args: str, ctx: Context) -> Result:
    text, note = _fitted(args.strip(), "away message", text_budget(ctx.nick, "AWAY", ""),
                         ctx, "AWAYLEN")
    return Result((ircmsg.build("AWAY", text) if text else "AWAY",), note)


def _quit(args: str, ctx: Context) -> Result:
    """The reason is cut to fit as the server relays it, after "Quit: "."""
    budget = text_budget(ctx.nick, "QUIT", "", overhead=len(QUIT_PREFIX))
    reason, note = _fitted(args.strip(), "quit reason", budget)
    return Result((), note + (("quit", reason),))


def _raw(args: str, ctx: Context) -> Result:
    """The line as typed, or none: a line cut short could mean something
    else (a MODE losing its last nick), so one the server would refuse
    (417) stays here with the reason.  IRCv3 tags have a budget of their own."""
    line = ircmsg.clean(args.strip())
    body = line.partition(" ")[2].lstrip(" ") if line.startswith("@") else line
    size = len(body.encode())
    if size > LINE_BYTES:
        raise SlashError(f"not sent: the line is {size} bytes, and an IRC line holds at most"
                         f" {LINE_BYTES} (the server would refuse it)")
    return Result((line,))


def _switch(args: str, ctx: Context) -> Result:
    return Result((), (("switch", args.strip()),))


def help_text(name: str = "") -> str:
    """All commands, one per line, or the usage of one."""
    name = name.strip().lstrip("/").lower()
    if name:
        command = COMMANDS.get(name)
        if command is None:
            raise SlashError(f"unknown command /{name} (/help lists them)")
        return f"{command.usage}  {command.summary}"
    width = max(len(command.usage) for command in COMMANDS.values())
    return "\n".join(f"{command.usage:<{width}}  {command.summary}"
                     for command in COMMANDS.values())


def _help(args: str, ctx: Context) -> Result:
    return Result((), (("help", help_text(args)),))


COMMANDS: dict[str, SlashCommand] = {
    "join": SlashCommand(_join, "/join #room[,#room] [key]", "join rooms, switch to the first", 1),
    "part": SlashCommand(_part, "/part [#room] [reason]", "leave a room (default: this one)"),
    "msg": SlashCommand(_msg, "/msg nick|#room text", "send a message somewhere else", 2),
    "query": SlashCommand(_query, "/query nick [text]", "open a private conversation", 1),
    "me": SlashCommand(_me, "/me action", "say that you do something", 1),
    "notice": SlashCommand(_notice, "/notice nick|#room text", "send a notice", 2),
    "nick": SlashCommand(_nick, "/nick newnick", "change your nickname", 1),
    "topic": SlashCommand(_topic, "/topic [#room] [text]", "show or set the topic"),
    "names": SlashCommand(_names, "/names [#room]", "list the members of a room"),
    "who": SlashCommand(_who, "/who [mask]", "who is in a room or matches a mask"),
    "whois": SlashCommand(_whois, "/whois nick", "about a user", 1),
    "list": SlashCommand(_list, "/list [#room]", "list rooms"),
    "kick": SlashCommand(_kick, "/kick [#room] nick [reason]", "put someone out of a room", 1),
    "invite": SlashCommand(_invite, "/invite nick [#room]", "invite someone to a room", 1),
    "mode": SlashCommand(_mode, "/mode [#room|nick] [modes]", "show or change modes"),
    "away": SlashCommand(_away, "/away [text]", "set away (no text: back)"),
    "switch": SlashCommand(_switch, "/switch #room|nick|N", "show another buffer", 1),
    "oper": SlashCommand(_oper, "/oper name password", "become a server operator", 2),
    "kill": SlashCommand(_kill, "/kill nick [reason]", "disconnect a user (operators)", 1),
    "raw": SlashCommand(_raw, "/raw LINE", "send a raw IRC line (a QUIT leaves as /quit)", 1),
    "help": SlashCommand(_help, "/help [command]", "this list"),
    "quit": SlashCommand(_quit, "/quit [reason]", "leave the chat"),
}


def interpret(text: str, ctx: Context) -> Result:
    """Turn one typed line into a Result.

    `//text` sends `/text` literally.

    Raises:
        SlashError: unknown command, missing arguments, nowhere to send, a
            name starting with ':' (it would end the line's words there).
    """
    text = ircmsg.clean(text).rstrip()
    if not text.startswith("/") or text.startswith("//"):
        try:
            return say(text[1:] if text.startswith("//") else text, ctx)
        except ValueError as exc:   # a conversation opened as `/query :x`
            raise SlashError(str(exc)) from None
    name, _, args = text[1:].partition(" ")
    command = COMMANDS.get(name.lower())
    if command is None:
        raise SlashError(f"unknown command /{name} (/help lists them; a line that starts"
                         " with // is sent as text, without its first /)")
    if len(args.split()) < command.min_args:
        raise SlashError("usage: " + command.usage)
    try:
        return command.handler(args, ctx)
    except ValueError as exc:   # `/msg :alice hi`: a word IRC cannot carry there
        raise SlashError(f"{exc} (usage: {command.usage})") from None


def command_names() -> list[str]:
    """For Tab completion."""
    return ["/" + name for name in COMMANDS]
