"""Talk: PRIVMSG, NOTICE, AWAY, WALLOPS and KILL handlers, and `text_line`.

PRIVMSG to a room is the hot path: one casefold, one dict lookup, one
permission check, the line built once, one `fanout_but` to every member
but the sender (which the broker gathers with the room's other lines of
its flush window).  Every relayed line carries the sender's prefix as the state
knows it, never anything the client sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable

from forkchat import numerics, protocol

if TYPE_CHECKING:
    from forkchat.state import ChatState, Client, Outbox

MAX_TARGETS = 4              # 005 MAXTARGETS: PRIVMSG/NOTICE/WHOIS targets per command
_CLEAN = str.maketrans({"\r": " ", "\n": " ", "\0": " "})


def text_line(prefix: str, command: str, *params: str) -> bytes:
    """Like protocol.format_line, but the last parameter is always trailing.

    Clients read text (messages, reasons, topics) after ' :' even when it is
    one word.  Middle parameters lose spaces and a leading ':' (as in
    format_line), so a stray space can never shift the parameters.
    """
    *middle, text = params
    parts = [":" + prefix.translate(_CLEAN), command] if prefix else [command]
    parts += [_middle(param) for param in middle]
    parts.append(":" + text.translate(_CLEAN))
    body = " ".join(parts).encode("utf-8", "replace")
    return protocol.truncate_utf8(body, protocol.MAX_BODY_BYTES) + b"\r\n"


def _middle(param: str) -> str:
    return param.translate(_CLEAN).replace(" ", "_").lstrip(":") or "*"


def for_each(st: ChatState, client: Client, out: Outbox, items: Iterable[str],
             func: Callable[[str], None], quiet: bool = False) -> None:
    """Run `func` on each target; one target's failure is answered, the rest go on."""
    for item in items:
        try:
            func(item)
        except numerics.Reply as error:
            if not quiet:
                out.send(client.cid, st.error_line(client, error))


def split_targets(text: str, limit: int | None = None) -> list[str]:
    """Comma-separated targets, empty ones and casefolded duplicates dropped."""
    seen: set[str] = set()
    targets: list[str] = []
    for target in text.split(","):
        folded = protocol.casefold(target)
        if target and folded not in seen:
            seen.add(folded)
            targets.append(target)
    return targets[:limit]


def cmd_privmsg(st: ChatState, client: Client, msg: protocol.Message, out: Outbox) -> None:
    """PRIVMSG <target>{,<target>} :<text>"""
    _talk(st, client, msg, out, "PRIVMSG")


def cmd_notice(st: ChatState, client: Client, msg: protocol.Message, out: Outbox) -> None:
    """NOTICE <target>{,<target>} :<text>

    Never answered with an error or an away reply (RFC 2812 3.3.2), so two
    bots can never loop.
    """
    _talk(st, client, msg, out, "NOTICE")


def _talk(st: ChatState, client: Client, msg: protocol.Message, out: Outbox,
          command: str) -> None:
    if not msg.params or not msg.params[0]:
        raise numerics.Reply(numerics.ERR_NORECIPIENT, text=f"No recipient given ({command})")
    if len(msg.params) < 2 or not msg.params[1]:
        raise numerics.Reply(numerics.ERR_NOTEXTTOSEND)
    text = msg.params[1]
    client.last_talk = st.clock()
    if "," not in msg.params[0]:
        _deliver(st, client, out, command, msg.params[0], text)
        return
    targets = split_targets(msg.params[0])
    quiet = command == "NOTICE"
    if not targets:                 # only commas: no recipient after all
        if quiet:
            return
        raise numerics.Reply(numerics.ERR_NORECIPIENT, text=f"No recipient given ({command})")
    for_each(st, client, out, targets[:MAX_TARGETS],
             lambda target: _deliver(st, client, out, command, target, text), quiet=quiet)
    if not quiet:
        tell_dropped(st, client, out, targets, MAX_TARGETS, "MAXTARGETS",
                     "recipient(s)", "not delivered")


def tell_dropped(st: ChatState, client: Client, out: Outbox, targets: list[str],
                 limit: int, name: str, noun: str, outcome: str) -> None:
    """Answer the targets beyond `limit` with one 407 naming the first of them.

    RFC 2812 407: a command is never cut short silently, or a user who
    asked about (or kicked) five nicks would never learn the fifth was
    ignored; one line however many, so that a long list costs one reply.
    """
    dropped = targets[limit:]
    if dropped:
        out.send(client.cid, st.numeric(
            client, numerics.ERR_TOOMANYTARGETS, dropped[0],
            text=f"{len(dropped)} {noun} beyond {name}={limit}, {outcome}"))


def _deliver(st: ChatState, client: Client, out: Outbox, command: str,
             target: str, text: str) -> None:
    if target[0] in protocol.ROOM_PREFIXES:
        room = st.rooms.get(protocol.casefold(target))
        if room is None:
            raise numerics.Reply(numerics.ERR_NOSUCHCHANNEL, target)
        cid = client.cid
        if not room.can_talk(cid, client.folded_prefix):
            if not room.exists_for(cid):        # refused, and it must not say why
                raise numerics.Reply(numerics.ERR_NOSUCHCHANNEL, target)
            raise numerics.Reply(numerics.ERR_CANNOTSENDTOCHAN, room.name)
        if len(room.members) > (cid in room.members):     # someone else is there
            out.fanout_but(room.members, cid, text_line(client.prefix, command, room.name, text))
        return
    peer = st.find_nick(target)
    if peer is None:
        raise numerics.Reply(numerics.ERR_NOSUCHNICK, target)
    out.send(peer.cid, text_line(client.prefix, command, peer.nick, text))
    if peer.away and command == "PRIVMSG":
        out.send(client.cid, st.numeric(client, numerics.RPL_AWAY, peer.nick, text=peer.away))


def cmd_away(st: ChatState, client: Client, msg: protocol.Message, out: Outbox) -> None:
    """AWAY [:<message>]"""
    client.away = msg.param(0)[:st.settings.awaylen]
    code = numerics.RPL_NOWAWAY if client.away else numerics.RPL_UNAWAY
    out.send(client.cid, st.numeric(client, code))
    out.update(client.cid, {"away": client.away})


def cmd_wallops(st: ChatState, client: Client, msg: protocol.Message, out: Outbox) -> None:
    """WALLOPS :<text>  (operators only; to every user with +w)"""
    recipients = [other.cid for other in st.clients.values()
                  if other.registered and "w" in other.modes]
    if recipients:
        out.fanout(recipients, text_line(client.prefix, "WALLOPS", msg.params[0]))


KILL_DEFAULT_REASON = "No reason given"   # not the killer's nick: "Killed (op (op))" reads as a stutter


def cmd_kill(st: ChatState, client: Client, msg: protocol.Message, out: Outbox) -> None:
    """KILL <nick> [:<reason>]  (operators only)

    This server's own name is answered 483, as RFC 2812 3.7.1 lists for it,
    not 401: no nickname has a dot, so it cannot be one.
    """
    target = st.find_nick(msg.params[0])
    if target is None and protocol.casefold(msg.params[0]) == \
            protocol.casefold(st.settings.server_name):
        raise numerics.Reply(numerics.ERR_CANTKILLSERVER)
    if target is None:
        raise numerics.Reply(numerics.ERR_NOSUCHNICK, msg.params[0])
    comment = msg.param(1)[:st.settings.kicklen] or KILL_DEFAULT_REASON
    reason = f"Killed ({client.nick} ({comment}))"
    # The operator's word is the target's last, however full its link:
    # sent as a line like the others, the KILL overflowed a link near
    # broker_buffer_bytes, and its client read "Max SendQ exceeded".
    out.drop(target.cid, reason, last=text_line(client.prefix, "KILL", target.nick, reason))
    st.disconnect(target.cid, reason, out)
