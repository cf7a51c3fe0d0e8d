"""Queries: WHO, WHOIS, WHOWAS, ISON, USERHOST, LUSERS, MOTD, VERSION, and the welcome burst.

Read-only handlers: they look at the `ChatState` and answer the asking
client, never anyone else.  Invisible (+i) users show up in masks only to
those who share a room with them (RFC 2812 3.6.1).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, Iterator

from forkchat import numerics, protocol, rooms, state_rooms, state_talk

if TYPE_CHECKING:
    from forkchat.state import ChatState, Client, Outbox

ISUPPORT_PER_LINE = 12
MAX_USERHOST = 5
WHO_ROOM_PACED = 500     # a WHO of a room of more members is paced as a scan (broker.py)


def isupport_tokens(st: ChatState) -> list[str]:
    s = st.settings
    targets = state_talk.MAX_TARGETS
    return [
        f"NETWORK={s.network}", "CHANTYPES=#&", f"CASEMAPPING={protocol.CASEMAPPING}",
        "PREFIX=(ov)@+", f"CHANMODES=b,k,l,{rooms.FLAG_MODES}", f"MODES={rooms.MAX_PARAM_MODES}",
        f"NICKLEN={s.nicklen}", f"CHANNELLEN={s.roomlen}", f"TOPICLEN={s.topiclen}",
        f"KICKLEN={s.kicklen}", f"AWAYLEN={s.awaylen}", f"CHANLIMIT=#&:{s.rooms_per_client}",
        f"MAXTARGETS={targets}", f"MAXLIST=b:{s.bans_per_room}", f"KEYLEN={rooms.KEYLEN}", "ELIST=MNU",
        "UTF8ONLY",
        f"TARGMAX=JOIN:,KICK:{state_rooms.MAX_KICKS},LIST:,NAMES:,NOTICE:{targets},"
        f"PART:,PRIVMSG:{targets},WHOIS:{targets},WHOWAS:{targets}",
    ]


def welcome_lines(st: ChatState, client: Client) -> list[bytes]:
    """001-005, LUSERS and MOTD: what a client gets once registered."""
    s = st.settings
    fixed = st.welcome_fixed
    if fixed is None or fixed.settings is not s:
        fixed = st.welcome_fixed = FixedLines(st)
    first = st.numeric(client, numerics.RPL_WELCOME,
                       text=f"Welcome to the {s.network} IRC Network {client.prefix}")
    return [first, *fixed.render(st, client, server_lines),
            *lusers_lines(st, client), *fixed.render(st, client, motd_lines)]


def server_lines(st: ChatState, client: Client) -> list[bytes]:
    """002-005: the server's own lines of the welcome burst."""
    s = st.settings
    return [
        st.numeric(client, numerics.RPL_YOURHOST,
                   text=f"Your host is {s.server_name}, running version {s.version}"),
        st.numeric(client, numerics.RPL_CREATED,
                   text=f"This server was created {s.created or 'recently'}"),
        st.numeric(client, numerics.RPL_MYINFO, s.server_name, s.version, "iow",
                   "".join(sorted(rooms.KNOWN_MODES)), "bklov"),
        *isupport_lines(st, client),
    ]


# The stand-in nick the fixed lines are made for: a middle parameter that
# no formatting changes, one byte long, so that a line made for it is cut
# short (at MAX_BODY_BYTES) only where a real nick's would be too.
_STAND_IN = "*"
# What would make a nick other than a plain middle parameter (see
# state_talk._middle and protocol.format_line): it then goes the long way.
_NOT_PLAIN = frozenset(" \r\n\0")


class FixedLines:
    """The lines of the welcome burst that only the nick they are addressed
    to tells apart (002-005, the MOTD), made once per Settings and split
    around the nick: every registration built the same dozen lines anew,
    most of the work of its welcome burst."""

    def __init__(self, st: ChatState) -> None:
        self.settings = st.settings
        stand_in = st.stand_in(_STAND_IN)
        # each builder's lines as (before the nick, after it), and the most
        # bytes of one but the nick; None if one was cut short
        self.parts: dict[Callable, tuple[list[tuple[bytes, bytes]], int] | None] = {}
        for builder in (server_lines, motd_lines):
            parts = [self._split(line) for line in builder(st, stand_in)]
            whole = [part for part in parts if part is not None]
            self.parts[builder] = None if len(whole) < len(parts) else \
                (whole, max((len(head) + len(tail) for head, tail in whole), default=0))

    @staticmethod
    def _split(line: bytes) -> tuple[bytes, bytes] | None:
        """(what comes before the nick, what comes after it) of a line
        made for the stand-in; None if it was cut short."""
        head_end = line.index(b" ", line.index(b" ") + 1) + 1      # ':server CODE '
        if len(line) - 2 >= protocol.MAX_BODY_BYTES \
                or line[head_end:head_end + len(_STAND_IN)] != _STAND_IN.encode():
            return None
        return line[:head_end], line[head_end + len(_STAND_IN):]

    def render(self, st: ChatState, client: Client,
               builder: Callable[[ChatState, Client], list[bytes]]) -> list[bytes]:
        """`builder`'s lines for `client`, as `builder` would make them."""
        nick = client.nick
        encoded = nick.encode()
        made = self.parts[builder]
        if made is None or made[1] + len(encoded) > protocol.MAX_BODY_BYTES + 2 \
                or not client.registered or not nick or nick[0] == ":" \
                or not _NOT_PLAIN.isdisjoint(nick):
            return builder(st, client)
        return [head + encoded + tail for head, tail in made[0]]


def isupport_lines(st: ChatState, client: Client) -> list[bytes]:
    """The 005 lines, at most ISUPPORT_PER_LINE tokens each (modern: 1 to 13)."""
    tokens = isupport_tokens(st)
    return [st.numeric(client, numerics.RPL_ISUPPORT, *tokens[start:start + ISUPPORT_PER_LINE])
            for start in range(0, len(tokens), ISUPPORT_PER_LINE)]


def lusers_lines(st: ChatState, client: Client) -> list[bytes]:
    """251-255 and 265/266, from counters the state keeps (no scan of all clients)."""
    users = st.registered_count
    invisible = st.mode_counts["i"]
    unknown = len(st.clients) - users
    most = st.max_registered
    lines = [
        st.numeric(client, numerics.RPL_LUSERCLIENT,
                   text=f"There are {users - invisible} users and {invisible} invisible on 1 servers"),
        st.numeric(client, numerics.RPL_LUSEROP, str(st.mode_counts["o"])),
    ]
    if unknown:
        lines.append(st.numeric(client, numerics.RPL_LUSERUNKNOWN, str(unknown)))
    lines += [
        st.numeric(client, numerics.RPL_LUSERCHANNELS, str(len(st.rooms))),
        st.numeric(client, numerics.RPL_LUSERME, text=f"I have {users} clients and 1 servers"),
        st.numeric(client, numerics.RPL_LOCALUSERS, str(users), str(most),
                   text=f"Current local users {users}, max {most}"),
        st.numeric(client, numerics.RPL_GLOBALUSERS, str(users), str(most),
                   text=f"Current global users {users}, max {most}"),
    ]
    return lines


def motd_lines(st: ChatState, client: Client) -> list[bytes]:
    s = st.settings
    if not s.motd_lines:
        return [st.numeric(client, numerics.ERR_NOMOTD)]
    return [st.numeric(client, numerics.RPL_MOTDSTART,
                       text=f"- {s.server_name} Message of the day - "),
            *(st.numeric(client, numerics.RPL_MOTD, text=f"- {line}") for line in s.motd_lines),
            st.numeric(client, numerics.RPL_ENDOFMOTD)]


def check_server_target(st: ChatState, target: str) -> None:
    """RFC 2812 3.4: a <target> naming no server here is ERR_NOSUCHSERVER.

    There is one server: the target may be its name, a mask matching it, or
    the nick of a user on it (RFC 2812 3.4: "a nickname ... on the server").
    """
    if rooms.names_server(target, st.settings.server_name) or st.find_nick(target) is not None:
        return
    raise numerics.Reply(numerics.ERR_NOSUCHSERVER, target)


# Server queries a worker answers itself, and the index of their <target>:
# one naming something other than the server's name comes here (commands.py).
WORKER_QUERIES = {"TIME": 0, "INFO": 0, "ADMIN": 0, "STATS": 1, "LINKS": 0}


def cmd_worker_query(st: ChatState, client: Client, msg: protocol.Message, out: Outbox) -> None:
    """TIME, INFO, ADMIN, STATS or LINKS with a <target> the worker could not place.

    A nickname of a user here names this server (RFC 2812 3.4): the worker
    is sent the command back without its target (`serve`), and answers it
    as it answers one without; anything else is 402.
    """
    index = WORKER_QUERIES[msg.command]
    check_server_target(st, msg.param(index))
    kept = msg.params[:index] + msg.params[index + 1:]
    out.serve(client.cid, protocol.format_line("", msg.command, *kept).rstrip(b"\r\n"))


def cmd_lusers(st: ChatState, client: Client, msg: protocol.Message, out: Outbox) -> None:
    """LUSERS [<mask> [<target>]]"""
    check_server_target(st, msg.param(1))
    for line in lusers_lines(st, client):
        out.send(client.cid, line)


def cmd_motd(st: ChatState, client: Client, msg: protocol.Message, out: Outbox) -> None:
    """MOTD [<target>]"""
    check_server_target(st, msg.param(0))
    for line in motd_lines(st, client):
        out.send(client.cid, line)


VERSION_COMMENT = "process-per-client IRC server"


def cmd_version(st: ChatState, client: Client, msg: protocol.Message, out: Outbox) -> None:
    """VERSION [<target>]

    351, then the 005 lines again: the modern client protocol document says
    a server SHOULD send RPL_ISUPPORT after RPL_VERSION (RFC 2812 has only
    351), and clients re-read the tokens from it.  This is why VERSION is
    answered here, where the tokens are, and not by the worker.
    """
    check_server_target(st, msg.param(0))
    out.send(client.cid, st.numeric(client, numerics.RPL_VERSION, st.settings.version,
                                    st.settings.server_name, text=VERSION_COMMENT))
    for line in isupport_lines(st, client):
        out.send(client.cid, line)


def _may_see(st: ChatState, client: Client, other: Client) -> bool:
    return other is client or "i" not in other.modes or st.shares_room(client, other)


def _who_line(st: ChatState, client: Client, other: Client, room_name: str, status: str) -> bytes:
    """352: <room> <user> <host> <server> <nick> <H|G>[*][@|+] :<hops> <realname>"""
    flags = ("G" if other.away else "H") + ("*" if "o" in other.modes else "")
    flags += rooms.highest_prefix(status)
    return st.numeric(client, numerics.RPL_WHOREPLY, room_name, other.user, other.host,
                      st.settings.server_name, other.nick, flags, text=f"0 {other.realname}")


def _who_matches(st: ChatState, client: Client, mask: str) -> Iterator[Client]:
    """Users a non-room WHO mask names: a nick, exactly, or else (RFC 2812
    3.6.1) the mask matched against nick, user, host, server and real name."""
    if mask not in ("", "0") and "*" not in mask and "?" not in mask:
        found = st.find_nick(mask)
        if found is not None:
            yield found
            return
    folded = protocol.casefold(mask or "*")
    server = protocol.casefold(st.settings.server_name)
    for other in st.clients.values():
        if not other.registered or not _may_see(st, client, other):
            continue
        fields = (other.nick, other.user, other.host, other.realname)
        if folded in ("*", "0") or rooms.glob_match(folded, server) \
                or any(rooms.glob_match(folded, protocol.casefold(f)) for f in fields):
            yield other


def who_is_a_scan(st: ChatState, msg: protocol.Message) -> bool:
    """Whether a WHO looks at every user (a mask, or a nick nobody has,
    which is then matched against every user's fields) or at a room of
    more than WHO_ROOM_PACED members.

    A 352 line costs the broker about 8 us: a WHO of a room of 5000 (the
    default members_per_room) took it 40 ms, twice a WHO of a mask at
    5000 users, and any member could ask for it twice a second.
    """
    mask = msg.param(0)
    if protocol.is_room_name(mask):
        room = st.find_room(mask)
        return room is not None and len(room.members) > WHO_ROOM_PACED
    wildcard = mask in ("", "0") or "*" in mask or "?" in mask
    return wildcard or st.find_nick(mask) is None


def cmd_who(st: ChatState, client: Client, msg: protocol.Message, out: Outbox) -> None:
    """WHO [<mask> [o]]

    A room gives its members with their status; a nick or mask gives '*'
    for the room field.  315 echoes the mask as given.
    """
    mask = msg.param(0)
    opers_only = msg.param(1) == "o"
    if protocol.is_room_name(mask):
        room = st.find_room(mask)
        if room is not None and state_rooms.visible(room, client):
            member = client.cid in room.members
            for cid, status in list(room.members.items()):
                other = st.clients[cid]
                if (member or "i" not in other.modes) and not (opers_only and "o" not in other.modes):
                    out.send(client.cid, _who_line(st, client, other, room.name, status))
    else:
        for other in _who_matches(st, client, mask):
            if not opers_only or "o" in other.modes:
                out.send(client.cid, _who_line(st, client, other, "*", ""))
    out.send(client.cid, st.numeric(client, numerics.RPL_ENDOFWHO, mask or "*"))


def cmd_whois(st: ChatState, client: Client, msg: protocol.Message, out: Outbox) -> None:
    """WHOIS [<server>] <nick>{,<nick>}

    One block per nick (or 401), then one 318 for the whole query.
    """
    query = msg.params[-1] if msg.params else ""
    if not query:
        raise numerics.Reply(numerics.ERR_NONICKNAMEGIVEN)
    if len(msg.params) > 1:
        # the server to ask: this one by name or mask, or the one a nick is on
        check_server_target(st, msg.params[0])
    nicks = state_talk.split_targets(query)
    for nick in nicks[:state_talk.MAX_TARGETS]:
        target = st.find_nick(nick)
        if target is None:
            out.send(client.cid, st.numeric(client, numerics.ERR_NOSUCHNICK, nick))
            continue
        for line in _whois_lines(st, client, target):
            out.send(client.cid, line)
    state_talk.tell_dropped(st, client, out, nicks, state_talk.MAX_TARGETS, "MAXTARGETS",
                            "nickname(s)", "not looked up")
    out.send(client.cid, st.numeric(client, numerics.RPL_ENDOFWHOIS, query))


def _whois_lines(st: ChatState, client: Client, target: Client) -> list[bytes]:
    nick = target.nick
    lines = [st.numeric(client, numerics.RPL_WHOISUSER, nick, target.user, target.host, "*",
                        text=target.realname)]
    shown = [rooms.highest_prefix(room.members.get(target.cid, "")) + room.name
             for room in target.joined.values() if _room_in_whois(client, target, room)]
    budget = state_rooms.numeric_budget(st, client, nick)
    lines += [st.numeric(client, numerics.RPL_WHOISCHANNELS, nick, text=piece)
              for piece in state_rooms.chunk_words(shown, budget)]
    lines.append(st.numeric(client, numerics.RPL_WHOISSERVER, nick, st.settings.server_name,
                            text=f"{st.settings.network} chat server"))
    if target.away:
        lines.append(st.numeric(client, numerics.RPL_AWAY, nick, text=target.away))
    if "o" in target.modes:
        lines.append(st.numeric(client, numerics.RPL_WHOISOPERATOR, nick))
    idle = max(0, int(st.clock() - target.last_talk))
    lines.append(st.numeric(client, numerics.RPL_WHOISIDLE, nick, str(idle), str(target.signon)))
    return lines


def _room_in_whois(client: Client, target: Client, room: rooms.Room) -> bool:
    """319 lists hidden rooms, and an invisible user's rooms, only to fellow members."""
    if target is client or client.cid in room.members:
        return True
    return not room.is_hidden() and "i" not in target.modes


def cmd_whowas(st: ChatState, client: Client, msg: protocol.Message, out: Outbox) -> None:
    """WHOWAS <nick>{,<nick>} [<count>]"""
    query = msg.param(0)
    if not query:
        raise numerics.Reply(numerics.ERR_NONICKNAMEGIVEN)
    count_text = msg.param(1)
    count = int(count_text) if count_text.isascii() and count_text.isdigit() else 0
    entries = []
    nicks = state_talk.split_targets(query)
    for nick in nicks[:state_talk.MAX_TARGETS]:
        found = _whowas_entries(st, nick, count)
        if not found:
            out.send(client.cid, st.numeric(client, numerics.ERR_WASNOSUCHNICK, nick))
        entries += found
    entries.sort(key=lambda entry: entry.seq, reverse=True)
    for entry in entries:
        when = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(entry.time))
        out.send(client.cid, st.numeric(client, numerics.RPL_WHOWASUSER, entry.nick,
                                        entry.user, entry.host, "*", text=entry.realname))
        out.send(client.cid, st.numeric(client, numerics.RPL_WHOISSERVER, entry.nick,
                                        st.settings.server_name, text=when))
    state_talk.tell_dropped(st, client, out, nicks, state_talk.MAX_TARGETS, "MAXTARGETS",
                            "nickname(s)", "not looked up")
    out.send(client.cid, st.numeric(client, numerics.RPL_ENDOFWHOWAS, query))


def _whowas_entries(st: ChatState, nick: str, count: int) -> list:
    """Newest first, at most `count` per nick (0: all); a nick may be a mask."""
    folded = protocol.casefold(nick)
    if "*" in folded or "?" in folded:
        names = [name for name in st.whowas if rooms.glob_match(folded, name)]
    else:
        names = [folded] if folded in st.whowas else []
    found = []
    for name in names:
        newest_first = st.whowas[name][::-1]
        found += newest_first[:count] if count > 0 else newest_first
    return found


def _words(msg: protocol.Message) -> list[str]:
    """ISON and USERHOST take nicks as separate parameters or one trailing list."""
    return " ".join(msg.params).split()


def cmd_ison(st: ChatState, client: Client, msg: protocol.Message, out: Outbox) -> None:
    """ISON <nick>{ <nick>}

    Every nick the line names is looked up (a 512-byte line names at most
    253, each one dict lookup): irssi packs its notify list into ISONs of
    up to about 500 bytes, and the nicks after a cap of 64 short ones were
    never seen online.  The reply is bounded by its line (_one_reply_of).
    """
    present = [found.nick for word in _words(msg)
               if (found := st.find_nick(word)) is not None]
    out.send(client.cid, _one_reply_of(st, client, numerics.RPL_ISON, present))


def cmd_userhost(st: ChatState, client: Client, msg: protocol.Message, out: Outbox) -> None:
    """USERHOST <nick>{ <nick>}  (at most 5: nick[*]=+|-user@host)"""
    replies = []
    for word in _words(msg)[:MAX_USERHOST]:
        found = st.find_nick(word)
        if found is not None:
            oper = "*" if "o" in found.modes else ""
            away = "-" if found.away else "+"
            replies.append(f"{found.nick}{oper}={away}{found.user}@{found.host}")
    out.send(client.cid, _one_reply_of(st, client, numerics.RPL_USERHOST, replies))


def _one_reply_of(st: ChatState, client: Client, code: str, words: list[str]) -> bytes:
    """One 303 or 302 holding the whole words that fit 512 bytes.

    The reply is longer than the question by the server name and the
    client's nick, and irssi packs an ISON to 510 bytes: 16 nicks of 30
    characters, all online, were cut at the end of the line, the last one
    in its middle, and that piece of a nick (perhaps another user's) read
    as online.  The words that do not fit are left out, as hybrid does:
    a second 303 is no answer (irssi counts one reply per ISON it sent).
    """
    pieces = state_rooms.chunk_words(words, state_rooms.numeric_budget(st, client))
    return st.numeric(client, code, text=pieces[0] if pieces else "")
