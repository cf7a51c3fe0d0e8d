"""The broker: one process, one selector loop, all shared chat state.

    worker ─┐                          ┌─ ChatState (state.py): nicks, rooms,
    worker ─┼─ private Unix socket ──▶ │  topics, modes, bans, away, whowas
    worker ─┘   (one link each)        └─ fan-out: same bytes to every link
                       ▲
    supervisor ── control socket (CONFIG and CONTROL ops; see below)

Workers connect to the broker's listening Unix socket, which the
supervisor creates once and hands to every broker it starts; a worker whose
broker died reconnects to the same address and re-registers (REREGISTER)
with the next broker.  The broker checks each peer's uid (SO_PEERCRED).

A connection id (cid) is bound to the worker process that serves it: the
supervisor tells the broker each worker's pid as its spawner reports it
("bind"; a new broker gets the list at start), and a HELLO is taken only
from the process its cid was given to (the link's SO_PEERCRED pid).  A
worker is crash-isolated so that its client can only hurt itself: one that
stated another's cid took over that client, evicting it, reading what it
is sent and speaking as it.  A HELLO that comes before its worker's pid is
held until it does (the fork and the worker's connect race the spawner's
report), at most BIND_WAIT_S.

The supervisor's word carries the address it accepted the client from,
and the client's host (in its prefix, WHO and WHOIS, matched by bans,
counted by the OPER guard) is made from that, as the worker makes its own
(session.client_host): the "host" of a HELLO or a REREGISTER is the
worker's word, and one taken over evaded bans or posed as another
address with it.  A worker stating another host is logged, once per link.

The broker never blocks on a worker: output to each link goes through a
bounded `ipc.FrameWriter`, and what gathered for one link since the last
flush leaves in one send; flushes come at most every FLUSH_WINDOW_S.  A
room's talk that comes in a row is gathered first (RoomBatch) and queued
on its members' links, joined once, at the flush or as soon as anything
else is queued, so that every link keeps the order of what it is sent.  A
link whose buffer overflows is told to drop its client ("Max SendQ
exceeded") and is no longer written to.  The lines that answer a client's
own command (a REQUEST or its REGISTER) go as REPLY frames, which the
bound does not count: a LIST of 10000 rooms is megabytes, and the client
that asked must get it whole.  Its worker sends no further command before
that reply has reached the client, so one reply per link at most is held
(and, beside a scan waiting for its turn, the small replies to the talk
that may pass it: see WaitingScan).  A worker that asks on regardless (one
taken over through its client) is not read while its output is over the
bound, and what it sent waits (Broker._stall), as does what waited behind
a scan once that is answered (Broker._release).

Restart sequence: the supervisor starts a new broker with the list of
workers alive at the death.  Each reconnects and sends HELLO and, if it
had a nick, REREGISTER (state.reregister restores nick, modes, rooms and
statuses; room records come back from the store).  Until every listed
worker is back, gone ("gone" from the supervisor) or RECOVERY_WAIT_S has
passed, other frames are held, then processed in arrival order (after the
members who came back late are told of any forced Guest rename); a link
with frames held is read no more until then, so that what it holds is
one read at most (Broker._must_wait).

The supervisor's control socket carries CONFIG (a new configuration, on
reload) and CONTROL ops: "shutdown", "freeze" (keep the room store as it
is, the server is stopping) and "gone" (a worker died); the broker sends
"counts" heartbeats and "frozen" back.  See ipc.py.
"""

from __future__ import annotations

import dataclasses
import logging
import operator
import os
import pickle
import selectors
import signal
import socket
import struct
import time
from collections import OrderedDict
from typing import Any, Callable, Collection, Iterable

from forkchat import __version__, children, config, ipc, listeners, log as logsetup, numerics
from forkchat import admission, flood, operguard, protocol, session, state, store
from forkchat import rooms, state_rooms, state_talk

log = logging.getLogger("forkchat.broker")

READ_BYTES = 65536
HEARTBEAT_S = ipc.HEARTBEAT_S   # counts to the supervisor: its STATUS and watchdog
RECOVERY_WAIT_S = 3.0
STORE_EVERY_S = 0.5   # rooms created or emptied reach the disk at most this often (_rooms_left)
FLUSH_WINDOW_S = 0.008  # output to the workers goes at most this often,
FLUSH_AT_ONCE_LINKS = 4  # unless it is for this few of them
# WHO of a mask, LIST of every room, NAMES of every room (or of a list,
# which may name one big room a hundred times) and WHOWAS of a mask (all
# the history, up to 5000 entries) answer from the whole server, and a WHO
# of a room of more than 500 members (state_query.WHO_ROOM_PACED) from
# thousands: at 5000 users in 50 rooms each, one NAMES took the broker
# about 0.1 s, one WHO of a mask 20 ms, a WHOWAS * 35 ms, a WHO of a room
# of 5000 40 ms, and flood control lets each
# connection send two a second.  Such scans, by all clients together, get
# at most SCAN_SHARE of the broker's time beyond a burst of SCAN_BURST_S
# while anything else wants it: scan time is spent from a credit that
# refills at SHARE / (1 - SHARE) seconds a second.  A scan asked for while
# the credit is spent, or while others wait, waits for its turn
# (WaitingScan): the scans waiting are run in the order they came as the
# credit comes back, and one at a time beyond it whenever the broker's
# poll finds nothing else ready (a spare turn: _serve_waiting_scans).
# irssi sends a WHO of each room it joins and asks once more after a 263,
# 2.5 s later, then never again on that connection: when 550 clients
# rejoined a room of 552 at once, 282 to 519 of them were refused (irssi
# twice, keeping 1 of 552 hosts); waiting, all were answered within 20 s.
# At most SCAN_QUEUE scans wait (one per connection: its worker waits for
# the answer before it sends the next), each SCAN_WAIT_S at most; beyond
# either the scan is answered 263 RPL_TRYAGAIN (an operator's is never
# refused, nor made to wait).  A server of hundreds of users, whose scans
# take a fraction of a millisecond, never sees the wait.
SCAN_SHARE = 0.25
SCAN_BURST_S = 0.05
# 1000 WHOs of a room of 1000 members take the broker some 5 to 8 s: 20 to
# 32 s at its share (the credit does not grow while a scan runs), and with
# other work keeping the broker busy all along the last few would wait
# past SCAN_WAIT_S and be refused; with none they run back to back in spare
# turns.  A scan is not cut into slices: what comes during one waits for it
# (a WHO of 1000 members about 5 ms, NAMES of everything 0.1 s), as it
# does for one run in the share.  A waiting scan holds up its
# client's commands that wait for their answers (JOIN, NICK, QUIT, and
# PING, from which irssi counts its lag and reconnects at 300 s): half a
# minute at most for each scan before them (its worker sends the next scan
# once the last is answered, and it waits its turn anew).
SCAN_QUEUE = 1000
SCAN_WAIT_S = 30.0
SCAN_TURN_SLACK_S = 0.001   # credit a waiting scan's turn starts with (no wake-up at 0)
# Whether waiting scans run beyond the share when the broker has nothing
# else to do; a fault test turns it off, so that one waits for its turn
# while it kills the broker.
SPARE_TURNS = True
REFUSED_LINKS_WINDOW_S = 10.0   # at most one log line of refused broker links this often
STATED_HOST_SHOWN = 64   # characters of a misstated host the log line shows
BIND_WAIT_S = 10.0     # a HELLO waits this long for the supervisor to name its worker
# A worker's flood control, again at the broker, for a worker taken over
# (see Broker._must_wait): FLOOD_MARGIN times the rate and burst its
# client's lines are allowed, and FLOOD_OWN_FRAMES more for the frames a
# worker sends of itself (HELLO, REGISTER, a tutorial client's NICK tries
# and JOIN, a query asked again after a broker restart).
FLOOD_MARGIN = 2
FLOOD_OWN_FRAMES = 10
# What a gone worker's link still holds is read, for its goodbye (Broker.
# _leave): its socket's buffers' worth (some 200 kB), unless a process it
# forked holds the socket and writes on; beyond this much it is left unread.
LEFT_READ_BYTES = 1 << 22
# The frames that make the broker work for others (SYNC, BYE and REREGISTER
# do not: the one is answered to the worker alone, the others come once).
_FLOOD_COUNTED = frozenset({ipc.Kind.HELLO, ipc.Kind.REQUEST, ipc.Kind.REGISTER,
                            ipc.Kind.OPER, ipc.Kind.OPER_FAILED})
# STATS m counts the shared-state commands the broker serves; any other name
# (a client may send endless made-up ones) is answered 421 and not counted.
_COUNTED = frozenset(state.HANDLERS) | {"STATS"}
# Commands after which rooms may have come or gone, and those that change
# one room's record (written at once).
_ROOM_CHANGING = frozenset({"JOIN", "PART", "KICK", "KILL"})
_ROOM_RECORD_CHANGING = frozenset({"TOPIC", "MODE"})
# What of a room a room created again from its stored record shows: all
# but its name (the JOIN's) and its creation time (only 329 shows it).
# See Broker._rooms_left.
_SHOWN = operator.attrgetter(*(field.name for field in dataclasses.fields(rooms.Room)
                                if field.name not in ("name", "created")))
_NEW_ROOM_SHOWN = _SHOWN(rooms.Room("", 0))
_RECOVERY_FRAMES = frozenset({ipc.Kind.HELLO, ipc.Kind.REREGISTER})
BYE_SYNC = b"bye"     # a closing worker's SYNC before its BYE (worker.BYE_SYNC)
CLOSED_HELD = -1      # among the frames held in a recovery: a link ended there (_close_link)
# A quitter's answered link is kept this long at most for what it still
# holds to go out, its answer last (_empty_quitter): its worker waits as
# long for the answer (worker.CLOSE_FLUSH_S).
QUITTER_FLUSH_S = 1.0
_PASSES_WAITING_SCAN = frozenset({"PRIVMSG", "NOTICE"})   # see WaitingScan
_UCRED = struct.Struct("3i")


def settings_from(cfg: config.Config, created: str) -> state.Settings:
    limits = cfg.limits
    return state.Settings(
        server_name=cfg.server.name, network=cfg.server.network,
        version=f"forkchat-{__version__}", created=created,
        motd_lines=cfg.motd_lines(), default_room=cfg.server.default_room,
        nicklen=limits.nicklen, roomlen=limits.roomlen, topiclen=limits.topiclen,
        rooms_per_client=limits.rooms_per_client, members_per_room=limits.members_per_room,
        bans_per_room=limits.bans_per_room, max_rooms=limits.max_rooms)


def main(listener: socket.socket, control: socket.socket, cfg: config.Config,
         created: str, most_users: int = 0, expected: tuple[tuple, ...] = ()) -> None:
    """Process entry point (the multiprocessing target).

    `expected` lists the workers alive when a previous broker died, as
    (cid, pid, peer, flood_rate, flood_burst) (pid 0: not reported by its
    spawner yet, "bind" comes later; peer: the address the client
    connected from; the flood limits its worker was started with, or left
    out: the running configuration's, see worker_flood): their talk is
    held until each has re-registered (or RECOVERY_WAIT_S passed), so that
    no member misses a room's messages for having come back late.
    `most_users`: the highest user count of the brokers before this one
    (Broker._heartbeat).
    """
    def serve() -> int:
        logsetup.setup("broker", cfg.log.level)
        return Broker(listener, control, cfg, created, expected, most_users).run()
    children.run_child("forkchat-broker", {listener.fileno(), control.fileno()}, serve)


class Link:
    """One worker's connection, as the broker sees it."""

    __slots__ = ("sock", "reader", "writer", "cid", "dropping", "closed", "write_watched",
                 "pid", "waiting", "waiting_since", "host", "misstated", "stalled", "prepaid",
                 "going")

    def __init__(self, sock: socket.socket, limit: int, pid: int | None = None) -> None:
        self.sock = sock
        self.reader = ipc.FrameReader()
        self.writer = ipc.FrameWriter(sock, limit)
        self.cid: int | None = None
        self.dropping = False
        self.closed = False
        self.write_watched = False
        # The peer's pid (SO_PEERCRED), which its HELLO's cid must have been
        # given to; None only for a link made in-process, not accepted.
        self.pid = pid
        # Frames from its HELLO on, while that waits for the worker's pid.
        self.waiting: list[tuple[int, bytes]] | None = None
        self.waiting_since = 0.0
        # Its client's host, from the address the supervisor accepted it
        # from (set with its HELLO); None for a link made in-process, whose
        # worker's word is all there is.
        self.host: str | None = None
        self.misstated = False      # its worker stated another host (logged)
        # Frames read and not run while its output is over the bound (see
        # Broker._stall); the link is not read meanwhile.
        self.stalled: list[tuple[int, bytes]] | None = None
        # Of the frames that count (_FLOOD_COUNTED) among those, how many
        # took their flood control's token already (the first ones:
        # Broker._release), and take none when they run.
        self.prepaid = 0
        # Its worker is gone: what it sent runs now, as far as its flood
        # control allows (Broker._leave), and nothing of it waits any more,
        # not even what a released scan held (_release).
        self.going = False


class FloodWaits:
    """The stalled links that may wait for a token, by worker process.

    A worker's links share its flood control (Broker._bucket), and a
    worker may open links as fast as it likes: the loop looks at each
    worker's bucket once a turn, not at each link (2000 links of one
    worker cost every turn 3.5 ms, now microseconds).  Each worker's links in the order
    they began to wait.
    """

    def __init__(self) -> None:
        self.by_pid: dict[int, dict[Link, None]] = {}

    def __contains__(self, link: Link) -> bool:
        return link in self.by_pid.get(link.pid or 0, ())

    def __bool__(self) -> bool:
        return bool(self.by_pid)

    def add(self, link: Link) -> None:
        assert link.pid is not None       # (one made in-process never waits)
        self.by_pid.setdefault(link.pid, {})[link] = None

    def discard(self, link: Link) -> None:
        links = self.by_pid.get(link.pid or 0)
        if links is None:
            return
        links.pop(link, None)
        if not links:
            del self.by_pid[link.pid or 0]

    def take(self, pid: int) -> list[Link]:
        """A worker's links, no longer noted as waiting."""
        return list(self.by_pid.pop(pid, ()))

    def first(self, pid: int) -> Link | None:
        return next(iter(self.by_pid.get(pid, ())), None)


class WaitingScan:
    """A scan waiting for the broker's scan credit, and what its link sent after it.

    The client's later frames wait behind it and run, in order, once it
    has been answered: a worker sends a SYNC before each command that
    waits for the answers before it (forkchat(7)), and so the client's
    JOIN, NICK, PING or QUIT, or its next scan, waits for this one's
    answer.  Talk (PRIVMSG, NOTICE) with nothing else held before it runs
    at once: a scan changes nothing, so nobody sees the order change, and
    a user's words are not held for a list.  Any other command is held,
    and its answer comes after the scan's: irssi matches answers to the
    queries it sent, in order, and gives up (and sends again) a WHO that
    two later answers, an ISON or a USERHOST, overtook.
    """

    __slots__ = ("link", "msg", "since", "held", "held_bytes")

    def __init__(self, link: Link, msg: protocol.Message, since: float) -> None:
        self.link = link
        self.msg = msg
        self.since = since                        # on the scan clock
        # (kind, payload) frames, in order: as many as the worker's flood
        # control lets through in SCAN_WAIT_S (70 lines with the defaults);
        # a worker that sends more is answered at once (Broker._held_limit)
        self.held: list[tuple[int, bytes]] = []
        self.held_bytes = 0


class AwaitedRecord:
    """A room made while the store is unread (back by REREGISTER, or
    created by a JOIN), as it was made.

    Its record may be in the store, which cannot be read yet: until it is,
    the room's empty state is not written, and unless a client changes it
    meanwhile, it takes that record once read (Broker._keep_found_records).
    """

    __slots__ = ("room", "meta", "showing")

    def __init__(self, room: rooms.Room, showing: Iterable[int]) -> None:
        self.room = room
        self.meta = room.meta()     # its state as it was made: changed if it differs
        # The members whose clients still show its stored topic: back with
        # it by REREGISTER (not told of the broker's death), and in it ever
        # since.  The others were told it had none.
        self.showing = set(showing)


def _modes_come_back(made: dict, room: rooms.Room) -> list[rooms.ModeChange]:
    """The mode changes from a room as it was made (`made`: its meta then,
    its flags alone: a room made has no key, limit or bans) to it with its
    stored record: its flags set and unset, its key, limit and bans, as a
    MODE line tells them."""
    flags = set(made.get("flags", ""))
    changes = [rooms.ModeChange(True, letter) for letter in sorted(room.flags - flags)]
    if room.key:
        changes.append(rooms.ModeChange(True, "k", room.key))
    if room.limit:
        changes.append(rooms.ModeChange(True, "l", str(room.limit)))
    changes += [rooms.ModeChange(True, "b", ban.mask) for ban in room.bans.values()]
    return changes + [rooms.ModeChange(False, letter) for letter in sorted(flags - room.flags)]


class RoomBatch:
    """A room's talk queued in a row since the last flush, and not on its
    members' links yet (Broker.queue_to_room)."""

    __slots__ = ("members", "cids", "lines", "buts", "size")

    def __init__(self, members: Collection[int]) -> None:
        self.members = members          # the room's own collection
        self.cids = tuple(members)      # its members when the batch began
        self.lines: list[bytes] = []
        self.buts: list[int] = []       # whom each line is not for: its sender
        self.size = 0                   # bytes of the lines


class Broker:
    def __init__(self, listener: socket.socket, control: socket.socket,
                 cfg: config.Config, created: str,
                 expected: tuple[tuple, ...] = (),
                 most_users: int = 0) -> None:
        self.listener = listener
        self.control = control
        self.supervisor_pid = os.getppid()
        self.refused_window = logsetup.Window(REFUSED_LINKS_WINDOW_S)
        self.forged_window = logsetup.Window(REFUSED_LINKS_WINDOW_S)      # another's cid
        self.misstated_window = logsetup.Window(REFUSED_LINKS_WINDOW_S)   # another host
        self.link_error_window = logsetup.Window(REFUSED_LINKS_WINDOW_S)  # broken frames
        self.flood_left_window = logsetup.Window(REFUSED_LINKS_WINDOW_S)  # dropped as it left
        # worker pid -> its cid, its client's host, and the (flood_rate,
        # flood_burst) it was started with (_bucket)
        self.owners = {int(entry[1]): (int(entry[0]), session.client_host(str(entry[2])),
                                       worker_flood(entry, cfg))
                       for entry in expected if entry[1]}
        self.unbound: dict[int, list[Link]] = {}   # pid -> links whose HELLO waits for it
        self.check_ancestry = children.proc_readable()   # else the uid check alone
        self.spare_fd = _spare_descriptor()   # for that check at the descriptor limit
        self.cfg = cfg
        self.created = created
        self.state = state.ChatState(settings_from(cfg, created))
        self.state.max_registered = most_users      # LUSERS's (see _heartbeat)
        self.most_told = most_users
        self.links: dict[int, Link] = {}
        self.dirty: set[Link] = set()       # links with output to send
        self.batch: RoomBatch | None = None    # a room's talk not queued on its links yet
        self.overflowed: list[int] = []     # clients dropped (_overflow), not disconnected yet
        self.closing_links: list[Link] = []   # quitters', answered and closed at the next flush
        self.quitters_emptying: dict[Link, float] = {}   # answered, output still going: until
        self.answered: set[Link] = set()    # ... the answer to a command among it
        self.selector = selectors.DefaultSelector()
        self.control_reader = ipc.FrameReader()
        self.control_out = ipc.FrameWriter(control, ipc.CONTROL_QUEUE_BYTES)
        self.running = True
        self.outbox = _Outbox(self)
        self.replying: int | None = None   # whose command is being answered now
        self.awaiting = {int(entry[0]) for entry in expected}
        self.inherited = set(self.awaiting)     # may each REREGISTER, once
        self.command_counts: dict[str, int] = {}
        self.last_flush = 0.0
        self.store = store.RoomStore(cfg.server.state_dir)
        self.records_awaited: dict[str, AwaitedRecord] = {}    # see _note_rooms_back
        # Past max_rooms only kept records go, not those of rooms live: a
        # restart's rooms come back with their workers, so it reads them all.
        self.state.saved_rooms = self.store.load(
            most=None if self.awaiting else cfg.limits.max_rooms)
        self.store_dirty = False
        self.store_frozen = False
        self.next_store = 0.0
        self._retry_store()         # a store not read yet is tried without a change
        self.next_beat = 0.0      # the next heartbeat to the supervisor
        self.recovery_deadline = time.monotonic() + RECOVERY_WAIT_S
        self.held: list[tuple[Link, int, bytes]] = []
        self.holding: set[Link] = set()     # links with frames among those (see _must_wait)
        self.buckets: dict[int, flood.TokenBucket] = {}   # worker pid -> its frames' flood control
        self.flood_stalled = FloodWaits()   # stalled links that may wait for a token
        self.oper_guard = operguard.new_records()   # failed OPERs per address, not saved
        # Credit refills by the clock, and a scan spends the CPU it took: a
        # broker pre-empted during a scan on a busy machine was charged for
        # the time it did not run.
        self.scan_clock: Callable[[], float] = time.monotonic
        self.scan_cpu_clock: Callable[[], float] = time.thread_time
        self.scan_credit = SCAN_BURST_S      # seconds of scanning allowed now (may go below 0)
        self.scan_credit_at = self.scan_clock()
        self.waiting_scans: OrderedDict[int, WaitingScan] = OrderedDict()   # by cid, oldest first
        self.accept_trouble = listeners.AcceptTrouble(log, "accept on broker socket",
                                                      "accepting broker links again")
        self.accept_resume = 0.0   # when to watch the listener again; 0: it is watched

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_sigterm)
        children.take_sigterm()
        self.listener.setblocking(False)
        self.control.setblocking(False)
        self._watch_listener()
        self.selector.register(self.control, selectors.EVENT_READ, self.on_control)
        self.selector.register(children.lifeline_fd(), selectors.EVENT_READ, self.on_lifeline)
        log.info("broker ready" + (f", awaiting {len(self.awaiting)} workers"
                                   if self.awaiting else ""))
        while self.running:
            self._serve_ready()
            if self.state.max_registered > self.most_told:
                self._heartbeat()
            if self.flood_stalled:
                self._resume_flood_stalled()
            self._maybe_flush()
            if self.quitters_emptying:
                self._expire_quitters()
            if self.awaiting and time.monotonic() >= self.recovery_deadline:
                log.warning("%d workers did not re-register in time", len(self.awaiting))
                self.awaiting.clear()
                self._end_recovery()
                self._flush_dirty()
            if self.control_out.pending:
                self._send_pending_control()
            if self.store_dirty and time.monotonic() >= self.next_store:
                self._save_rooms()
            if self.accept_resume and time.monotonic() >= self.accept_resume:
                self._watch_listener()
            if time.monotonic() >= self.next_beat:
                self.next_beat = time.monotonic() + HEARTBEAT_S
                self._heartbeat()
                self._expire_unbound(time.monotonic())
        self._refuse_waiting_scans()
        return 0

    def _serve_ready(self) -> None:
        """Handle what is ready (sleeping until something is, or is due),
        then the scans whose turn has come.

        While scans wait and no output waits for its flush window, the poll
        does not sleep: if it finds nothing ready, nothing else wants the
        broker, and the first waiting scan runs now, beyond the share
        (_serve_waiting_scans).  Something that comes meanwhile waits for
        that one scan, as it would for one run in the share."""
        spare = self._spare_turn_possible()
        events = self.selector.select(0.0 if spare else self._timeout())
        for key, mask in events:
            key.data(mask)
        if self.waiting_scans:
            self._serve_waiting_scans(spare=spare and not events)
        if self.overflowed:             # (a scan's output overflowed a link)
            self._disconnect_overflowed()

    def _save_rooms(self) -> None:
        """Write the records of the rooms created or removed since the last
        time; rooms not yet back keep theirs."""
        self.store_dirty = False
        self.next_store = time.monotonic() + STORE_EVERY_S
        changes = self.state.store_changes()
        if not self.store_frozen:
            if self.records_awaited:
                changes = {folded: record for folded, record in changes.items()
                           if not self._awaits_record(folded)}
            self.store.apply(changes)
            self._retry_store()

    def _retry_store(self) -> None:
        """Come back when the store wants to try a failed write again (a
        full disk): its changes would else wait for the next join or part.
        Keep what a store read late has found."""
        self._keep_found_records()
        retry_at = self.store.retry_at
        if retry_at is not None:
            self.store_dirty = True
            self.next_store = max(self.next_store, retry_at)

    def _keep_found_records(self) -> None:
        """Keep the records of a store read only now (unreadable at the
        start, given back) as the start keeps those it loads: for when
        their rooms are created again.  A room made meanwhile (back by
        REREGISTER, or by a JOIN) and unchanged since takes its record, as
        with the store readable; one a client changed keeps its live state,
        written over its record."""
        given = 0
        for folded, record in self.store.take_found().items():
            if self._awaits_record(folded):
                self._give_record(folded, record)
                given += 1
            elif folded in self.state.rooms:
                self.state.changed_rooms[folded] = None
                self.store_dirty = True
            else:
                self.state.saved_rooms.setdefault(folded, record)
        if given:
            log.info("room store %s: %d rooms made while it could not be read, and "
                     "unchanged, take their stored records", self.store.path, given)
        if self.records_awaited and not self.store.unread:
            for folded in list(self.records_awaited):   # no record stored: written as they are
                self.records_awaited.pop(folded)
                if folded in self.state.rooms:
                    self.state.changed_rooms[folded] = None
                    self.store_dirty = True

    def _note_rooms_back(self, cid: int) -> None:
        """Note the rooms a client came back in (REREGISTER) while the store
        is unread, and that it was in each.

        A broker killed while its store was unreadable (left root's 0600)
        was followed by one that could not read it: the rooms came back
        with no topic, key, modes or bans, and once the store was given
        back that empty state was written over their records, lost for
        good.  Now such a room's record waits for the store to be read and,
        if no client changed the room meanwhile, is its state then
        (_keep_found_records); its empty state is not written till then.
        """
        client = self.state.clients.get(cid)
        if client is None or not self.store.unread:
            return
        for folded, room in client.joined.items():
            awaited = self.records_awaited.get(folded)
            if awaited is not None and awaited.room is room:
                awaited.showing.add(cid)
            elif len(room.members) == 1:        # made by this REREGISTER
                self.records_awaited[folded] = AwaitedRecord(room, {cid})

    def _rooms_touched(self, cid: int, msg: protocol.Message) -> dict[str, rooms.Room | None]:
        """The rooms a JOIN, PART, KICK or KILL may make, empty or change
        the members of, each as it is before it (None: not there yet):
        those it names, those 'JOIN 0' leaves, those of KILL's target.
        After it, _rooms_left writes the removals that cannot wait, and
        _note_members notes rooms made while the store is unread."""
        if msg.command not in _ROOM_CHANGING:
            return {}
        if msg.command == "KILL":
            target = self.state.find_nick(msg.param(0))
            return dict(target.joined) if target is not None else {}
        if msg.command == "JOIN" and msg.param(0) == "0":
            client = self.state.clients.get(cid)
            return dict(client.joined) if client is not None else {}
        named = {protocol.casefold(name) for name in msg.param(0).split(",") if name}
        return {folded: self.state.rooms.get(folded) for folded in named}

    def _note_members(self, before: dict[str, rooms.Room | None]) -> None:
        """After a JOIN, PART, KICK or KILL (`before`: _rooms_touched's): a room
        it made while the store is unread awaits its record, as one back by
        REREGISTER does, and a member who left a room awaiting its record
        no longer shows its stored topic.

        At a fresh start with the store unreadable (left root's 0600), a
        room made by a JOIN wrote its empty state over its record once the
        store was read: a room that never empties (#lobby) lost its topic,
        key, modes and bans for good.  Now, unless a client changes it
        meanwhile, it takes its record then (_keep_found_records), and its
        members, told it had no topic, get a TOPIC line (_give_record).  So
        does a member back by REREGISTER who left and joined again, told
        then it had none.
        """
        for folded, was in before.items():
            room = self.state.rooms.get(folded)
            if room is None:
                continue
            awaited = self.records_awaited.get(folded)
            if room is not was:
                if self.store.unread:
                    self.records_awaited[folded] = AwaitedRecord(room, ())
            elif awaited is not None and awaited.room is room:
                awaited.showing.intersection_update(room.members)

    def _told_no_topic(self, cid: int, name: str) -> None:
        """A member back by REREGISTER asked the topic of a room awaiting
        its record, and was told it had none (331): its client shows none
        now, and it gets the TOPIC once the record comes, as one who joined
        meanwhile does (taken for one whose client still showed the topic,
        it was told nothing)."""
        folded = protocol.casefold(name)
        if self._awaits_record(folded):
            self.records_awaited[folded].showing.discard(cid)

    def _awaits_record(self, folded: str) -> bool:
        """Whether a room made while the store is unread (back by
        REREGISTER, or by a JOIN) is as it was made: its state is to be its
        stored record, and is not written meanwhile.  One a client changed
        (or that is gone) is no longer awaited, and one live is written as
        it is."""
        awaited = self.records_awaited.get(folded)
        if awaited is None:
            return False
        room = self.state.rooms.get(folded)
        if room is awaited.room and room.meta() == awaited.meta:
            return True
        del self.records_awaited[folded]
        if room is not None:
            self.state.changed_rooms[folded] = None
            self.store_dirty = True
        return False

    def _give_record(self, folded: str, record: dict) -> None:
        """An awaited room takes its stored record, read at last.

        Its members back with it are told nothing, as at any recovery:
        their clients still show its topic.  Those who joined it meanwhile
        (or made it) were told it had none, and get a TOPIC from the
        server, and a MODE from it with the modes, key, limit and bans come
        back: told it was +nt, a client showed that still, and did not
        know the key to join again with (475).  Its members stay, whatever
        its key, bans, +i or +l."""
        awaited = self.records_awaited.pop(folded)
        room = awaited.room
        room.apply_meta(record)
        room.topic = state_rooms.fitted_topic(self.state, room, room.topic)
        self.state.changed_rooms[folded] = None     # its record, under its live name
        self.store_dirty = True
        joined = [cid for cid in room.members if cid not in awaited.showing]
        if not joined:
            return
        server = self.state.settings.server_name
        if room.topic:
            self.outbox.fanout(joined, state_talk.text_line(server, "TOPIC", room.name,
                                                            room.topic))
        for line in state_rooms.mode_lines(server, room, _modes_come_back(awaited.meta, room)):
            self.outbox.fanout(joined, line)

    def _stats_commands(self, cid: int) -> None:
        """STATS m: how often each shared-state command reached this broker."""
        client = self.state.clients.get(cid)
        nick = client.nick if client is not None else "*"
        server = self.cfg.server.name
        for command, count in sorted(self.command_counts.items()):
            self.outbox.send(cid, numerics.reply(server, numerics.RPL_STATSCOMMANDS, nick,
                                                 command, str(count)))
        self.outbox.send(cid, numerics.reply(server, numerics.RPL_ENDOFSTATS, nick, "m"))

    def _save_room(self, name: str) -> None:
        folded = protocol.casefold(name)
        room = self.state.rooms.get(folded)
        if room is not None and not self.store_frozen and not self._awaits_record(folded):
            self.store.put(folded, room.meta())
            self._retry_store()

    def _disconnect(self, cid: int, reason: str) -> None:
        """A client quits; the rooms it leaves empty are gone (_rooms_left)."""
        client = self.state.clients.get(cid)
        left = dict(client.joined) if client is not None else {}
        self.state.disconnect(cid, reason, self.outbox)
        self._rooms_left(left)
        if self.overflowed:             # (links its QUIT overflowed)
            self._disconnect_overflowed()

    def _rooms_left(self, rooms_before: dict[str, rooms.Room | None]) -> None:
        """Rooms may have been created or emptied (`rooms_before`: those
        that may have emptied, as they were): written with the next batch,
        STORE_EVERY_S after the last, unless one removed has a stored
        record that a new room of its name would not have, then at once.

        Its topic and modes were written at once, its removal in the
        batch: a broker killed in between (a part and a kill -9 within half
        a second) left the next one the record, and a newcomer making the
        room afresh was refused it (475, the old key) or, with the key,
        shown the old topic, nobody told why.  A room's removal is written
        no later than the changes it undoes were; one whose record is as a
        new room's (a plain room's join and part, most of them) waits for
        the batch, as its loss changes nothing but its creation time.
        """
        self.store_dirty = True
        if self.store_frozen:
            return              # the shutdown's: its rooms are kept (store.renew)
        for folded, room in rooms_before.items():
            if room is not None and self.state.rooms.get(folded) is not room \
                    and self._stored_unlike_new(folded):
                self._save_rooms()
                return

    def _stored_unlike_new(self, folded: str) -> bool:
        """Whether the store holds (or is to write) a record for this room
        that would make it, created again, unlike a new room: a topic, a
        mode other than +nt, a key, a limit or a ban."""
        record = self.store.record(folded)
        return record is not None and _unlike_new_room(record)

    def _maybe_flush(self) -> None:
        """Send queued output now if the last flush is FLUSH_WINDOW_S old,
        or if it is for FLUSH_AT_ONCE_LINKS workers at most; else once it is.

        Waking a worker costs far more than handing it a few more lines
        (80-100 us of CPU on a 2-core VM), and a message to a room of 100
        wakes 100 of them, which takes both cores about 4 ms.  Flushing any
        more often keeps the machine busy waking workers, and everyone's
        messages queue behind that.  A message after a quiet spell goes at
        once, and so does output that wakes only a few workers (a reply, a
        message to a small room): held, it made a client's commands that
        wait for their answers (JOIN, LIST, WHO) take 8 ms each, and only
        the window of a large flush is kept.  Quitters waiting for their
        answer (closing_links) are answered at once when the output they
        waited for is gone unwritten (its links closed).
        """
        batch = self.batch
        if not self.dirty and batch is None:
            if self.closing_links:
                self._close_quitters()
            return
        now = time.monotonic()
        if now - self.last_flush >= FLUSH_WINDOW_S:
            self._flush_dirty()
            self.last_flush = now
        elif batch is None:
            if len(self.dirty) <= FLUSH_AT_ONCE_LINKS:
                self._flush_dirty()
        elif len(batch.cids) <= FLUSH_AT_ONCE_LINKS + 1 \
                and len(self.dirty | self._batch_reach(batch)) <= FLUSH_AT_ONCE_LINKS:
            self._flush_dirty()

    def _batch_reach(self, batch: RoomBatch) -> set[Link]:
        """The links a batch will be queued on (_end_batch): its members'
        but a sender that sent all of it, who hears nothing of it.  (Only
        for a small batch: counted as its members, a message to a room of
        five, for four workers, waited for the window.)"""
        buts = set(batch.buts)
        alone = next(iter(buts)) if len(buts) == 1 else None
        links = self.links
        return {link for cid in batch.cids if cid != alone
                and (link := links.get(cid)) is not None and not link.dropping}

    def _timeout(self) -> float:
        """Until the next thing due; the heartbeat is always one of them, so
        the counts the supervisor shows are never more than HEARTBEAT_S old."""
        now = time.monotonic()
        deadlines = [self.next_beat - now]
        if self.dirty or self.batch is not None:
            deadlines.append(self.last_flush + FLUSH_WINDOW_S - now)
        if self.awaiting:
            deadlines.append(self.recovery_deadline - now)
        if self.store_dirty:
            deadlines.append(self.next_store - now)
        if self.accept_resume:
            deadlines.append(self.accept_resume - now)
        if self.quitters_emptying:
            deadlines.append(min(self.quitters_emptying.values()) - now)
        if self.waiting_scans:
            deadlines.append(self._next_scan_turn())
        if self.flood_stalled:
            deadlines.append(min(self._bucket(pid).wait_time()
                                 for pid in self.flood_stalled.by_pid))
        return max(0.0, min(deadlines))

    def _arrived(self, cid: int) -> None:
        """One awaited worker is back (or gone for good)."""
        if cid in self.awaiting:
            self.awaiting.discard(cid)
            if not self.awaiting:
                self._end_recovery()

    def _end_recovery(self) -> None:
        """Run the frames held, in the order they came, then what each link
        holding some sent after them (read no more meanwhile).

        A scan among them may wait, and frames behind it be released
        before the end (a link that sends past _held_limit); if its output
        goes over the bound then, the rest wait (_release), and this
        link's frames held here wait behind them, before its later ones."""
        held, self.held = self.held, []
        holding, self.holding = self.holding, set()
        self.state.finish_recovery(self.outbox)
        log.info("recovery done, %d held frames to process", len(held))
        later: dict[Link, list[tuple[int, bytes]] | None] = {}
        for link in holding:
            later[link], link.stalled = link.stalled, None
        for link, kind, payload in held:
            if link.closed:
                self._run_held_of_closed(link, kind, payload)
                continue
            if link.stalled is not None:        # stalled meanwhile (_release)
                link.stalled.append((kind, payload))
                link.prepaid += _counted([(kind, payload)])    # (charged as read)
            else:
                self._dispatch(link, kind, payload)
        for link, frames in later.items():
            if link.closed:
                continue
            if frames is not None:
                link.stalled = [*(link.stalled or []), *frames]
            if link.stalled is not None:
                self._try_unstall(link)

    def _run_held_of_closed(self, link: Link, kind: int, payload: bytes) -> None:
        """A frame held in the recovery for a link whose worker ended
        meanwhile (_close_link's `after_held`): its client is still here
        until its BYE (or the end of its link, CLOSED_HELD) runs in turn."""
        cid = link.cid
        if cid is None or cid in self.links or cid not in self.state.clients:
            return          # quit already (its BYE ran), or not deferred
        if kind == ipc.Kind.BYE or kind == CLOSED_HELD:
            self._disconnect(cid, _bye_reason(payload))
        else:
            self._dispatch(link, kind, payload)

    def _heartbeat(self) -> None:
        """Tell the supervisor the counts; its absence means a stuck broker.

        Also sent in the turn the highest user count (LUSERS's max) rises:
        the supervisor keeps it for the next broker (main's `most_users`).
        It lived in the broker alone, and after a crash the max was what
        had re-registered since.  (One frame per turn at most, not per
        registration: a thousand clients connecting at once.)"""
        clients, rooms = self.state.counts()
        self.most_told = self.state.max_registered
        self._send_control({"op": "counts", "clients": clients, "rooms": rooms,
                            "most": self.most_told})

    def _send_control(self, message: dict[str, Any]) -> None:
        """To the supervisor, whole frames only (the rest waits for the next turn)."""
        self.control_out.queue(ipc.encode_json(ipc.Kind.CONTROL, message))
        self._send_pending_control()

    def _send_pending_control(self) -> None:
        try:
            self.control_out.flush()
        except OSError:
            self.running = False

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.running = False

    def on_lifeline(self, mask: int) -> None:
        log.info("supervisor gone, broker exiting")
        self.running = False

    # -- links -----------------------------------------------------------------

    def on_accept(self, mask: int) -> None:
        for _ in range(64):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if listeners.nothing_queued(self.listener):
                    return          # at the limit, but no worker waits
                # Out of descriptors, most likely: the worker waits in the
                # queue until links close (see listeners.AcceptTrouble).
                self.accept_trouble.failed(error)
                self.selector.unregister(self.listener)
                self.accept_resume = time.monotonic() + listeners.ACCEPT_PAUSE_S
                return
            self.accept_trouble.accepted()
            pid = self._peer_allowed(sock)
            if pid is None:
                sock.close()
                continue
            sock.setblocking(False)
            link = Link(sock, self.cfg.limits.broker_buffer_bytes, pid)
            self.selector.register(sock, selectors.EVENT_READ, lambda m, link=link: self.on_link(link, m))

    def _watch_listener(self) -> None:
        self.accept_resume = 0.0
        self.selector.register(self.listener, selectors.EVENT_READ, self.on_accept)

    def _peer_allowed(self, sock: socket.socket) -> int | None:
        """The peer's pid if it may speak to the broker, else None: only
        this server's own processes may.

        The uid is not enough: the socket's abstract name can be read in
        /proc/net/unix, and the user we run as is often shared ('nobody').
        A peer that is no descendant of our supervisor could pose as a
        worker: take over any connection id, become an operator with an
        OPER frame, read what others are sent.
        """
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        pid, uid, _gid = _UCRED.unpack(creds)
        if uid != os.getuid():
            self._refused_link(f"uid {uid}", time.monotonic())
            return None
        if self.check_ancestry and not self._of_this_server(pid):
            self._refused_link(f"pid {pid}: not a process of this server", time.monotonic())
            return None
        return pid

    def _of_this_server(self, pid: int) -> bool:
        """Whether `pid` descends from our supervisor, even at the limit.

        The check opens /proc files.  A link accepted with the last free
        descriptor left none for them: a worker of ours was refused as a
        stranger, and it reconnected and was refused again every 20 ms.
        A failed check is tried again with the spare descriptor given up.
        """
        if children.descends_from(pid, self.supervisor_pid):
            return True
        if self.spare_fd < 0:
            return False
        os.close(self.spare_fd)
        try:
            return children.descends_from(pid, self.supervisor_pid)
        finally:
            self.spare_fd = _spare_descriptor()

    def _refused_link(self, who: str, now: float) -> None:
        """Log a refused link, one line per REFUSED_LINKS_WINDOW_S at most.

        Any local user may connect to the socket (its name is in
        /proc/net/unix), as fast as it likes: without the window each
        attempt was a line of the server's log.  The refusals not logged
        are counted in the next line.
        """
        more = self.refused_window.held_back(now)
        if more is not None:
            log.warning("refused broker link from %s%s", who, _more(more, " refused"))

    def on_link(self, link: Link, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush(link)
        if not mask & selectors.EVENT_READ or link.closed or link.stalled is not None:
            return      # (stalled by an earlier event of the same select)
        self._read(link)

    def _read(self, link: Link) -> None:
        """Take what the worker sent, one read."""
        try:
            data = link.sock.recv(READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close_link(link, self._gone_reason(link), after_held=True)
            return
        try:
            frames = link.reader.feed(data)
        except ipc.FrameError as error:
            self._broken_link(link, str(error))
            return
        self._run_frames(link, frames)

    def _run_frames(self, link: Link, frames: list[tuple[int, bytes]],
                    paid: bool = False) -> None:
        """Run a link's frames in order, those from the first that must
        wait (_must_wait) on wait, unread (_stall).  Frames `paid` for
        (their flood control's token taken when they were read: _release)
        wait for the output bound alone, and take no token when they run
        after that wait (Link.prepaid).  (A link whose worker is gone
        runs what it sent in _leave.)

        A frame run may stall the link (a scan it answers releases what
        was held behind it: _release); the rest then wait behind those."""
        for index, (kind, payload) in enumerate(frames):
            if link.closed:
                return
            if link.waiting is not None:     # its HELLO waits for its worker's pid
                link.waiting.append((kind, payload))
                continue
            if link.stalled is not None or (
                    self._over_bound(link) if paid else self._must_wait(link)):
                if paid:
                    link.prepaid += _counted(frames[index:])
                self._stall(link, frames[index:])
                return
            if not paid:
                self._charge(link, kind)
            self._on_frame(link, kind, payload)

    def _charge(self, link: Link, kind: int) -> bool:
        """Take a token of its worker's flood control for a frame of the
        link about to run, if it counts and was not paid for already
        (Link.prepaid); False if the bucket had none."""
        if kind not in _FLOOD_COUNTED or link.pid is None:
            return True
        if link.prepaid:
            link.prepaid -= 1
            return True
        return self._bucket(link.pid).take()

    def _must_wait(self, link: Link) -> bool:
        """Whether a link's next frames wait, unread (_stall): its output is
        over the bound (see _stall), it has frames held until the recovery
        ends, or its worker's flood control has no token for it (_bucket).

        During a recovery every frame but a HELLO or REREGISTER is held,
        and a worker's client sends little in those 3 seconds (flood
        control).  A worker taken over sends what it likes: held as read,
        its frames grew the broker's memory as fast as it could read them.
        """
        return self._over_bound(link) or (
            bool(self.awaiting) and link in self.holding) or self._token_wait(link) > 0

    def _over_bound(self, link: Link) -> bool:
        """Whether the broker holds more for a link than its bound
        (broker_buffer_bytes), replies to its client's commands included
        (and a room's talk not queued on the link yet, but the lines its
        own client said there, which it is not sent).

        Counted, a sender's own lines held its next frames until the
        flush for nothing; and where they alone passed its bound, its
        link, with nothing to write, was watched for nothing, and a flush
        that queued nothing on it never looked at it again."""
        pending = link.writer.pending
        limit = link.writer.limit
        batch = self.batch
        if batch is not None and link.cid in batch.members:
            pending += batch.size
            if pending > limit:     # (rare: the sum is worth its time only here)
                cid = link.cid
                pending -= sum([len(line) for line, but in zip(batch.lines, batch.buts)
                                if but == cid])
        return pending > limit

    def _bucket(self, pid: int) -> flood.TokenBucket:
        """A worker's flood control at the broker, shared by its links.

        The worker lets its client's lines through at flood_rate a second
        after a burst of flood_burst; a worker taken over sends what it
        likes, as fast as the broker reads: a room's messages by the
        thousand a second, each to every member (whose links then
        overflowed, and who were dropped), nick changes, or HELLO after
        HELLO, each a client connecting and leaving.  The broker lets a
        worker's frames through at FLOOD_MARGIN times its client's rate;
        beyond that they wait, unread, as its client's lines wait in the
        worker.  Kept per process, not per link: a worker may open links
        as fast as it sends frames.

        The client's rate is the one its worker was started with (the
        supervisor's word with its pid: _worker_flood), not the running
        one: a worker keeps the limits of when its connection was
        accepted.  A broker restarted after a reload that lowered them held
        the workers started before it below their own (60 lines of such a
        client took 24 s, not 5); the highest limits since the start, kept
        for all instead, gave every worker started after a reload that
        lowered them against abuse twice the old rate until the server
        restarted.
        """
        bucket = self.buckets.get(pid)
        if bucket is None:
            bucket = flood.TokenBucket(*_flood_pace(self._worker_flood(pid)))
            self.buckets[pid] = bucket
        return bucket

    def _worker_flood(self, pid: int | None) -> tuple[float, int]:
        """The (flood_rate, flood_burst) a worker was started with, as the
        supervisor named it (_bind); the running configuration's for a
        process it has not named (yet: a HELLO may come before its bind)."""
        owner = self.owners.get(pid) if pid is not None else None
        if owner is None:
            return self.cfg.limits.flood_rate, self.cfg.limits.flood_burst
        return owner[2]

    def _token_wait(self, link: Link) -> float:
        """Seconds until the link's worker may send a frame that counts;
        none for frames paid for already (Link.prepaid), which come first."""
        if link.pid is None or link.prepaid:
            return 0.0          # (None: made in-process)
        return self._bucket(link.pid).wait_time()

    def _resume_flood_stalled(self) -> None:
        """Look again at the stalled links whose flood control has a token
        for them now (the other stalls end on events of their own)."""
        ready = [pid for pid in self.flood_stalled.by_pid if self._bucket(pid).wait_time() <= 0]
        for pid in ready:       # each worker's links in turn, while it has a token
            while (link := self.flood_stalled.first(pid)) is not None \
                    and self._bucket(pid).wait_time() <= 0:
                self.flood_stalled.discard(link)
                if link.stalled is not None and not link.closed:
                    self._try_unstall(link)     # (noted again, last, if it waits again)

    def _worker_gone(self, cid: int, pid: int) -> None:
        """A worker is gone: its links leave now (_leave), its connection's
        and any other that waits for its flood control.

        A link waiting for its flood control is not read, and nothing else
        ended its wait: its client stayed, nick and rooms, while what it
        had sent ran at the flood rate, for half an hour at worst.  Any
        other waited for its end of file: a worker taken over that forked
        left its link to its child, which kept the client, at the flood
        rate, for as long as it liked.
        """
        links = self.flood_stalled.take(pid)
        link = self.links.get(cid)
        if link is not None and link.pid == pid and link not in links:
            links.append(link)
        for link in links:
            self._leave(link)

    def _leave(self, link: Link) -> None:
        """A link's worker is gone: run what it sent and is still to run
        (held, or unread), as far as its flood control has tokens, then
        its BYE alone (its client's quit reason), and close the link.

        All of it ran at once: a worker taken over that filled its socket
        and exited had 5000 room messages run in 0.05 s, a burst for each
        connection taken over.  A worker of ours never leaves frames over
        its flood control (the broker's is twice its client's, _bucket):
        those dropped are logged, at most one line every
        REFUSED_LINKS_WINDOW_S.
        """
        link.going = True
        frames, link.stalled = link.stalled or [], None
        broken = self._read_rest(link, frames)
        dropped = 0
        for kind, payload in frames:
            if link.closed:
                break
            if not dropped and not self._charge(link, kind):
                dropped = 1
            elif dropped and kind != ipc.Kind.BYE:
                dropped += 1
            else:
                self._on_frame(link, kind, payload)
        if dropped:
            more = self.flood_left_window.held_back(time.monotonic())
            if more is not None:
                log.error("%s: its worker exited with %d frames over its flood control, "
                          "dropped%s", self._who(link), dropped, _more(more))
        if broken is not None and not link.closed:
            self._broken_link(link, broken)
        self._close_link(link, self._gone_reason(link), after_held=True)

    def _gone_reason(self, link: Link) -> str:
        """The quit reason of a link whose worker is gone: that of its BYE
        held until the recovery ends, if it sent one, else "Connection
        closed".

        A client that quit during a broker restart's recovery had its
        rooms told "Connection closed", not its reason.
        """
        if link in self.holding:
            for held_link, kind, payload in reversed(self.held):
                if held_link is link and kind == ipc.Kind.BYE:
                    return _bye_reason(payload)
        return "Connection closed"

    def _read_rest(self, link: Link, frames: list[tuple[int, bytes]]) -> str | None:
        """Add to `frames` what a gone worker's link still holds, read to
        the end or LEFT_READ_BYTES; the error, if what it holds breaks the
        frame protocol."""
        for _ in range(LEFT_READ_BYTES // READ_BYTES):
            try:
                data = link.sock.recv(READ_BYTES)
            except OSError:           # (BlockingIOError: all is read)
                return None
            if not data:
                return None
            try:
                frames += link.reader.feed(data)
            except ipc.FrameError as error:
                return str(error)
        return None

    def _try_unstall(self, link: Link) -> None:
        """Run a stalled link's frames if nothing holds them any more; else
        note whether its flood control does, the one stall that no event
        ends (the loop wakes for it: _timeout)."""
        if not self._must_wait(link):
            self._unstall(link)
        elif self._token_wait(link) > 0:
            self.flood_stalled.add(link)

    def _stall(self, link: Link, frames: list[tuple[int, bytes]]) -> None:
        """Hold a link's frames, and read it no more, until none must wait:
        until its worker has read its output down to the bound, the
        recovery has ended, or its flood control has a token for it.

        The replies to a client's own commands are not held against the
        bound (a LIST may be megabytes), since its worker asks nothing
        more before the reply has gone.  A worker taken over through its
        client asks on and reads nothing: a MOTD after MOTD grew the
        broker's memory by 7 MB a second, without end.  Here its frames
        wait instead, as its client's lines wait in a worker for flood
        control; a worker of ours that falls behind a big reply (its
        client reads it slowly) sends nothing meanwhile anyway.

        Frames already waiting stay ahead of these (a scan answered amid
        a run of the link's frames stalled it there: _release).
        """
        link.stalled = [*(link.stalled or []), *frames]
        if self._token_wait(link) > 0:
            self.flood_stalled.add(link)       # (else its output or a recovery holds it)
        link.write_watched = link.writer.pending > 0
        self._watch(link, selectors.EVENT_WRITE if link.write_watched else 0)

    def _unstall(self, link: Link) -> None:
        """Its frames need wait no more: run those that waited, and read again."""
        frames, link.stalled = link.stalled or [], None
        link.write_watched = link.writer.pending > 0
        self._watch(link, selectors.EVENT_READ
                    | (selectors.EVENT_WRITE if link.write_watched else 0))
        self._run_frames(link, frames)

    def _watch(self, link: Link, events: int) -> None:
        """Watch a link for `events`; none: not at all (a stalled link with
        no output, which would else be reported writable every turn)."""
        key = self.selector.get_map().get(link.sock)
        if not events:
            if key is not None:
                self.selector.unregister(link.sock)
        elif key is None:
            self.selector.register(link.sock, events, lambda m, link=link: self.on_link(link, m))
        elif key.events != events:
            self.selector.modify(link.sock, events, key.data)

    def _on_frame(self, link: Link, kind: int, payload: bytes) -> None:
        """Run a frame, or hold it until the recovery ends.

        A SYNC of a link none of whose frames are held is answered at
        once: all that came before it has run (its HELLO, its REREGISTER).
        A worker that closes in a recovery waits for that echo to know
        this broker took its link and client, before it exits; held, the
        echo came only after the last awaited worker (worker._say_bye)."""
        if self.awaiting and kind not in _RECOVERY_FRAMES \
                and (kind != ipc.Kind.SYNC or link in self.holding):
            self.held.append((link, kind, payload))
            self.holding.add(link)
            return
        self._dispatch(link, kind, payload)

    def _dispatch(self, link: Link, kind: int, payload: bytes) -> None:
        if self.waiting_scans and self._held_behind_scan(link, kind, payload):
            return
        if link.cid is None and kind != ipc.Kind.HELLO:
            self._broken_link(link, f"frame kind {kind} before HELLO")
            return
        handler = _FRAME_HANDLERS.get(kind)
        if handler is None:
            self._broken_link(link, f"unexpected frame kind {kind}")
            return
        try:
            handler(self, link, payload)
        except ipc.FrameError as error:
            self._broken_link(link, str(error))
        if self.overflowed:
            self._disconnect_overflowed()

    def _broken_link(self, link: Link, error: str) -> None:
        """A link broke the frame protocol: close it (its worker reconnects,
        or its client is dropped).  Logged at most once per
        REFUSED_LINKS_WINDOW_S: a bug logs its first line, and a worker
        taken over through its client cannot fill the log."""
        more = self.link_error_window.held_back(time.monotonic())
        if more is not None:
            log.error("broker link of %s: %s%s", self._who(link), error, _more(more))
        self._close_link(link, "Connection closed")

    @staticmethod
    def _who(link: Link) -> str:
        """A link in the log: its connection, or its peer's pid before HELLO."""
        return f"conn {link.cid}" if link.cid is not None else f"pid {link.pid}"

    def _on_hello(self, link: Link, payload: bytes) -> None:
        if link.cid is not None:
            raise ipc.FrameError("a second HELLO")
        hello = ipc.decode_json(payload)
        cid = hello.get("cid")
        if not isinstance(cid, int) or isinstance(cid, bool):
            raise ipc.FrameError("HELLO without a connection id")
        if link.pid is not None:
            owner = self.owners.get(link.pid)
            if owner is None:
                self._await_owner(link, payload)
                return
            if owner[0] != cid:
                self._refuse_forged(link, cid, owner[0])
                return
            link.host = owner[1]
        old = self.links.get(cid)
        if old is not None:
            self._close_link(old, "Connection closed")
        link.cid = cid
        self.links[cid] = link
        self.state.connect(cid, self._host(link, hello.get("host", "unknown")))
        self._tell_oper_wait(cid, self.state.clients[cid].host)
        if not hello.get("reregister"):
            self._arrived(cid)

    def _await_owner(self, link: Link, hello: bytes) -> None:
        """Hold a HELLO until the supervisor names the peer's connection.

        The worker connects as soon as it is forked, and its spawner's
        report reaches us through the supervisor: sometimes later (a few
        HELLOs in 45 connecting at once, on 2 cores).  The link is
        not read meanwhile (what it sent with its HELLO is kept), so that a
        process which is no worker of ours can hold nothing but its socket,
        and only for BIND_WAIT_S.
        """
        assert link.pid is not None
        log.debug("link from pid %d: HELLO waits for its worker's pid", link.pid)
        link.waiting = [(ipc.Kind.HELLO, hello)]
        link.waiting_since = time.monotonic()
        self.unbound.setdefault(link.pid, []).append(link)
        self.selector.unregister(link.sock)

    def _bind(self, cid: int, pid: int, peer: str, limits: tuple[float, int]) -> None:
        """The supervisor says which process serves `cid`, the address its
        client connected from and the flood limits it was started with:
        take its waiting HELLO (or refuse it, if it stated another cid).
        The flood control its HELLO was charged to before this word, made
        with the running configuration's limits, keeps to its own from now."""
        self.owners[pid] = (cid, session.client_host(peer), limits)
        if pid in self.buckets:
            _fit_bucket(self.buckets[pid], limits)
        for link in self.unbound.pop(pid, []):
            frames, link.waiting = link.waiting or [], None
            if link.closed:
                continue
            self.selector.register(link.sock, selectors.EVENT_READ,
                                   lambda m, link=link: self.on_link(link, m))
            self._run_frames(link, frames)

    def _unbind(self, cid: int, pid: int) -> None:
        """A worker is gone: its pid names its connection no more (the kernel
        may give the pid to another worker)."""
        owner = self.owners.get(pid)
        if owner is not None and owner[0] == cid:
            del self.owners[pid]
        self.buckets.pop(pid, None)

    def _expire_unbound(self, now: float) -> None:
        """Refuse the links whose HELLO has waited BIND_WAIT_S for a pid the
        supervisor never named: no worker of ours (a process a worker
        forked, one its spawner never reported)."""
        for links in list(self.unbound.values()):
            for link in [each for each in links if now - each.waiting_since >= BIND_WAIT_S]:
                self._refused_link(f"pid {link.pid}: no connection of this server", now)
                self._close_link(link, "Connection closed")

    def _host(self, link: Link, stated: Any) -> str:
        """The host a link's client is shown with: made from the address the
        supervisor accepted it from, whatever its worker states (in its HELLO
        or REREGISTER); the worker's word only for a link made in-process.

        A worker taken over through its client could state any host: evade
        a ban on its own address, be counted for another's failed OPERs,
        or pose as another address in its prefix, WHO and WHOIS.  Stating
        another host is logged once per link, and at most one such line per
        REFUSED_LINKS_WINDOW_S (a worker may reconnect as often as it likes).
        """
        if link.host is None:
            return str(stated or "unknown")
        if stated != link.host and not link.misstated:
            link.misstated = True
            more = self.misstated_window.held_back(time.monotonic())
            if more is not None:
                log.error("conn %s: its worker stated host %s, not %s, the address its "
                          "client connected from%s", link.cid, repr(stated)[:STATED_HOST_SHOWN],
                          link.host, _more(more))
        return link.host or "unknown"

    def _refuse_forged(self, link: Link, cid: int, owner: int) -> None:
        """A worker stated another connection's id: close its new link, and
        leave that connection (and the worker's own) as they are.

        Logged as the refused links of strangers are, at most one line per
        REFUSED_LINKS_WINDOW_S with a count of the others, but apart from
        them: a worker doing this has been taken over, and strangers' noise
        must not hide it.
        """
        more = self.forged_window.held_back(time.monotonic())
        if more is not None:
            log.error("refused broker link from pid %d: the worker of conn %d stated conn %d%s",
                      link.pid, owner, cid, _more(more, " refused"))
        self._close_link(link, "Connection closed")

    def _on_request(self, link: Link, payload: bytes) -> None:
        """One line of the client's, as its worker forwards it: never more
        than an IRC line (the worker answers 417 to a longer one).

        A worker taken over through its client sends lines of up to a
        frame's megabyte: 'LIST >' and 5000 digits raised ValueError (int()
        of over 4300 digits) out of the broker's loop, which killed it, and
        a JOIN of 100000 rooms held the broker 0.8 s and queued a 7 MB reply.

        Raises:
            FrameError: a line longer than MAX_LINE_BYTES.
        """
        if len(payload) > protocol.MAX_LINE_BYTES:
            raise ipc.FrameError(f"REQUEST of {len(payload)} bytes, longer than an IRC line")
        if link.dropping:
            return
        try:
            msg = protocol.parse_line(payload)
        except protocol.ProtocolError:
            return
        assert link.cid is not None
        if msg.command in _COUNTED:          # an unknown name must not grow the table
            self.command_counts[msg.command] = self.command_counts.get(msg.command, 0) + 1
        if msg.command == "STATS" and len(msg.params) < 2:     # STATS m; one with a target
            self.replying = link.cid                           # is checked like TIME's
            try:
                self._stats_commands(link.cid)
            finally:
                self.replying = None
            return
        before = self._rooms_touched(link.cid, msg)
        self.replying = link.cid
        try:
            if self.state.scans_everything(msg):
                self._paced_scan(link, msg)
            else:
                self.state.request(link.cid, msg, self.outbox)
        finally:
            self.replying = None
        if msg.command in _ROOM_CHANGING:
            self._rooms_left(before)
            if self.store.unread or self.records_awaited:
                self._note_members(before)
        elif msg.command in _ROOM_RECORD_CHANGING and msg.params:
            self._save_room(msg.params[0])
            if msg.command == "TOPIC" and len(msg.params) == 1 and self.records_awaited:
                self._told_no_topic(link.cid, msg.params[0])

    def _paced_scan(self, link: Link, msg: protocol.Message) -> None:
        """Run a command that scans the whole server, within SCAN_SHARE:
        now, if the credit allows and no other scan waits, else in its turn."""
        if link.closed:
            return           # held behind a scan of a link now closing: nobody to answer
        assert link.cid is not None
        cid = link.cid
        client = self.state.clients.get(cid)
        now = self._refill_scan_credit()
        if client is None or not client.registered or "o" in client.modes \
                or (self.scan_credit > 0 and not self.waiting_scans):
            self._run_scan(cid, msg)
        elif len(self.waiting_scans) < SCAN_QUEUE:
            self.waiting_scans[cid] = WaitingScan(link, msg, now)
        else:
            self.state.refuse_scan(cid, msg, self.outbox)

    def _refill_scan_credit(self) -> float:
        """Add the credit earned since the last look; the scan clock's now."""
        now = self.scan_clock()
        refill = (now - self.scan_credit_at) * SCAN_SHARE / (1 - SCAN_SHARE)
        self.scan_credit = min(SCAN_BURST_S, self.scan_credit + refill)
        self.scan_credit_at = now
        return now

    def _run_scan(self, cid: int, msg: protocol.Message, charged: bool = True) -> None:
        """Answer a scan and, if `charged`, charge the CPU time it took.
        The credit does not grow while a scan runs, charged or not."""
        cpu = self.scan_cpu_clock()
        self.state.request(cid, msg, self.outbox)
        if charged:
            self.scan_credit -= self.scan_cpu_clock() - cpu
        self.scan_credit_at = self.scan_clock()

    def _serve_waiting_scans(self, spare: bool = False) -> None:
        """Answer the scans whose turn has come, oldest first, while the
        credit lasts; one that waited SCAN_WAIT_S is answered 263.  Each
        answered link's held frames then run.

        If `spare` (the broker's poll found nothing else to do) and no scan
        ran in the share, the first one runs anyway, not charged: the share
        bounds what scans take from others, and nobody else wanted this
        time.  When 550 clients rejoined a room of 552 at once, each sending
        a WHO of it, the broker was mostly idle while the queue drained at
        the share, four times slower than it could have; 300 clients each
        sending a WHO of their room of 300 (paced) at once, on 2 cores, had
        the last answer after 2.2 to 2.7 s, and now after 0.8 s (three WHOs
        each: 6.9 to 7.8 s, now 2.0 to 2.3 s)."""
        now = self._refill_scan_credit()
        ran = False
        while self.waiting_scans:
            waiting = next(iter(self.waiting_scans.values()))
            expired = now - waiting.since >= SCAN_WAIT_S
            if not expired and self.scan_credit <= 0:
                break
            self._answer_waiting(waiting, refuse=expired)
            ran = ran or not expired
        if spare and not ran and self.waiting_scans:
            self._answer_waiting(next(iter(self.waiting_scans.values())),
                                 refuse=False, charged=False)

    def _spare_turn_possible(self) -> bool:
        """Whether a scan may run beyond the share if the poll finds
        nothing ready: one waits, and no output waits for its flush window
        (which would else be held up by the scan)."""
        return SPARE_TURNS and bool(self.waiting_scans) and not self.dirty \
            and self.batch is None

    def _answer_waiting(self, waiting: WaitingScan, refuse: bool,
                        charged: bool = True) -> None:
        """Take a scan out of the queue, run it (`charged` to the credit)
        or answer it 263, then run what its link sent after it."""
        cid = waiting.link.cid
        assert cid is not None
        del self.waiting_scans[cid]
        self.replying = cid
        try:
            if refuse:
                self.state.refuse_scan(cid, waiting.msg, self.outbox)
            else:
                self._run_scan(cid, waiting.msg, charged)
        finally:
            self.replying = None
        self._release(waiting)

    def _next_scan_turn(self) -> float:
        """Seconds until the first waiting scan's turn: when the credit is
        back above zero, or when it has waited SCAN_WAIT_S."""
        waiting = next(iter(self.waiting_scans.values()))
        now = self.scan_clock()
        rate = SCAN_SHARE / (1 - SCAN_SHARE)
        credit = min(SCAN_BURST_S, self.scan_credit + (now - self.scan_credit_at) * rate)
        until_credit = 0.0 if credit > 0 else (SCAN_TURN_SLACK_S - credit) / rate
        return min(until_credit, waiting.since + SCAN_WAIT_S - now)

    def _refuse_waiting_scans(self) -> None:
        """The broker is stopping: answer the scans still waiting 263 now.

        A broker started after this one knows nothing of them, and their
        clients would wait for an end numeric that never comes (irssi then
        sends no further query for any room it joins).  What their links
        sent after them is lost with the broker, as any frame not yet read.
        """
        while self.waiting_scans:
            cid, waiting = self.waiting_scans.popitem(last=False)
            self.replying = cid
            try:
                self.state.refuse_scan(cid, waiting.msg, self.outbox)
            finally:
                self.replying = None
        self._flush_dirty()

    def _held_behind_scan(self, link: Link, kind: int, payload: bytes) -> bool:
        """Hold a frame of a link whose scan waits (see WaitingScan)."""
        waiting = self.waiting_scans.get(link.cid) if link.cid is not None else None
        if waiting is None or waiting.link is not link or kind == ipc.Kind.BYE:
            return False
        if kind == ipc.Kind.REQUEST and not waiting.held \
                and protocol.command_word(payload) in _PASSES_WAITING_SCAN:
            return False
        waiting.held.append((kind, payload))
        waiting.held_bytes += len(payload) + ipc.HEADER.size
        if waiting.held_bytes > self._held_limit(link):
            self._answer_waiting(waiting, refuse=True)
        return True

    def _held_limit(self, link: Link) -> int:
        """The most a link may send behind its waiting scan: twice what its
        worker's flood control lets through in SCAN_WAIT_S, of lines of the
        longest.  A worker taken over through its client sends what it
        likes, as fast as the broker reads: held without a bound, its
        frames grew the broker's memory for as long as the scan waited
        (SCAN_WAIT_S, or for ever with a new scan behind each).  Beyond
        this its scan is answered 263 now, and what it sent runs.  The
        limits its worker was started with, as for _bucket: one started
        before a reload that lowered them still lets its client's lines
        through at the old rate."""
        rate, burst = self._worker_flood(link.pid)
        lines = burst + rate * SCAN_WAIT_S
        return int(2 * lines * (protocol.MAX_LINE_BYTES + ipc.HEADER.size))

    def _release(self, waiting: WaitingScan) -> None:
        """Run the frames held behind a scan, in order; a scan among them
        may wait in its turn, and what follows it waits with it.

        They were read while the link's output was within its bound, and
        the scan's answer (or theirs) may take it over: from there on they
        wait as frames read then would (_stall), ahead of what the link
        sent after them, until its worker reads.  Run all at once, a
        worker taken over that sent LIST after LIST and read nothing had a
        reply queued for each one held (some 150 with flood control: of a
        server of 10000 rooms, 100 MB).  Those that wait took their flood
        control's tokens as they were read, and take none when they run
        (Link.prepaid): charged again, a worker's frames beyond its tokens
        left waited for tokens it had paid, and a gone worker's were dropped.
        A link going (closed, or its worker gone) runs them all: nobody
        will read it again.
        """
        link = waiting.link
        if link.closed or link.going:
            for kind, payload in waiting.held:
                self._dispatch(link, kind, payload)
            return
        later, link.stalled = link.stalled, None      # (stalled before: read after these)
        self._run_frames(link, waiting.held, paid=True)
        if later is not None and not link.closed:
            link.stalled = [*(link.stalled or []), *later]

    def _drop_waiting_scan(self, link: Link, run_held: bool) -> None:
        """The link is going: its scan is not answered (nobody would read
        it).  What its client sent after the scan runs if `run_held`, as it
        would have (a worker's BYE comes after the client's last commands)."""
        cid = link.cid
        waiting = self.waiting_scans.get(cid) if cid is not None else None
        if cid is not None and waiting is not None and waiting.link is link:
            del self.waiting_scans[cid]
            if run_held:
                self._release(waiting)

    def _on_register(self, link: Link, payload: bytes) -> None:
        """NICK and USER are in; the user name and real name are cut as the
        worker cuts its client's (see _bounded_identity)."""
        info = _bounded_identity(ipc.decode_json(payload), self.state.settings)
        assert link.cid is not None
        self.replying = link.cid         # the welcome burst and the MOTD
        try:
            self.state.register(link.cid, info.get("user", "user"),
                                info.get("realname", ""), self.outbox)
        finally:
            self.replying = None

    def _on_oper(self, link: Link, payload: bytes) -> None:
        """The worker checked an OPER's password (forkchat(7) says why here).

        Logged when the client becomes an operator, its name cut as a
        misstated host is: a worker taken over through its client sent
        OPER frames as fast as the broker read them, each a line of the
        log with a name of up to a megabyte.
        """
        info = ipc.decode_json(payload)
        assert link.cid is not None
        client = self.state.clients.get(link.cid)
        if client is not None and client.registered and "o" not in client.modes:
            log.info("conn %d became operator %s", link.cid,
                     str(info.get("name"))[:STATED_HOST_SHOWN])
        if client is not None:
            operguard.succeeded(self.oper_guard, self._oper_block(client.host))
        self.state.set_oper(link.cid, str(info.get("name", "")), self.outbox)

    def _on_oper_failed(self, link: Link, payload: bytes) -> None:
        """A wrong OPER or server password (the worker hashed it): count it
        for the client's address and, once the address must wait, tell all
        its connections."""
        info = ipc.decode_json(payload)
        client = self.state.clients.get(link.cid) if link.cid is not None else None
        if client is None:
            return
        block, now = self._oper_block(client.host), time.monotonic()
        not_before = operguard.failed(self.oper_guard, block, now)
        if not_before <= now:
            return                          # one of the address's free failures
        count = operguard.failures(self.oper_guard, block)
        if count == operguard.FREE_FAILURES + 1:
            if info.get("pass"):       # the server password (PASS), counted alike
                log.warning("connections from %s must wait: %d failed password or OPER "
                            "attempts, the last a wrong server password", block, count)
            else:
                log.warning("OPER from %s must wait: %d failed attempts, the last as %r",
                            block, count, str(info.get("name", "")))
        # (a list: a full link drops its client, which changes the table)
        for cid in [c.cid for c in self.state.clients.values()
                    if self._oper_block(c.host) == block]:
            self.outbox.update(cid, {"oper_address_not_before": not_before})

    def _oper_block(self, host: str) -> str:
        """Failed OPERs count per address block, as the connection limits
        do: a guesser with an IPv6 /64 has fresh addresses without end."""
        return admission.block_of(host, self.cfg.limits)

    def _tell_oper_wait(self, cid: int, host: str) -> None:
        """A new connection learns its address's OPER wait, if there is one."""
        now = time.monotonic()
        not_before = operguard.not_before(self.oper_guard, self._oper_block(host), now)
        if not_before > now:
            self.outbox.update(cid, {"oper_address_not_before": not_before})

    def _on_reregister(self, link: Link, payload: bytes) -> None:
        """Restore a client as its worker says it was, if this broker took
        its connection over from a dead one, and only once.

        Nothing checks the identity (the new broker has no memory), so a
        worker taken over through its client could give itself any nick
        that is free, operator status, and +o in any room whatever its key,
        bans or +i, without a JOIN anyone saw: at will, where now it must
        first kill the broker (which is logged) and may do it once per death.
        A worker started under this broker has nothing to restore.
        """
        assert link.cid is not None
        if link.cid not in self.inherited:
            more = self.link_error_window.held_back(time.monotonic())
            if more is not None:        # (a worker taken over may send it endlessly)
                log.error("conn %d: REREGISTER refused: not a connection this broker "
                          "took over, or restored already%s", link.cid, _more(more))
            self.outbox.drop(link.cid, "Server error: session not restored")
            return
        self.inherited.discard(link.cid)
        identity = _bounded_identity(ipc.decode_json(payload), self.state.settings)
        self.state.reregister(link.cid, identity, self.outbox,
                              host=self._host(link, identity.get("host")))
        self._note_rooms_back(link.cid)
        self._arrived(link.cid)

    def _on_sync(self, link: Link, payload: bytes) -> None:
        """Echo it: all the link sent before it has run.

        A closing worker's SYNC "bye" is echoed only in a recovery, which
        holds its BYE until it ends (_on_frame); otherwise the BYE's own
        answer, after its QUIT is written, is the one the worker waits for
        (_close_quitters).  Echoed at once, it let the worker end before a
        BYE read apart from it (a read ending between the two, a link over
        its bound) had run, and a broker killed then lost the quit."""
        assert link.cid is not None
        if payload == BYE_SYNC and not self.awaiting:
            return
        self.queue(link.cid, ipc.encode(ipc.Kind.SYNC, payload))

    def _on_bye(self, link: Link, payload: bytes) -> None:
        """The client quits; its worker's SYNC before the BYE is answered,
        and its link closed, after the flush that writes its QUIT to the
        members of its rooms (_close_quitters).  The worker exits on that
        answer: the link closed at once (and its end taken for the answer),
        while the QUIT waited for the flush window, a broker killed in
        between lost the QUIT, and the next one never knew the client (its
        rooms' members kept its nickname)."""
        self._close_link(link, _bye_reason(payload), close_after_flush=True)

    def _close_link(self, link: Link, reason: str, after_held: bool = False,
                    close_after_flush: bool = False) -> None:
        """Forget a link; its client quits with `reason` (idempotent).

        `after_held`: its worker ended (end of file, or gone).  In a
        recovery its client quits when the recovery ends, after what is
        held of it, in turn (_run_held_of_closed): at once, a client that
        said something and quit while the new broker waited for others
        had its last lines dropped, and the members of its rooms who came
        back later never saw it quit (their clients kept its nick)."""
        if link.closed:
            return
        link.closed = True
        link.stalled = None
        link.prepaid = 0
        self.flood_stalled.discard(link)
        if link.pid is not None and link.pid not in self.owners:
            self.buckets.pop(link.pid, None)     # its worker is gone (or never was one)
        if self.waiting_scans:
            self._drop_waiting_scan(link, run_held=True)
        try:
            self.selector.unregister(link.sock)
        except (KeyError, ValueError):
            pass
        if self.batch is not None:      # (its share of the room's talk, before it goes)
            self._end_batch()
        self.dirty.discard(link)
        self.answered.discard(link)
        if link.waiting is not None and link.pid is not None:
            waiting = self.unbound.get(link.pid, [])
            if link in waiting:
                waiting.remove(link)
            if not waiting:
                self.unbound.pop(link.pid, None)
        if link.cid is not None and self.links.get(link.cid) is link:
            del self.links[link.cid]
            if after_held and self.awaiting:
                self.held.append((link, CLOSED_HELD, reason.encode()))
            else:
                self._disconnect(link.cid, reason)
            self._arrived(link.cid)
        if close_after_flush:
            self.closing_links.append(link)
            if not self.dirty and self.batch is None:
                self._close_quitters()
        else:
            link.sock.close()

    def _close_quitters(self) -> None:
        """Answer each quitter's BYE and close its link, after the QUITs
        to the members of its rooms have been written."""
        if self.batch is not None:
            self._end_batch()
        closing, self.closing_links = self.closing_links, []
        for link in closing:
            link.writer.queue_reply(ipc.encode(ipc.Kind.SYNC, BYE_SYNC))
            self._empty_quitter(link)

    def _empty_quitter(self, link: Link) -> None:
        """Write what an answered quitter's link holds, its answer last, and
        close it once all is written, its worker gone, or QUITTER_FLUSH_S
        passed; till then the link is watched for room to write.

        Closed after one write, a link holding more than its socket takes
        (a worker behind a busy room) lost its answer, and its worker,
        seeing the end without it, took the live broker for dead: it
        reconnected, its REREGISTER was refused (an error in the log), and
        it said goodbye again."""
        try:
            done = link.writer.flush()
        except OSError:
            done = True             # its worker is gone
        until = self.quitters_emptying.get(link)
        if done or (until is not None and time.monotonic() >= until):
            self._close_quitter(link)
        elif until is None:
            self.quitters_emptying[link] = time.monotonic() + QUITTER_FLUSH_S
            self.selector.register(link.sock, selectors.EVENT_WRITE,
                                   lambda mask, link=link: self._empty_quitter(link))

    def _close_quitter(self, link: Link) -> None:
        if self.quitters_emptying.pop(link, None) is not None:
            self.selector.unregister(link.sock)
        link.sock.close()

    def _expire_quitters(self) -> None:
        """Close the quitters' links whose worker has not taken what they
        held in QUITTER_FLUSH_S (it no longer waits)."""
        now = time.monotonic()
        for link in [link for link, until in self.quitters_emptying.items() if now >= until]:
            self._close_quitter(link)

    # -- output ----------------------------------------------------------------

    def _link_to_queue_on(self, cid: int) -> Link | None:
        """`cid`'s link, once the room's batch before it is queued (every
        link keeps the order of what it is sent); None if it is gone or
        dropping its client."""
        if self.batch is not None:
            self._end_batch()
        link = self.links.get(cid)
        return None if link is None or link.dropping else link

    def queue(self, cid: int, frame: bytes) -> None:
        link = self._link_to_queue_on(cid)
        if link is None:
            return
        if link.writer.queue(frame):
            self.dirty.add(link)
        else:
            self._overflow(link)

    def queue_line(self, cid: int, line: bytes, frame: bytes) -> None:
        """A line for `cid`'s client, and its DELIVER frame (see
        ipc.FrameWriter.queue_line)."""
        link = self._link_to_queue_on(cid)
        if link is None:
            return
        if link.writer.queue_line(line, frame):
            self.dirty.add(link)
        else:
            self._overflow(link)

    def queue_unbounded(self, cid: int, frame: bytes) -> None:
        """A frame for `cid`'s worker not held against the bound (Outbox.update),
        unless its link is past the bound already: an address's OPER wait
        follows no line the bound let through, and a worker taken over that
        reported failed OPERs without end grew the queue of one from its
        address that did not read without bound."""
        link = self._link_to_queue_on(cid)
        if link is None:
            return
        if link.writer.bounded > link.writer.limit:
            self._overflow(link)
            return
        link.writer.queue_unbounded(frame)
        self.dirty.add(link)

    def drop(self, cid: int, reason: str, last: bytes = b"") -> None:
        """Close `cid`'s client with `reason`, after its `last` line: not
        held against the bound, for it ends the link (its worker closes on
        the DROP), two frames past it at most.  Counted, a KILL of a client
        whose link was near broker_buffer_bytes overflowed it, and the
        client read "Max SendQ exceeded" where the operator gave a reason.
        The link is dropping from then on, as after an overflow: nothing
        more is queued on it (a worker that repeats what is refused so, a
        REREGISTER, grows it no further), nor read from it; one dropping
        already (overflowed before) keeps its reason."""
        link = self._link_to_queue_on(cid)
        if link is None:
            return
        if last:
            link.writer.queue_unbounded(ipc.encode(ipc.Kind.DELIVER, last))
        self._end_link(link, reason)

    def _end_link(self, link: Link, reason: str) -> None:
        """Tell `link`'s worker to close its client with `reason`, past the
        bound, and queue nothing more on it: its scan waiting for its turn
        is not answered (nobody would read it)."""
        link.dropping = True
        if self.waiting_scans:       # (called amid a fan-out: nothing of it runs here)
            self._drop_waiting_scan(link, run_held=False)
        link.writer.queue_unbounded(ipc.encode(ipc.Kind.DROP, reason.encode()))
        self.dirty.add(link)

    def queue_reply(self, cid: int, frame: bytes) -> None:
        """A frame of the reply to `cid`'s own command: not bounded."""
        link = self._link_to_queue_on(cid)
        if link is None:
            return
        link.writer.queue_reply(frame)
        self.dirty.add(link)
        self.answered.add(link)

    def queue_to_room(self, members: Collection[int], but: int, line: bytes) -> None:
        """A line for every client of `members` but `but` (its sender): a
        room's talk, gathered in a RoomBatch until something else is
        queued, or the flush, so that the lines of one flush window to a
        room cost one join and one queue per member, not one queue per
        member and line.  Members are compared as they are when each line
        comes: a batch goes on only while they are the same."""
        batch = self.batch
        if batch is None or batch.members is not members or len(members) != len(batch.cids) \
                or batch.size + len(line) > ipc.RUN_BYTES or tuple(members) != batch.cids:
            if batch is not None:
                self._end_batch()
            batch = self.batch = RoomBatch(members)
        batch.lines.append(line)
        batch.buts.append(but)
        batch.size += len(line)

    def _end_batch(self) -> None:
        """Queue the room's lines of the batch on its members' links, each
        member's as one DELIVER: the lines all joined, for those who sent
        none of them; a sender's, joined without its own.  A link that
        overflows is dropped once all have theirs, so that no member hears
        of a sender's quit before that sender's last words."""
        batch, self.batch = self.batch, None
        assert batch is not None
        lines, buts = batch.lines, batch.buts
        everything = b"".join(lines)
        frame = ipc.encode(ipc.Kind.DELIVER, everything)
        senders: dict[int, tuple[bytes, bytes]] = {}
        for sender in set(buts):
            theirs = b"".join([line for line, but in zip(lines, buts) if but != sender])
            senders[sender] = (theirs, ipc.encode(ipc.Kind.DELIVER, theirs))
        links = self.links
        dirty = self.dirty
        refused = []
        for cid in batch.cids:
            link = links.get(cid)
            if link is None or link.dropping:
                continue
            if cid in senders:
                data, data_frame = senders[cid]
                if not data:
                    continue
            else:
                data, data_frame = everything, frame
            if link.writer.queue_line(data, data_frame):
                dirty.add(link)
            else:
                refused.append(link)
        for link in refused:
            if not link.dropping:   # (not dropped already by a QUIT refused before)
                self._overflow(link)

    def _overflow(self, link: Link) -> None:
        """The worker does not keep up: drop its client, wait for nobody.
        Nothing more is queued on its link; its client is disconnected once
        the command under way is done (_disconnect_overflowed)."""
        log.warning("conn %s: broker buffer full, dropping client", link.cid)
        if self.batch is not None:
            self._end_batch()
        self._end_link(link, "Max SendQ exceeded")
        if link.cid is not None:
            self.overflowed.append(link.cid)

    def _disconnect_overflowed(self) -> None:
        """Disconnect the clients _overflow dropped, now that the command
        whose output overflowed their links has been carried out.

        A line fanned out to a room overflows the link of any member, the
        sender's own included (its NICK or JOIN echo), and the command goes
        on with its client after the fan-out.  Disconnected amid it, the
        client was forgotten and then used: a NICK gave the forgotten client
        its new nick for good (refused to everyone after, 433), and a JOIN
        of two rooms made it a member of the second one and looked it up
        there (KeyError: the broker died).  Their links are dropping, so
        nothing more is queued on them, nor read from them, meanwhile."""
        while self.overflowed:
            self._disconnect(self.overflowed.pop(0), "Max SendQ exceeded")

    def _flush_dirty(self) -> None:
        """Write each link's output; those with the answer to a command of
        their client's last.

        So a client that has its answer knows that what its earlier lines
        sent to the others was written before it (forkchat(7)).  In no set
        order, a broker killed between two writes had answered a client's
        ISON while the room messages it sent just before were still
        unwritten to a member's link, and were lost with the broker.  (An
        order kept for every link, a dict's, cost fan-out at N=100 5 % more
        worker CPU and 5 ms more p99: the set's order stays for the rest.)
        """
        if self.batch is not None:
            self._end_batch()
        if self.overflowed:     # (a scan's output, or the talk just queued, overflowed)
            self._disconnect_overflowed()
        if not self.dirty:
            return
        dirty, self.dirty = self.dirty, set()
        answered, self.answered = self.answered, set()
        if answered:                # (never in a fan-out: nobody asked anything)
            dirty -= answered
        for link in dirty:
            self._flush(link)
        for link in answered:
            self._flush(link)
        if self.closing_links:
            self._close_quitters()

    def _flush(self, link: Link) -> None:
        if link.closed:
            return
        try:
            done = link.writer.flush()
        except OSError:
            # The worker is gone, but what it wrote first (its BYE with the
            # client's quit reason, a last message) is still ours to read.
            self._leave(link)
            return
        if link.stalled is not None:
            if self._must_wait(link) and done == link.write_watched:
                link.write_watched = not done
                self._watch(link, 0 if done else selectors.EVENT_WRITE)
            self._try_unstall(link)
            return
        if done == link.write_watched:      # epoll_ctl only when it changes
            link.write_watched = not done
            want = selectors.EVENT_READ | (0 if done else selectors.EVENT_WRITE)
            self.selector.modify(link.sock, want, self.selector.get_key(link.sock).data)

    # -- control -----------------------------------------------------------------

    def on_control(self, mask: int) -> None:
        try:
            data = self.control.recv(READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:          # the supervisor is gone
            data = b""
        if not data:
            self.running = False
            return
        for kind, payload in self.control_reader.feed(data):
            if kind == ipc.Kind.CONFIG:
                self._take_config(pickle.loads(payload))
            elif kind == ipc.Kind.CONTROL:
                self._on_control_op(ipc.decode_json(payload))

    def _on_control_op(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "gone":
            cid, pid = int(message.get("cid", 0)), int(message.get("pid", 0))
            self._worker_gone(cid, pid)
            self._unbind(cid, pid)
            self._arrived(cid)
        elif op == "bind":
            for entry in message.get("workers", ()):
                self._bind(int(entry[0]), int(entry[1]), str(entry[2]),
                           worker_flood(entry, self.cfg))
        elif op == "shutdown":
            self.running = False
        elif op == "freeze":
            # The server is stopping: rooms emptied by the shutdown are kept,
            # and forgotten last (store.renew).
            self._save_rooms()
            self.store.renew(self.state.rooms)
            self.store_frozen = True
            self._send_control({"op": "frozen"})

    def _take_config(self, cfg: config.Config) -> None:
        """A reload: the supervisor validated it; the state takes new limits."""
        self.cfg = cfg
        self.state.take_settings(settings_from(cfg, self.created))
        for link in self.links.values():
            link.writer.limit = cfg.limits.broker_buffer_bytes
        logsetup.set_level(cfg.log.level)
        log.info("broker took the new configuration")


def worker_flood(entry: tuple | list, cfg: config.Config) -> tuple[float, int]:
    """The (flood_rate, flood_burst) of a worker the supervisor names, as
    (cid, pid, peer, flood_rate, flood_burst): those it was started with.
    Without them (the supervisor always names them, a test may not), the
    running configuration's."""
    if len(entry) >= 5:
        return float(entry[3]), int(entry[4])
    return cfg.limits.flood_rate, cfg.limits.flood_burst


def _flood_pace(limits: tuple[float, int]) -> tuple[int, float]:
    """The (burst, rate) of a worker's flood control at the broker
    (Broker._bucket) for its client's (flood_rate, flood_burst)."""
    rate, burst = limits
    return FLOOD_MARGIN * burst + FLOOD_OWN_FRAMES, FLOOD_MARGIN * rate


def _fit_bucket(bucket: flood.TokenBucket, limits: tuple[float, int]) -> None:
    """Give a worker's flood control at the broker the pace of `limits`
    from now on; the tokens it had are kept (cut to the new burst at its
    next refill)."""
    bucket.wait_time()              # its refill until now, at the pace it had
    burst, bucket.rate = _flood_pace(limits)
    bucket.burst = float(burst)


def _bounded_identity(identity: dict[str, Any], settings: state.Settings) -> dict[str, Any]:
    """A REGISTER's or REREGISTER's fields, cut to what a client of ours can
    have: a user name as session.clean_user makes it, a real name of
    REALNAMELEN characters, an away message of awaylen, a nickname and
    room names no longer than the configuration allows at most (a reload
    may have lowered the limits since they were taken), other types left out.

    The worker cuts them, and a worker taken over through its client
    cuts nothing: a real name of a megabyte was kept by the broker, and
    in WHOWAS after the client left, 5000 of them.
    """
    bounded: dict[str, Any] = {}
    for key, value in identity.items():
        if key in _IDENTITY_CUTS:
            if isinstance(value, str):
                bounded[key] = _IDENTITY_CUTS[key](value, settings)
        elif key == "rooms":
            if isinstance(value, dict):
                bounded[key] = {name: status for name, status in value.items()
                                if isinstance(status, str)
                                and len(name) <= config.AT_MOST["roomlen"][0]}
        else:
            bounded[key] = value
    return bounded


_IDENTITY_CUTS: dict[str, Callable[[str, state.Settings], str]] = {
    "user": lambda user, _settings: session.clean_user(user),
    "realname": lambda name, _settings: name[:session.REALNAMELEN],
    "away": lambda away, settings: away[:settings.awaylen],
    "nick": lambda nick, _settings: nick if len(nick) <= config.AT_MOST["nicklen"][0] else "",
}


def _counted(frames: list[tuple[int, bytes]]) -> int:
    """How many of `frames` take a token of their worker's flood control."""
    return sum(kind in _FLOOD_COUNTED for kind, _payload in frames)


def _unlike_new_room(record: dict) -> bool:
    """Whether a room created again with this stored record would differ
    from a new room in more than its name and creation time."""
    restored = rooms.Room("", 0)
    restored.apply_meta(record)
    return _SHOWN(restored) != _NEW_ROOM_SHOWN


def _bye_reason(payload: bytes) -> str:
    """A BYE's quit reason (its client's, or the plain one)."""
    return payload.decode("utf-8", "replace") or protocol.PLAIN_QUIT


def _more(count: int, what: str = "") -> str:
    """The end of a line logged through a Window: the events not logged."""
    return f" ({count} more{what} since the last such line)" if count else ""


def _spare_descriptor() -> int:
    """A descriptor held back for a moment of need, or -1 if none is free."""
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1


class _Outbox:
    """state.Outbox over the broker's links: lines built once, queued per link."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    def send(self, cid: int, line: bytes) -> None:
        broker = self._broker
        if cid == broker.replying:
            broker.queue_reply(cid, ipc.encode(ipc.Kind.REPLY, line))
        else:
            broker.queue_line(cid, line, ipc.encode(ipc.Kind.DELIVER, line))

    def fanout(self, cids: Iterable[int], line: bytes) -> None:
        """Broker.queue_line for each of `cids`, written out: it runs once
        per delivery."""
        frame = ipc.encode(ipc.Kind.DELIVER, line)
        broker = self._broker
        if broker.batch is not None:
            broker._end_batch()
        links = broker.links
        dirty = broker.dirty
        for cid in cids:
            link = links.get(cid)
            if link is None or link.dropping:
                continue
            if link.writer.queue_line(line, frame):
                dirty.add(link)
            else:
                broker._overflow(link)

    def fanout_but(self, cids: Collection[int], but: int, line: bytes) -> None:
        self._broker.queue_to_room(cids, but, line)

    def update(self, cid: int, changes: dict[str, Any]) -> None:
        """The client's own record, held by its worker: not held against
        broker_buffer_bytes.  A JOIN's, KICK's or MODE's lists every room of
        the client, some 40 bytes each, and counted, it dropped a client
        that read everything (at the floor, 517, in its 13th room of 30
        characters).  Each follows a line the bound let through (the
        command's own answer, or the KICK or MODE line of its target), so a
        worker that stops reading is still dropped at its next line or
        UPDATE (Broker.queue_unbounded), one UPDATE past the bound at most."""
        frame = ipc.encode_json(ipc.Kind.UPDATE, changes)
        if cid == self._broker.replying:
            self._broker.queue_reply(cid, frame)        # part of the answer
        else:
            self._broker.queue_unbounded(cid, frame)

    def drop(self, cid: int, reason: str, last: bytes = b"") -> None:
        self._broker.drop(cid, reason, last)

    def serve(self, cid: int, line: bytes) -> None:
        self._broker.queue(cid, ipc.encode(ipc.Kind.SERVE, line))


_FRAME_HANDLERS: dict[int, Callable[[Broker, Link, bytes], None]] = {
    ipc.Kind.HELLO: Broker._on_hello,
    ipc.Kind.REQUEST: Broker._on_request,
    ipc.Kind.REGISTER: Broker._on_register,
    ipc.Kind.OPER: Broker._on_oper,
    ipc.Kind.OPER_FAILED: Broker._on_oper_failed,
    ipc.Kind.REREGISTER: Broker._on_reregister,
    ipc.Kind.BYE: Broker._on_bye,
    ipc.Kind.SYNC: Broker._on_sync,
}
