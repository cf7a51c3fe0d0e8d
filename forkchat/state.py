"""The broker's chat state: nicks, rooms, and the table of shared commands.

Pure: no sockets, no I/O.  The broker owns one `ChatState`; it calls
`request(cid, msg, out)` for every shared-state command a worker forwards,
and the state writes lines through the `Outbox` the broker passes in
(`send` to one client, `fanout` of the same bytes to many, `update` of a
worker's view of its own identity, `drop` of a killed client, `serve` of a
server query back to the worker that answers it).

Dispatch follows ergo's `Command.Run`: `request` looks the command up in
`HANDLERS`, checks registration, operator status and the parameter count in
one place, then calls the handler.  Handlers raise `numerics.Reply` for
expected failures and `request` turns that into the numeric (never for
NOTICE).  Handlers live by topic in state_rooms.py (JOIN .. MODE),
state_talk.py (PRIVMSG, NOTICE, AWAY, WALLOPS, KILL), state_query.py
(WHO, WHOIS, WHOWAS, ISON, USERHOST, LUSERS, MOTD, VERSION) and
state_users.py (NICK, MODE); the client lifecycle (connect, register,
disconnect, reregister) and the helpers every handler shares stay here.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Collection, Iterable, Protocol

from forkchat import numerics, protocol, rooms, state_query, state_rooms, state_talk, state_users

USER_MODES = state_users.USER_MODES
MAX_TARGETS = state_talk.MAX_TARGETS
WHOWAS_PER_NICK = 5
WHOWAS_NICKS = 1000          # nicks remembered for WHOWAS, oldest forgotten first
_USER_FORBIDDEN = str.maketrans("", "", " \r\n\0!@:")


@dataclass(frozen=True)
class Settings:
    """What the broker builds from the configuration; replaced whole on reload."""
    server_name: str = "forkchat.local"
    network: str = "forkchat"
    version: str = "forkchat-0.1.0"
    created: str = ""
    motd_lines: tuple[str, ...] = ()
    default_room: str = "#lobby"
    nicklen: int = 30
    roomlen: int = 50
    topiclen: int = 390
    rooms_per_client: int = 50
    members_per_room: int = 1000
    bans_per_room: int = 100
    max_rooms: int = 10000
    kicklen: int = 390
    awaylen: int = 390


class Outbox(Protocol):
    def send(self, cid: int, line: bytes) -> None: ...
    def fanout(self, cids: Iterable[int], line: bytes) -> None: ...
    # The same line to all of `cids` (a room's members) but `but`, its sender.
    def fanout_but(self, cids: Collection[int], but: int, line: bytes) -> None: ...
    def update(self, cid: int, changes: dict) -> None: ...
    # Close the client's connection with `reason` (its ERROR line), after
    # its `last` line if any (KILL's own): both past broker_buffer_bytes.
    def drop(self, cid: int, reason: str, last: bytes = b"") -> None: ...
    def serve(self, cid: int, line: bytes) -> None: ...


@dataclass(eq=False)
class Client:
    cid: int
    host: str
    nick: str = ""
    user: str = ""
    realname: str = ""
    registered: bool = False
    modes: set[str] = field(default_factory=set)
    away: str = ""
    joined: dict[str, rooms.Room] = field(default_factory=dict)   # folded room name -> Room
    invited: dict[str, None] = field(default_factory=dict)        # folded room names, oldest first
    signon: int = 0
    last_talk: float = 0.0       # the broker's clock() then: WHOIS's idle is a span
    prefix: str = ""             # nick!user@host, what every relayed line carries
    folded_prefix: str = ""      # casefolded prefix, what ban masks match


@dataclass(frozen=True)
class WhowasEntry:
    nick: str
    user: str
    host: str
    realname: str
    time: int
    seq: int            # global order of departure: WHOWAS answers newest first


@dataclass(frozen=True)
class Handler:
    func: Callable[["ChatState", Client, protocol.Message, Outbox], None]
    min_params: int = 0
    registered: bool = True
    oper: bool = False
    quiet: bool = False          # NOTICE: errors are never answered (RFC 2812 3.3.2)


class ChatState:
    """All shared chat state of one broker."""

    def __init__(self, settings: Settings, now: Callable[[], float] = time.time,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`now` tells dates (sign-on, a topic's, a room's creation);
        `clock` measures spans (idle), which a wall clock set back or
        forward (NTP, `date -s`) must not change."""
        self.settings = settings
        self.now = now
        self.clock = clock
        self.clients: dict[int, Client] = {}
        self.nicks: dict[str, Client] = {}          # folded nick -> client (reserved or registered)
        self.rooms: dict[str, rooms.Room] = {}      # folded room name -> Room
        self.saved_rooms: dict[str, dict] = {}       # records from before a restart
        self.changed_rooms: dict[str, None] = {}     # folded names created or removed since
                                                     # the last store_changes()
        self.whowas: OrderedDict[str, list[WhowasEntry]] = OrderedDict()
        self.whowas_seq = 0
        self.registered_count = 0
        self.max_registered = 0
        self.mode_counts = {letter: 0 for letter in USER_MODES}   # registered users per user mode
        # reregister's forced renames: cid -> (nick lost, NICK line, cids told so far)
        self.forced_renames: dict[int, tuple[str, bytes, set[int]]] = {}
        # the welcome burst's lines that are the same for everyone but the
        # nick, made for the current settings (state_query.FixedLines)
        self.welcome_fixed: state_query.FixedLines | None = None

    # -- lifecycle ---------------------------------------------------------

    def connect(self, cid: int, host: str) -> None:
        """A new connection, not yet registered."""
        self._forget(cid)
        self.clients[cid] = Client(cid, host=host or "unknown")

    def request(self, cid: int, msg: protocol.Message, out: Outbox) -> None:
        """Run one shared-state command; the checks every command shares are done here."""
        client = self.clients.get(cid)
        if client is None:
            return
        handler = HANDLERS.get(msg.command)
        if handler is None:
            out.send(cid, self.numeric(client, numerics.ERR_UNKNOWNCOMMAND, msg.command))
            return
        try:
            self._check(client, msg, handler)
            handler.func(self, client, msg, out)
        except numerics.Reply as error:
            if not handler.quiet:
                out.send(cid, self.error_line(client, error))

    def scans_everything(self, msg: protocol.Message) -> bool:
        """Whether the command's work grows with the whole server (every user
        or every room, or a room of thousands) rather than with what it
        names: the broker paces these."""
        scan = _SCANS.get(msg.command)
        return scan is not None and scan(self, msg)

    def refuse_scan(self, cid: int, msg: protocol.Message, out: Outbox) -> None:
        """263 RPL_TRYAGAIN for a paced scan, then the reply's end numeric(s):
        a client waits for the end of what it asked (irssi's query stays
        pending and shows nothing, a list window keeps waiting), so the
        refusal closes it as ratbox and its heirs do.  (A scan that waited
        for its turn may find its client gone: killed, its link not yet closed.)"""
        client = self.clients.get(cid)
        if client is None:
            return
        out.send(cid, self.numeric(client, numerics.RPL_TRYAGAIN, msg.command))
        for code, *params in _SCAN_ENDS[msg.command](msg):
            out.send(cid, self.numeric(client, code, *params))

    def _check(self, client: Client, msg: protocol.Message, handler: Handler) -> None:
        if handler.registered and not client.registered:
            raise numerics.Reply(numerics.ERR_NOTREGISTERED)
        if handler.oper and "o" not in client.modes:
            raise numerics.Reply(numerics.ERR_NOPRIVILEGES)
        if not protocol.has_params(msg, handler.min_params):
            raise numerics.Reply(numerics.ERR_NEEDMOREPARAMS, msg.command)

    def register(self, cid: int, user: str, realname: str, out: Outbox) -> None:
        """NICK and USER are in: mark registered and send the welcome burst."""
        client = self.clients.get(cid)
        if client is None or client.registered or not client.nick:
            return
        client.user = user.translate(_USER_FORBIDDEN)[:64] or "unknown"
        client.realname = realname
        client.signon = int(self.now())
        client.last_talk = self.clock()
        self._set_registered(client)
        for line in state_query.welcome_lines(self, client):
            out.send(cid, line)
        out.update(cid, {"registered": True})

    def _set_registered(self, client: Client) -> None:
        client.registered = True
        self.set_prefix(client)
        self.registered_count += 1
        self.max_registered = max(self.max_registered, self.registered_count)
        for letter in client.modes:
            self.mode_counts[letter] += 1

    def set_oper(self, cid: int, oper_name: str, out: Outbox) -> None:
        """The worker checked OPER's password: give +o (oper_name is for the worker's log)."""
        client = self.clients.get(cid)
        if client is None or not client.registered:
            return
        out.send(cid, self.numeric(client, numerics.RPL_YOUREOPER))
        if self.set_user_mode(client, "o", True):
            out.send(cid, state_talk.text_line(client.nick, "MODE", client.nick, "+o"))
            out.update(cid, {"modes": self.user_modes(client), "oper": True})

    def disconnect(self, cid: int, reason: str, out: Outbox) -> None:
        """The client is gone: QUIT to everyone sharing a room, free its nick. Idempotent."""
        client = self.clients.get(cid)
        if client is None:
            return
        if client.registered:
            peers = self.neighbours(client)
            muted = self._muted_peers(client) if reason.startswith(protocol.QUIT_PREFIX) else set()
            if muted:
                out.fanout(muted, state_talk.text_line(client.prefix, "QUIT", protocol.PLAIN_QUIT))
                peers -= muted
            if peers:
                out.fanout(peers, state_talk.text_line(client.prefix, "QUIT",
                                                       self._quit_reason(reason)))
            self.record_whowas(client)
        self._forget(cid)

    def _quit_reason(self, reason: str) -> str:
        """A client's own QUIT reason cut to kicklen characters, as a PART's
        (state_rooms.cmd_part), as hybrid does; the server's reasons are
        its own and short.

        Its worker takes a line of 512 bytes: a reason of nearly all of
        them, relayed with "Quit: " and the quitter's long prefix, went
        over the line, cut wherever its 512th byte fell (format_line),
        where a PART's reason of the same words came whole.
        """
        if not reason.startswith(protocol.QUIT_PREFIX):
            return reason
        return reason[:len(protocol.QUIT_PREFIX) + self.settings.kicklen]

    def _muted_peers(self, client: Client) -> set[int]:
        """The others in the rooms `client` may not talk in (+m without
        voice, or a ban): its own QUIT reason is not for them.

        As a PART's (state_rooms.cmd_part): quitting, coming back and
        joining again talked through the mode, a line per cycle.  Their
        clients show a QUIT in every room the quitter shared with them, so
        one who also shares a room it may talk in gets no reason either; a
        reason the server gives (a ping timeout, a KILL) goes to everyone.
        hybrid, ratbox and charybdis relay the reason to every room;
        UnrealIRCd parts such rooms without it first.
        """
        muted: set[int] = set()
        for room in client.joined.values():
            if not room.can_talk(client.cid, client.folded_prefix):
                muted.update(room.members)
        muted.discard(client.cid)
        return muted

    def _forget(self, cid: int) -> None:
        """Remove every trace of `cid` without telling anyone."""
        client = self.clients.pop(cid, None)
        self.forced_renames.pop(cid, None)
        if client is None:
            return
        folded = protocol.casefold(client.nick)
        if self.nicks.get(folded) is client:
            del self.nicks[folded]
        if client.registered:
            self.registered_count -= 1
            for letter in client.modes:
                self.mode_counts[letter] -= 1
        for room in list(client.joined.values()):
            self.remove_member(client, room)
        for name in client.invited:
            invited_to = self.rooms.get(name)
            if invited_to is not None:
                invited_to.invites.discard(cid)

    def reregister(self, cid: int, identity: dict, out: Outbox, host: str | None = None) -> None:
        """Restore a client after a broker restart, silently (issue 6).

        `host` is the one the broker knows (from the address the supervisor
        accepted the client from); the identity's is its worker's word.
        """
        self._forget(cid)
        client = Client(cid, host=host or str(identity.get("host") or "unknown"))
        self.clients[cid] = client
        nick = str(identity.get("nick") or "")
        if not protocol.valid_nick(nick, max(self.settings.nicklen, len(nick))):
            return
        lost = ""
        if protocol.casefold(nick) in self.nicks:
            lost, nick = nick, self._free_guest_nick(cid)
            out.update(cid, {"nick": nick})
        client.nick = nick
        self.nicks[protocol.casefold(nick)] = client
        if identity.get("registered") is False:
            return                  # only a reserved nick: the worker will REGISTER later
        client.user = str(identity.get("user") or "unknown").translate(_USER_FORBIDDEN) or "unknown"
        client.realname = str(identity.get("realname") or "")
        client.away = str(identity.get("away") or "")
        client.modes = set(str(identity.get("modes") or "")) & set(USER_MODES)
        client.signon = int(self.now())
        client.last_talk = self.clock()
        self._set_registered(client)
        room_map = identity.get("rooms")
        if isinstance(room_map, dict):
            for name, status in room_map.items():
                self._restore_member(client, str(name), rooms.status_string(str(status)))
        if lost:
            self._announce_forced_nick(client, lost, out)

    def _announce_forced_nick(self, client: Client, lost: str, out: Outbox) -> None:
        """Tell a client renamed by reregister, and its rooms, as a forced NICK.

        Its IRC client still believes it is `lost`, and so do the members of
        its rooms: without this line both keep a stale nick.  The holder of
        `lost` is left out: it would read the line as its own rename.
        """
        recipients = self.neighbours(client)
        recipients.add(client.cid)
        holder = self.nicks.get(protocol.casefold(lost))
        if holder is not None:
            recipients.discard(holder.cid)
        old_prefix = protocol.user_prefix(lost, client.user, client.host)
        line = protocol.format_line(old_prefix, "NICK", client.nick)
        out.fanout(recipients, line)
        self.forced_renames[client.cid] = (lost, line, recipients)

    def finish_recovery(self, out: Outbox) -> None:
        """Every worker is back: tell the forced renames to members who came
        back after the renamed client, each once.

        Workers re-register in any order, so when a client lost its nick its
        rooms may not have had all their members yet; those that came later
        still hold the lost nick for it.  The broker calls this once the last
        awaited worker is back (or the wait is over).
        """
        renames, self.forced_renames = self.forced_renames, {}
        for cid, (lost, line, told) in renames.items():
            client = self.clients.get(cid)
            if client is None:
                continue
            recipients = self.neighbours(client) - told
            holder = self.nicks.get(protocol.casefold(lost))
            if holder is not None:
                recipients.discard(holder.cid)
            if recipients:
                out.fanout(recipients, line)

    def _free_guest_nick(self, cid: int) -> str:
        base = f"Guest{cid}"
        nick, suffix = base, 0
        while protocol.casefold(nick) in self.nicks:
            suffix += 1
            nick = f"{base}_{suffix}"
        return nick

    def _restore_member(self, client: Client, name: str, status: str) -> None:
        if not protocol.valid_room(name, max(self.settings.roomlen, len(name))):
            return
        folded = protocol.casefold(name)
        room = self.rooms.get(folded)
        if room is None:
            room = self.new_room(name, folded)
        room.members[client.cid] = status
        client.joined[folded] = room

    def take_settings(self, settings: Settings) -> None:
        """A reload's settings.  The topics are fitted again to the lines
        still to carry them: a longer server name or NICKLEN left a topic
        fitted before it to be cut apart by 332 and LIST's 322."""
        self.settings = settings
        for room in self.rooms.values():
            if room.topic:
                room.topic = state_rooms.fitted_topic(self, room, room.topic)

    def new_room(self, name: str, folded: str) -> rooms.Room:
        """Create a room; a record kept from before a restart comes back with it."""
        room = rooms.Room(name, created=int(self.now()))
        saved = self.saved_rooms.pop(folded, None)
        if saved is not None:
            room.apply_meta(saved)
            room.topic = state_rooms.fitted_topic(self, room, room.topic)
        self.rooms[folded] = room
        self.changed_rooms[folded] = None
        return room

    def room_records(self) -> dict[str, dict]:
        """Every room's record (what a new broker would find in the store)."""
        return {folded: room.meta() for folded, room in self.rooms.items()}

    def store_changes(self) -> dict[str, dict | None]:
        """The room records to write to the broker's store since the last
        call: a room's, a kept one's, or None for a record to delete.

        Only the rooms created or removed since (a topic or mode change is
        written at once, by the broker): encoding every room's record at
        each write took 60 ms at 10000 rooms, and seconds with their bans,
        twice a second while anyone joined or left.

        The store keeps at most max_rooms records, live and kept together.
        The rooms that existed at a shutdown and never came back were kept
        from one restart to the next, so each restart could add max_rooms
        records to the store, and to the memory of every later broker,
        which loads them all.  Past the bound the kept records go, the
        least recently written first (the store loads them in that order);
        a room that exists keeps its record.
        """
        excess = len(self.saved_rooms) + len(self.rooms) - self.settings.max_rooms
        for folded in list(itertools.islice(self.saved_rooms, max(0, excess))):
            del self.saved_rooms[folded]
            self.changed_rooms[folded] = None
        changed, self.changed_rooms = self.changed_rooms, {}
        changes: dict[str, dict | None] = {}
        for folded in changed:
            room = self.rooms.get(folded)
            changes[folded] = room.meta() if room is not None else self.saved_rooms.get(folded)
        return changes

    def counts(self) -> tuple[int, int]:
        return self.registered_count, len(self.rooms)

    def identity(self, cid: int) -> dict:
        """What a worker would need to re-register this client with a new broker."""
        client = self.clients.get(cid)
        if client is None:
            return {}
        return {"nick": client.nick, "user": client.user, "host": client.host,
                "realname": client.realname, "modes": self.user_modes(client),
                "away": client.away, "rooms": self.room_statuses(client)}

    # -- helpers the handlers share ------------------------------------------

    def numeric(self, client: Client, code: str, *params: str, text: str | None = None) -> bytes:
        """A numeric to `client`; its text always goes as trailing, even one word.

        Same shape as numerics.reply, but `:server 353 me = #r :@me` rather than
        `... = #r @me`: some clients split names and texts on ' :' only.
        """
        target = client.nick if client.registered else "*"
        if text is None:
            text = numerics.TEXTS.get(code)
        if text is None:
            return protocol.format_line(self.settings.server_name, code, target, *params)
        return state_talk.text_line(self.settings.server_name, code, target, *params, text)

    @staticmethod
    def stand_in(nick: str) -> Client:
        """A registered client of that nick that is nobody: what lines
        addressed to any client are made for once (state_query.FixedLines)."""
        return Client(0, host="", nick=nick, registered=True)

    def error_line(self, client: Client, error: numerics.Reply) -> bytes:
        return self.numeric(client, error.code, *error.params, text=error.text)

    def find_nick(self, nick: str) -> Client | None:
        """A registered client by nick (a nick only reserved before registration is nobody)."""
        client = self.nicks.get(protocol.casefold(nick))
        return client if client is not None and client.registered else None

    def find_room(self, name: str) -> rooms.Room | None:
        return self.rooms.get(protocol.casefold(name))

    def find_room_for(self, client: Client, name: str) -> rooms.Room | None:
        """The room `name` as `client` may know it: None also for a secret room it is not in."""
        room = self.rooms.get(protocol.casefold(name))
        return room if room is not None and room.exists_for(client.cid) else None

    def set_prefix(self, client: Client) -> None:
        client.prefix = protocol.user_prefix(client.nick, client.user, client.host)
        client.folded_prefix = protocol.casefold(client.prefix)

    def neighbours(self, client: Client) -> set[int]:
        """Every other client sharing at least one room with `client`."""
        peers: set[int] = set()
        for room in client.joined.values():
            peers.update(room.members)
        peers.discard(client.cid)
        return peers

    def shares_room(self, client: Client, other: Client) -> bool:
        small, large = sorted((client.joined, other.joined), key=len)
        return any(name in large for name in small)

    def remove_member(self, client: Client, room: rooms.Room) -> None:
        """Take `client` out of `room`; an empty room ceases to exist."""
        room.members.pop(client.cid, None)
        folded = protocol.casefold(room.name)
        client.joined.pop(folded, None)
        if not room.members and self.rooms.get(folded) is room:
            del self.rooms[folded]
            self.changed_rooms[folded] = None

    def room_statuses(self, client: Client) -> dict[str, str]:
        return {room.name: room.members.get(client.cid, "") for room in client.joined.values()}

    def send_rooms_update(self, client: Client, out: Outbox) -> None:
        out.update(client.cid, {"rooms": self.room_statuses(client)})

    def user_modes(self, client: Client) -> str:
        return "".join(sorted(client.modes))

    def set_user_mode(self, client: Client, letter: str, on: bool) -> bool:
        """Set or clear one user mode, keeping the LUSERS counters; True if it changed."""
        if (letter in client.modes) == on:
            return False
        if on:
            client.modes.add(letter)
        else:
            client.modes.discard(letter)
        if client.registered:
            self.mode_counts[letter] += 1 if on else -1
        return True

    def record_whowas(self, client: Client) -> None:
        folded = protocol.casefold(client.nick)
        self.whowas_seq += 1
        entry = WhowasEntry(client.nick, client.user, client.host, client.realname,
                            int(self.now()), self.whowas_seq)
        history = self.whowas.pop(folded, [])
        history.append(entry)
        self.whowas[folded] = history[-WHOWAS_PER_NICK:]
        while len(self.whowas) > WHOWAS_NICKS:
            self.whowas.popitem(last=False)


HANDLERS: dict[str, Handler] = {
    "NICK": Handler(state_users.cmd_nick, registered=False),
    "JOIN": Handler(state_rooms.cmd_join, min_params=1),
    "PART": Handler(state_rooms.cmd_part, min_params=1),
    "TOPIC": Handler(state_rooms.cmd_topic, min_params=1),
    "NAMES": Handler(state_rooms.cmd_names),
    "LIST": Handler(state_rooms.cmd_list),
    "KICK": Handler(state_rooms.cmd_kick, min_params=2),
    "INVITE": Handler(state_rooms.cmd_invite, min_params=2),
    "MODE": Handler(state_users.cmd_mode, min_params=1),
    "PRIVMSG": Handler(state_talk.cmd_privmsg),
    "NOTICE": Handler(state_talk.cmd_notice, quiet=True),
    "AWAY": Handler(state_talk.cmd_away),
    "WALLOPS": Handler(state_talk.cmd_wallops, min_params=1, oper=True),
    "KILL": Handler(state_talk.cmd_kill, min_params=1, oper=True),
    "WHO": Handler(state_query.cmd_who),
    "WHOIS": Handler(state_query.cmd_whois),
    "WHOWAS": Handler(state_query.cmd_whowas),
    "ISON": Handler(state_query.cmd_ison, min_params=1),
    "USERHOST": Handler(state_query.cmd_userhost, min_params=1),
    "LUSERS": Handler(state_query.cmd_lusers),
    "MOTD": Handler(state_query.cmd_motd),
    "VERSION": Handler(state_query.cmd_version),
    **{name: Handler(state_query.cmd_worker_query) for name in state_query.WORKER_QUERIES},
}

# Commands whose work may grow with the whole server: they answer from
# every user or every room (or a room of thousands), and the broker paces
# them (see broker.py).
_SCANS: dict[str, Callable[[ChatState, protocol.Message], bool]] = {
    "WHO": state_query.who_is_a_scan,
    # one room is bounded by members_per_room; a list may name a big room a hundred times
    "NAMES": lambda _st, msg: len([name for name in msg.param(0).split(",") if name]) != 1,
    "LIST": lambda _st, msg: state_rooms.list_scans_every_room(msg),
    # a mask answers from all the history: up to 5000 entries, 10000 lines
    "WHOWAS": lambda _st, msg: "*" in msg.param(0) or "?" in msg.param(0),
}
# The end numeric(s) each paced scan's reply closes with: sent after a 263 too.
_SCAN_ENDS: dict[str, Callable[[protocol.Message], list[tuple[str, ...]]]] = {
    "WHO": lambda msg: [(numerics.RPL_ENDOFWHO, msg.param(0) or "*")],
    "NAMES": lambda msg: [(numerics.RPL_ENDOFNAMES, name)
                          for name in (state_rooms.names_asked(msg.param(0))
                                       if msg.param(0) else ["*"])],
    "LIST": lambda _msg: [(numerics.RPL_LISTEND,)],
    "WHOWAS": lambda msg: [(numerics.RPL_ENDOFWHOWAS, msg.param(0))],
}
