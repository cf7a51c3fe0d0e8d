"""Identity commands: NICK and MODE (room modes are handed to state_rooms).

A nick is reserved by NICK before registration and announced after it;
user modes are the client's own i, w and o (o only ever removed here:
OPER, checked by the worker, gives it through ChatState.set_oper).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from forkchat import numerics, protocol, state_rooms, state_talk

if TYPE_CHECKING:
    from forkchat.state import ChatState, Client, Outbox

USER_MODES = "iow"


def cmd_nick(st: ChatState, client: Client, msg: protocol.Message, out: Outbox) -> None:
    """NICK <nick>

    Before registration the nick is only reserved; after, the change goes
    once to the client and to everyone sharing a room with it.
    """
    nick = msg.param(0)
    if not nick:
        raise numerics.Reply(numerics.ERR_NONICKNAMEGIVEN)
    if not protocol.valid_nick(nick, st.settings.nicklen):
        # Before registration a client has not seen NICKLEN (005): say it.
        too_long = len(nick) > st.settings.nicklen
        raise numerics.Reply(numerics.ERR_ERRONEUSNICKNAME, nick, text=(
            f"Erroneous nickname: longer than {st.settings.nicklen} characters"
            if too_long else None))
    if nick == client.nick:
        return
    folded = protocol.casefold(nick)
    holder = st.nicks.get(folded)
    if holder is not None and holder is not client:
        raise numerics.Reply(numerics.ERR_NICKNAMEINUSE, nick)
    if client.registered:
        _check_not_banned(client, nick)
        st.record_whowas(client)
        recipients = st.neighbours(client)
        recipients.add(client.cid)
        out.fanout(recipients, protocol.format_line(client.prefix, "NICK", nick))
    if client.nick:
        st.nicks.pop(protocol.casefold(client.nick), None)
    st.nicks[folded] = client
    client.nick = nick
    st.set_prefix(client)
    out.update(client.cid, {"nick": nick})


def _check_not_banned(client: Client, nick: str) -> None:
    """A member a ban silences (not voiced, not an operator) keeps its nick
    (435, as charybdis answers): a ban on 'nick!*@*' no longer matched it
    once renamed, and it talked again."""
    for room in client.joined.values():
        if not room.members.get(client.cid) and room.is_banned(client.folded_prefix):
            raise numerics.Reply(numerics.ERR_BANNICKCHANGE, nick, room.name)


def cmd_mode(st: ChatState, client: Client, msg: protocol.Message, out: Outbox) -> None:
    """MODE <room> [<modes> [<params>...]] | MODE <nick> [<modes>]"""
    if protocol.is_room_name(msg.params[0]):
        state_rooms.room_mode(st, client, msg, out)
    else:
        user_mode(st, client, msg, out)


def user_mode(st: ChatState, client: Client, msg: protocol.Message, out: Outbox) -> None:
    """Users change only their own i and w, and may drop o (only OPER gives it)."""
    target = st.find_nick(msg.params[0])
    if target is None:
        raise numerics.Reply(numerics.ERR_NOSUCHNICK, msg.params[0])
    if target is not client:
        raise numerics.Reply(numerics.ERR_USERSDONTMATCH)
    if not msg.param(1):        # no modestring, or an empty one: a query
        out.send(client.cid, st.numeric(client, numerics.RPL_UMODEIS, "+" + st.user_modes(client)))
        return
    before = set(client.modes)
    unknown = _apply_user_modes(st, client, msg.params[1])
    added, removed = client.modes - before, before - client.modes
    if added or removed:
        change = ("+" + "".join(sorted(added)) if added else "") + \
                 ("-" + "".join(sorted(removed)) if removed else "")
        out.send(client.cid, state_talk.text_line(client.nick, "MODE", client.nick, change))
        out.update(client.cid, {"modes": st.user_modes(client), "oper": "o" in client.modes})
    if unknown:
        raise numerics.Reply(numerics.ERR_UMODEUNKNOWNFLAG)


def _apply_user_modes(st: ChatState, client: Client, modestring: str) -> bool:
    """Apply what a user may change of its own modes; True if a letter was unknown."""
    adding, unknown = True, False
    for letter in modestring:
        if letter in "+-":
            adding = letter == "+"
        elif letter not in USER_MODES:
            unknown = True
        elif letter != "o" or not adding:
            st.set_user_mode(client, letter, adding)
    return unknown
