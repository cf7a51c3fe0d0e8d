"""Room commands: JOIN, PART, TOPIC, NAMES, LIST, KICK, INVITE and room MODE.

Handlers validate, then change the `rooms.Room` records the `ChatState`
holds, then write lines.  Commands with several targets (JOIN #a,#b;
KICK #r a,b) answer each failing target and go on with the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from forkchat import numerics, protocol, rooms, session, state_talk

if TYPE_CHECKING:
    from forkchat.state import ChatState, Client, Outbox

MAX_KICKS = 20          # targets of one KICK
MAX_INVITES = 50        # pending invites one client can hold


def chunk_words(words: Iterable[str], budget: int) -> list[str]:
    """Join words with spaces into pieces of at most `budget` UTF-8 bytes."""
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for word in words:
        length = len(word.encode("utf-8")) + (1 if current else 0)
        if current and size + length > budget:
            pieces.append(" ".join(current))
            current, size = [], 0
            length -= 1
        current.append(word)
        size += length
    if current:
        pieces.append(" ".join(current))
    return pieces


def numeric_budget(st: ChatState, client: Client, *params: str) -> int:
    """Bytes left for the trailing text of a numeric with these parameters."""
    head = numerics.reply(st.settings.server_name, "000", client.nick or "*", *params, text="")
    return protocol.MAX_BODY_BYTES - (len(head) - 2)


def visible(room: rooms.Room, client: Client) -> bool:
    """Listed by NAMES, LIST and WHO: a +s or +p room only to its members."""
    return client.cid in room.members or not room.is_hidden()


def names_lines(st: ChatState, client: Client, room: rooms.Room) -> list[bytes]:
    """The 353 lines of one room, as many as the 512-byte limit needs."""
    member = client.cid in room.members
    names: list[str] = []
    for cid, status in room.members.items():
        other = st.clients[cid]
        if member or "i" not in other.modes:
            names.append(rooms.highest_prefix(status) + other.nick)
    symbol = room.names_symbol()
    budget = numeric_budget(st, client, symbol, room.name)
    return [st.numeric(client, numerics.RPL_NAMREPLY, symbol, room.name, text=piece)
            for piece in chunk_words(names, budget)]


def topic_lines(st: ChatState, client: Client, room: rooms.Room) -> list[bytes]:
    if not room.topic:
        return [st.numeric(client, numerics.RPL_NOTOPIC, room.name)]
    return [st.numeric(client, numerics.RPL_TOPIC, room.name, text=room.topic),
            st.numeric(client, numerics.RPL_TOPICWHOTIME, room.name, room.topic_setter,
                       str(room.topic_time))]


def cmd_join(st: ChatState, client: Client, msg: protocol.Message, out: Outbox) -> None:
    """JOIN <room>{,<room>} [<key>{,<key>}] | JOIN 0"""
    if msg.params[0] == "0":
        _part_all(st, client, out)
        return
    keys = msg.param(1).split(",")
    names = msg.params[0].split(",")
    if not any(names):              # 'JOIN ,' names no room
        raise numerics.Reply(numerics.ERR_NEEDMOREPARAMS, "JOIN")
    changed = False
    for index, name in enumerate(names):
        if not name:                # '#a,,#b': skipped, as ergo does; keys keep their places
            continue
        key = keys[index] if index < len(keys) else ""
        try:
            changed = _join_one(st, client, name, key, out) or changed
        except numerics.Reply as error:
            out.send(client.cid, st.error_line(client, error))
    if changed:
        st.send_rooms_update(client, out)


def _join_one(st: ChatState, client: Client, name: str, key: str, out: Outbox) -> bool:
    if not protocol.valid_room(name, st.settings.roomlen):
        raise numerics.Reply(numerics.ERR_NOSUCHCHANNEL, name)
    folded = protocol.casefold(name)
    if folded in client.joined:
        return False
    if len(client.joined) >= st.settings.rooms_per_client:
        raise numerics.Reply(numerics.ERR_TOOMANYCHANNELS, name)
    room = st.rooms.get(folded)
    status = ""
    if room is None:
        if len(st.rooms) >= st.settings.max_rooms:
            raise numerics.Reply(numerics.ERR_TOOMANYCHANNELS, name,
                                 text="Too many rooms on this server")
        restored = folded in st.saved_rooms
        room = st.new_room(name, folded)
        status = "@"
        if restored:        # a room kept from before a restart keeps its key and bans
            try:
                _check_restored(client, room, key)
            except numerics.Reply:
                st.saved_rooms[folded] = room.meta()
                del st.rooms[folded]
                raise
    else:
        _check_admission(st, client, room, key)
    room.members[client.cid] = status
    client.joined[folded] = room
    room.invites.discard(client.cid)
    client.invited.pop(folded, None)
    out.fanout(list(room.members), protocol.format_line(client.prefix, "JOIN", room.name))
    for line in _join_burst(st, client, room):
        out.send(client.cid, line)
    return True


def _join_burst(st: ChatState, client: Client, room: rooms.Room) -> list[bytes]:
    """After the JOIN echo: topic (if any), then NAMES (RFC 2812 3.2.1)."""
    lines = topic_lines(st, client, room) if room.topic else []
    lines += names_lines(st, client, room)
    lines.append(st.numeric(client, numerics.RPL_ENDOFNAMES, room.name))
    return lines


def _check_restored(client: Client, room: rooms.Room, key: str) -> None:
    """The first joiner of a room kept from before a restart: its bans and
    key hold, as forkchat-server(8) says.  Not +i or +l: nobody is left to
    invite, and an empty room is not full; the joiner, its new operator,
    finds those modes set."""
    if room.is_banned(client.folded_prefix):
        raise numerics.Reply(numerics.ERR_BANNEDFROMCHAN, room.name)
    if room.key and key != room.key:
        raise numerics.Reply(numerics.ERR_BADCHANNELKEY, room.name)


def _check_admission(st: ChatState, client: Client, room: rooms.Room, key: str) -> None:
    """Bans, +i, +k, +l and the hard member bound; an INVITE lets through bans, +i and +l."""
    invited = client.cid in room.invites
    if len(room.members) >= st.settings.members_per_room:
        raise numerics.Reply(numerics.ERR_CHANNELISFULL, room.name)
    if not invited and room.is_banned(client.folded_prefix):
        raise numerics.Reply(numerics.ERR_BANNEDFROMCHAN, room.name)
    if not invited and "i" in room.flags:
        raise numerics.Reply(numerics.ERR_INVITEONLYCHAN, room.name)
    if room.key and key != room.key:
        raise numerics.Reply(numerics.ERR_BADCHANNELKEY, room.name)
    if not invited and room.limit and len(room.members) >= room.limit:
        raise numerics.Reply(numerics.ERR_CHANNELISFULL, room.name)


def _part_all(st: ChatState, client: Client, out: Outbox) -> None:
    """JOIN 0: leave every room (RFC 2812 3.2.1)."""
    for room in list(client.joined.values()):
        out.fanout(list(room.members), protocol.format_line(client.prefix, "PART", room.name))
        st.remove_member(client, room)
    st.send_rooms_update(client, out)


def cmd_part(st: ChatState, client: Client, msg: protocol.Message, out: Outbox) -> None:
    """PART <room>{,<room>} [:<reason>]

    The reason goes only to a room the member may talk in: a part is
    followed by a join at flood pace, and a reason relayed from a muted
    (+m without voice) or banned member let it talk through the mode or
    the ban one line per cycle.  The PART still happens, without a reason,
    as hybrid, ratbox and charybdis send it (rather than with the nick as
    reason: a bare PART reads as no reason given, a nick as words said).
    """
    reason = msg.param(1)[:st.settings.kicklen]
    parted: list[str] = []

    def part(name: str) -> None:
        room = st.find_room_for(client, name)
        if room is None:
            raise numerics.Reply(numerics.ERR_NOSUCHCHANNEL, name)
        if client.cid not in room.members:
            raise numerics.Reply(numerics.ERR_NOTONCHANNEL, room.name)
        if reason and room.can_talk(client.cid, client.folded_prefix):
            line = state_talk.text_line(client.prefix, "PART", room.name, reason)
        else:
            line = protocol.format_line(client.prefix, "PART", room.name)
        out.fanout(list(room.members), line)
        st.remove_member(client, room)
        parted.append(name)

    names = [name for name in msg.params[0].split(",") if name]
    if not names:                   # 'PART ,' names no room
        raise numerics.Reply(numerics.ERR_NEEDMOREPARAMS, "PART")
    state_talk.for_each(st, client, out, names, part)
    if parted:
        st.send_rooms_update(client, out)


def cmd_topic(st: ChatState, client: Client, msg: protocol.Message, out: Outbox) -> None:
    """TOPIC <room> [:<topic>]

    An empty topic clears it.  The change goes to every member, setter included.
    A private (+p) room's topic is for its members only.  A member who may
    not talk in the room (+m without voice, or banned) may not set it even
    without +t (404, as for its PRIVMSG): a topic is words to the room, and
    charybdis refuses it too (with 482).
    """
    room = st.find_room_for(client, msg.params[0])
    if room is None:
        raise numerics.Reply(numerics.ERR_NOSUCHCHANNEL, msg.params[0])
    member = client.cid in room.members
    if len(msg.params) < 2:
        if not member and room.is_hidden():
            raise numerics.Reply(numerics.ERR_NOTONCHANNEL, room.name)
        for line in topic_lines(st, client, room):
            out.send(client.cid, line)
        return
    if not member:
        raise numerics.Reply(numerics.ERR_NOTONCHANNEL, room.name)
    if "t" in room.flags and not room.is_op(client.cid):
        raise numerics.Reply(numerics.ERR_CHANOPRIVSNEEDED, room.name)
    if not room.can_talk(client.cid, client.folded_prefix):
        raise numerics.Reply(numerics.ERR_CANNOTSENDTOCHAN, room.name)
    room.topic = fitted_topic(st, room, msg.params[1][:st.settings.topiclen], client.prefix)
    room.topic_setter = client.prefix
    room.topic_time = int(st.now())
    out.fanout(list(room.members), state_talk.text_line(client.prefix, "TOPIC", room.name, room.topic))


def fitted_topic(st: ChatState, room: rooms.Room, topic: str, setter: str = "") -> str:
    """The topic as the tightest line that will ever carry it can hold.

    Three lines carry it: the TOPIC line to the members (after the
    setter's prefix, up to a 30-character nick from an IPv6 address),
    332 to whoever asks or joins later and LIST's 322 (after the server's
    name and the asker's nick, NICKLEN at most, and in 322 the member
    count).  Each was cut at 512 bytes on its own, so a long topic of
    multi-byte characters reached the members whole and a later joiner or
    LIST shorter: people saw different topics.  Cut once, here, to the
    shortest of them, every line carries the same topic.  A topic from
    the store, or kept over a reload that lengthened the server name or
    NICKLEN, is fitted again to the two lines still to come (no setter).
    """
    server, widest_nick = st.settings.server_name, "x" * st.settings.nicklen
    count = "9" * len(str(max(st.settings.members_per_room, len(room.members))))
    heads = [state_talk.text_line(server, numerics.RPL_TOPIC, widest_nick, room.name, ""),
             state_talk.text_line(server, numerics.RPL_LIST, widest_nick, room.name, count, "")]
    if setter:
        heads.append(state_talk.text_line(setter, "TOPIC", room.name, ""))
    room_left = protocol.MAX_BODY_BYTES - max(len(head) - 2 for head in heads)
    return protocol.truncate_utf8(topic.encode(), room_left).decode()


def cmd_names(st: ChatState, client: Client, msg: protocol.Message, out: Outbox) -> None:
    """NAMES [<room>{,<room>}]

    Without a room: every room the client may see, then one 366 for '*'.
    With rooms: each one's 353 lines (if the client may see it) and its own
    366; an unknown, invalid or hidden room gets just its 366 (RFC 2812
    3.2.5: a 353/366 pair per room).
    """
    query = msg.param(0)
    if not query:
        for room in list(st.rooms.values()):
            if visible(room, client):
                for line in names_lines(st, client, room):
                    out.send(client.cid, line)
        out.send(client.cid, st.numeric(client, numerics.RPL_ENDOFNAMES, "*"))
        return
    for name in names_asked(query):
        found = st.find_room(name)
        if found is not None and visible(found, client):
            for line in names_lines(st, client, found):
                out.send(client.cid, line)
        out.send(client.cid, st.numeric(client, numerics.RPL_ENDOFNAMES, name))


def names_asked(query: str) -> list[str]:
    """The rooms a NAMES list asks for, each once, as first spelled: one 366 each."""
    names = [name for name in query.split(",") if name] or [query]   # 'NAMES ,': one 366
    # Each room once: 'NAMES #big,#big,...' made one line a reply of 250
    # times a 5000-member room (39 MB held for a client that reads slowly).
    firsts: dict[str, str] = {}
    for name in names:
        firsts.setdefault(protocol.casefold(name), name)
    return list(firsts.values())


def cmd_list(st: ChatState, client: Client, msg: protocol.Message, out: Outbox) -> None:
    """LIST [<item>{,<item>}] [<condition>{,<condition>}]

    Items (005 ELIST=MNU): room names or masks, '!mask' to exclude, '>n' and
    '<n' on the member count.  The modern document puts the conditions in a
    second parameter (RFC 2812 has a server there): its '>n'/'<n' items
    filter too, anything else in it is ignored.  No 321: modern servers skip it.
    """
    for room in _list_rooms(st, _list_query(msg)):
        if visible(room, client):
            out.send(client.cid, st.numeric(client, numerics.RPL_LIST, room.name,
                                            str(len(room.members)), text=room.topic))
    out.send(client.cid, st.numeric(client, numerics.RPL_LISTEND))


def _list_query(msg: protocol.Message) -> str:
    """The items of a LIST, with the count conditions of its second parameter."""
    conditions = [item for item in msg.param(1).split(",") if _is_count_condition(item)]
    return ",".join([msg.param(0), *conditions])


def list_scans_every_room(msg: protocol.Message) -> bool:
    """Whether a LIST looks at every room (anything but plain room names)."""
    return _plain_names(_list_query(msg)) is None


def _plain_names(query: str) -> list[str] | None:
    """The items of a LIST query naming rooms only, exactly; else None."""
    items = [item for item in query.split(",") if item]
    if items and all(protocol.is_room_name(item) and "*" not in item and "?" not in item
                     for item in items):
        return items
    return None


def _is_count_condition(item: str) -> bool:
    """'>n' or '<n': ELIST's U, a condition on the member count."""
    number = item[1:]
    return item[:1] in ("<", ">") and number.isascii() and number.isdigit()


def _list_rooms(st: ChatState, query: str) -> list[rooms.Room]:
    named = _plain_names(query)
    if named is not None:
        found = (st.find_room(item) for item in named)        # plain names: no scan
        return [room for room in found if room is not None]
    items = [item for item in query.split(",") if item]
    masks: list[str] = []
    negated: list[str] = []
    more, less = -1, rooms.MAX_LIMIT
    for item in items:
        number = item[1:]
        if _is_count_condition(item):
            if item[0] == ">":
                more = max(more, int(number))
            else:
                less = min(less, int(number))
        elif item[0] == "!":
            negated.append(protocol.casefold(item[1:]))
        else:
            masks.append(protocol.casefold(item))

    wanted, unwanted = rooms.globs_regex(masks), rooms.globs_regex(negated)

    def accept(room: rooms.Room) -> bool:
        if not more < len(room.members) < less:
            return False
        name = protocol.casefold(room.name)
        if wanted is not None and wanted.fullmatch(name) is None:
            return False
        return unwanted is None or unwanted.fullmatch(name) is None

    return [room for room in st.rooms.values() if accept(room)]


def cmd_kick(st: ChatState, client: Client, msg: protocol.Message, out: Outbox) -> None:
    """KICK <room>{,<room>} <nick>{,<nick>} [:<reason>]

    One room and several nicks, or as many rooms as nicks, paired in order.
    """
    names = msg.params[0].split(",")
    named = [nick for nick in msg.params[1].split(",") if nick]
    nicks = named[:MAX_KICKS]
    if not nicks:                   # 'KICK #r ,' names nobody
        raise numerics.Reply(numerics.ERR_NEEDMOREPARAMS, "KICK")
    if len(names) == 1:
        pairs = [(names[0], nick) for nick in nicks]
    elif len(names) == len(named):
        pairs = list(zip(names, nicks))
    else:
        raise numerics.Reply(numerics.ERR_NEEDMOREPARAMS, "KICK")
    reason = msg.param(2)[:st.settings.kicklen] or client.nick
    kicked: dict[int, Client] = {}
    for name, nick in pairs:
        try:
            target = _kick_one(st, client, name, nick, reason, out)
            kicked[target.cid] = target
        except numerics.Reply as error:
            out.send(client.cid, st.error_line(client, error))
    state_talk.tell_dropped(st, client, out, named, MAX_KICKS, "KICK", "nickname(s)",
                            "not kicked")
    for target in kicked.values():
        st.send_rooms_update(target, out)


def _kick_one(st: ChatState, client: Client, name: str, nick: str, reason: str,
              out: Outbox) -> Client:
    room = st.find_room_for(client, name)
    if room is None:
        raise numerics.Reply(numerics.ERR_NOSUCHCHANNEL, name)
    if client.cid not in room.members:
        raise numerics.Reply(numerics.ERR_NOTONCHANNEL, room.name)
    if not room.is_op(client.cid):
        raise numerics.Reply(numerics.ERR_CHANOPRIVSNEEDED, room.name)
    target = st.find_nick(nick)
    if target is None:
        raise numerics.Reply(numerics.ERR_NOSUCHNICK, nick)
    if target.cid not in room.members:
        raise numerics.Reply(numerics.ERR_USERNOTINCHANNEL, target.nick, room.name)
    line = state_talk.text_line(client.prefix, "KICK", room.name, target.nick, reason)
    out.fanout(list(room.members), line)
    st.remove_member(target, room)
    return target


def cmd_invite(st: ChatState, client: Client, msg: protocol.Message, out: Outbox) -> None:
    """INVITE <nick> <room>

    The room need not exist (RFC 2812 3.2.7); when it does, only members
    may invite, only ops when it is +i.  An op's invite lets the target
    through +i, +l and bans once; any other member's (to a room without
    +i) is only passed on, as ergo does (#1876): it let whoever the ops had
    banned, or kept out with +l, in by a friend's word.  A non-member's
    invite to a secret room goes out as one to a missing room:
    transmitted, but it lets nobody through.
    """
    target = st.find_nick(msg.params[0])
    if target is None:
        raise numerics.Reply(numerics.ERR_NOSUCHNICK, msg.params[0])
    name = msg.params[1]
    room = st.find_room_for(client, name)
    if room is not None:
        if client.cid not in room.members:
            raise numerics.Reply(numerics.ERR_NOTONCHANNEL, room.name)
        if target.cid in room.members:
            raise numerics.Reply(numerics.ERR_USERONCHANNEL, target.nick, room.name)
        op = room.is_op(client.cid)
        if "i" in room.flags and not op:
            raise numerics.Reply(numerics.ERR_CHANOPRIVSNEEDED, room.name)
        if op:
            _remember_invite(st, target, room)
        name = room.name
    elif not protocol.valid_room(name, st.settings.roomlen):
        raise numerics.Reply(numerics.ERR_NOSUCHCHANNEL, name)
    out.send(client.cid, st.numeric(client, numerics.RPL_INVITING, target.nick, name))
    out.send(target.cid, protocol.format_line(client.prefix, "INVITE", target.nick, name))
    if target.away:
        out.send(client.cid, st.numeric(client, numerics.RPL_AWAY, target.nick, text=target.away))


def _remember_invite(st: ChatState, target: Client, room: rooms.Room) -> None:
    """Record a pending invite; a client keeps at most MAX_INVITES, oldest dropped."""
    folded = protocol.casefold(room.name)
    target.invited.pop(folded, None)
    while len(target.invited) >= MAX_INVITES:
        oldest = next(iter(target.invited))
        del target.invited[oldest]
        stale = st.rooms.get(oldest)
        if stale is not None:
            stale.invites.discard(target.cid)
    target.invited[folded] = None
    room.invites.add(target.cid)


def room_mode(st: ChatState, client: Client, msg: protocol.Message, out: Outbox) -> None:
    """MODE <room> [<modes> [<params>...]]"""
    room = st.find_room(msg.params[0])
    if room is None:
        raise numerics.Reply(numerics.ERR_NOSUCHCHANNEL, msg.params[0])
    if not msg.param(1):        # no modestring, or an empty one: a query
        _send_room_modes(st, client, room, out)
        return
    parsed = rooms.parse_modes(msg.params[1], msg.params[2:])
    for letter in parsed.unknown:
        out.send(client.cid, st.numeric(client, numerics.ERR_UNKNOWNMODE, letter))
    if parsed.list_bans:
        _send_ban_list(st, client, room, out)
    if parsed.missing:
        out.send(client.cid, st.numeric(client, numerics.ERR_NEEDMOREPARAMS, "MODE"))
    if not parsed.changes:
        return
    if not room.is_op(client.cid):
        raise numerics.Reply(numerics.ERR_CHANOPRIVSNEEDED, room.name)
    outcome = rooms.apply_modes(room, parsed.changes, lambda nick: _resolve(st, nick),
                                client.prefix, int(st.now()), st.settings.bans_per_room,
                                ban_mask_bytes(st, room, client.prefix))
    for error in outcome.errors:
        out.send(client.cid, st.error_line(client, error))
    for line in mode_lines(client.prefix, room, outcome.applied):
        out.fanout(list(room.members), line)
    for cid in outcome.touched:
        st.send_rooms_update(st.clients[cid], out)


def mode_lines(prefix: str, room: rooms.Room, applied: list[rooms.ModeChange]) -> list[bytes]:
    """The MODE lines from `prefix` that tell a room's members of these
    changes: as many as 512 bytes and 005 MODES need.  The broker's own
    (a room's stored modes come back) are told so too."""
    # ':prefix MODE #room ' and CRLF, and a ':' the last parameter may need
    overhead = len(f":{prefix} MODE {room.name} ".encode()) + 3
    return [protocol.format_line(prefix, "MODE", room.name, *rooms.mode_line_params(group))
            for group in rooms.mode_line_groups(applied, protocol.MAX_LINE_BYTES - overhead)]


def ban_mask_bytes(st: ChatState, room: rooms.Room, setter: str) -> int:
    """The most UTF-8 bytes of a ban mask that the lines carrying it hold
    whole: the MODE setting it, or lifting it from any member (NICKLEN,
    USERLEN, the widest host), and 367 to any asker, with its setter and
    the time it was set."""
    nick = "x" * st.settings.nicklen
    widest = protocol.user_prefix(nick, "x" * session.USERLEN, "x" * session.WIDEST_HOST)
    heads = [f":{prefix} MODE {room.name} +b " for prefix in (widest, setter)]
    heads.append(f":{st.settings.server_name} {numerics.RPL_BANLIST} {nick} {room.name}  "
                 f"{setter} {'9' * 11}")          # (a time: 10 digits until 2286)
    return protocol.MAX_BODY_BYTES - max(len(head.encode()) for head in heads)


def _resolve(st: ChatState, nick: str) -> tuple[int, str] | None:
    target = st.find_nick(nick)
    return None if target is None else (target.cid, target.nick)


def _send_room_modes(st: ChatState, client: Client, room: rooms.Room, out: Outbox) -> None:
    """324 and 329; the key is shown to members only."""
    params = room.mode_params(with_key=client.cid in room.members)
    out.send(client.cid, st.numeric(client, numerics.RPL_CHANNELMODEIS, room.name, *params))
    out.send(client.cid, st.numeric(client, numerics.RPL_CREATIONTIME, room.name, str(room.created)))


def _send_ban_list(st: ChatState, client: Client, room: rooms.Room, out: Outbox) -> None:
    for ban in room.bans.values():
        out.send(client.cid, st.numeric(client, numerics.RPL_BANLIST, room.name, ban.mask,
                                        ban.setter, str(ban.time)))
    out.send(client.cid, st.numeric(client, numerics.RPL_ENDOFBANLIST, room.name))
