"""One IRC session over one socket, kept alive across server restarts.

The Connection lives in the caller's `selectors` loop (single thread, no
blocking calls except name resolution): its `transport.Link` registers the
socket with a bound callback as `key.data`, and the loop calls `tick()` after
every select with the timeout from `next_timeout()`.  Everything it learns is
handed to the front end as `events.UiEvent`s through `on_event`.

    idle -> connecting (TCP, TLS) -> registering -> ready
                ^                                             |
                +------ waiting (backoff) <---- lost ---------+

Before the first successful registration every failure is fatal (`fatal` is
set, `closed` becomes true): a typo in the host name should fail fast with a
clear message.  After it, a lost connection is announced and retried with
backoff; on return the session registers again and rejoins its rooms.

Lines the front end sends are queued and paced (a small token bucket) so a
pasted block or a long pipe never trips the server's flood limit; the queue
only drains while registered, so lines typed while disconnected go out after
the rejoin.  Room keys (+k) are remembered, from our own `JOIN #room key` once
the server confirms it and from the `MODE #room +k key` / `-k` seen in the
room, because a restarted server restores a room's key and asks it of the
first one back.  With `resend_unconfirmed` (line mode), lines sent but not yet
confirmed by a flush barrier's PONG are queued again after a reconnect:
at least once, rather than silently lost in a dead server's socket buffer.
With `confirm_typed` (the full-screen interface) the same holds, and the
connection puts the barriers behind the user's lines itself, one at a time
(a paste waits for one PONG, not one per line), since nothing else flushes.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import selectors
import time
from typing import Callable

from forkchat.client import events, ircmsg, transport

RECONNECT_DELAYS_S = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
CONNECT_TIMEOUT_S = 15.0
IDLE_PING_S = 90.0
PING_TIMEOUT_S = 60.0
QUIT_TIMEOUT_S = 3.0
SEND_BURST = 8
# CTCP answers waiting in the paced queue at most; requests beyond get none.
CTCP_ANSWERS_QUEUED = 3
SEND_INTERVAL_S = 0.6
VERSION_TEXT = "forkchat-client"
STATUS_CONNECTED = "connected"
# Said with every connect under --insecure: the full-screen user, who gave
# it once on a command line, sees nothing else tell such a link from a safe
# one.  (Line mode shows no connect news: a script's stderr is for failures.)
UNCHECKED = " (TLS, but the server's certificate is not checked: --insecure)"
STATUS_DISCONNECTED = "disconnected"
STATUS_NICK_TAKEN = "nick-taken"
# Channel modes that take a parameter, RFC 2812 defaults that 005 CHANMODES and
# PREFIX replace: always (lists, key), only when set (+l 10 but -l), and the
# member status modes (+o nick).
DEFAULT_PARAM_MODES = {"always": "beIk", "when_set": "l", "status": "ov"}
# A JOIN refused: the key we offered (if any) is not one to remember.
JOIN_REFUSALS = ("403", "405", "471", "473", "474", "475", "476", "477")
# The PING token of a flush barrier (forkchat-flush-1, -2 ...).
FLUSH_TOKEN = "forkchat-flush-"
# Commands whose answer a busy forkchat-server may hold back while the scan
# waits its turn (up to 30 s; forkchat(7) IRC PROFILE), and the numeric that
# ends each answer (after a 263 too): until it comes, the full-screen
# interface says what it waits for, and what is typed after it waits too.
ANSWER_ENDS = {"LIST": "323", "WHO": "315"}
# A rejoin names this many rooms per JOIN at most (and REJOIN_BYTES of names
# and keys): one JOIN per room went out at the pace, 8 and then one every
# 0.6 s, so that with 30 rooms what was typed meanwhile waited 14 s behind
# them, 25 s with 50.  Ten keeps each line, and the burst of member lists
# that answers it, modest on servers that count a JOIN's rooms.
REJOIN_ROOMS = 10
# The 005 tokens of the lengths a server keeps of free text, in characters.
LENGTH_TOKENS = ("TOPICLEN", "KICKLEN", "AWAYLEN")
REJOIN_BYTES = 400
# How forkchat-server's 432 names the longest nick it takes: before 005 it
# is the only way to learn NICKLEN.
NICK_LIMIT_TEXT = re.compile(r"longer than (\d+) char")
FATAL_BEFORE_WELCOME = {"432": "erroneous nickname", "464": "password incorrect",
                        "465": "you are banned from this server"}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Where and who to connect as."""

    host: str = "127.0.0.1"
    port: int = 6667
    nick: str = "guest"
    rooms: tuple[str, ...] = ("#lobby",)
    tls: bool = False
    ca_file: str | None = None
    insecure: bool = False
    password: str | None = None
    username: str = "forkchat"
    realname: str = "forkchat client"

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def alternative_nick(base: str, attempt: int) -> str:
    """The nick to try after `attempt` collisions: bob_, bob2, bob3 ..."""
    return base + "_" if attempt == 1 else f"{base}{attempt}"


class Connection:
    """An IRC client session; see the module docstring for its life cycle."""

    def __init__(self, sel: selectors.BaseSelector, settings: Settings,
                 on_event: Callable[[events.UiEvent], None],
                 give_up_s: float | None = None, resend_unconfirmed: bool = False,
                 confirm_typed: bool = False) -> None:
        self.settings = settings
        self.nick = settings.nick
        # Rooms to be in (casefolded -> name): rejoined after every reconnect.
        self.rooms: dict[str, str] = {ircmsg.casefold(room): room for room in settings.rooms}
        # Their keys (casefolded room -> key), given with JOIN after a reconnect.
        self.keys: dict[str, str] = {}
        self._offered_keys: dict[str, str] = {}   # sent with a JOIN not yet confirmed
        self._rejoining: set[str] = set()          # rejoins not yet answered
        self._param_modes = dict(DEFAULT_PARAM_MODES)
        # TOPICLEN, KICKLEN, AWAYLEN from 005: /topic, /kick, /away cut to them.
        self.lengths: dict[str, int] = {}
        self.state = "idle"
        self.fatal = ""
        self.closed = False
        self.registered_once = False
        self.server_name = ""
        self.retry_at = 0.0     # time.monotonic() of the next try, while "waiting"
        self._on_event = on_event
        self._give_up_s = give_up_s
        tls = transport.tls_context(settings.ca_file, settings.insecure) if settings.tls else None
        self._link = transport.Link(sel, settings.host, settings.port, tls, self._start_register,
                                    self._handle_raw, self._lost)
        self._queue: collections.deque[tuple[str, bool]] = collections.deque()
        self._resend = resend_unconfirmed
        # Lines kept until a barrier's PONG confirms them (either mode), and
        # whether the connection queues those barriers itself.
        self._confirm = confirm_typed
        self._tracking = resend_unconfirmed or confirm_typed
        self._unconfirmed: list[str] = []
        self._tokens = float(SEND_BURST)
        self._token_time = time.monotonic()
        self._deadlines: dict[str, float] = {}
        self._attempt = 0
        self._nick_try = 0
        # The nick the user chose (-n, then /nick): tried first on every
        # reconnect, and taken back when its holder leaves (see _regain).
        self._wanted_nick = settings.nick
        self._nick_base = settings.nick     # what the suffixes go on, shortened if too long
        self._regaining = False
        self._pongs: dict[str, Callable[[], None]] = {}
        self._flush_count = 0
        self._lost_since: float | None = None
        self._quitting = False        # the goodbye is written: a close ends the session
        self._quit_queued = False     # a raw QUIT waits in the queue: accept no more lines
        self._quit_written = False    # QUIT is out: what is still queued stays (`unsent`)
        self._error_reason = ""
        # The away message the server last confirmed (306), set again after a
        # reconnect; and the one of our last AWAY, until its answer comes.
        self.away = ""
        self._away_asked = ""
        # LIST/WHO lines written and not yet answered: (command, when written).
        self._asked: collections.deque[tuple[str, float]] = collections.deque()

    # ---- public API used by the front ends ---------------------------------

    def start(self) -> None:
        """Begin the first connection attempt."""
        self._open()

    def send(self, line: str) -> None:
        """Queue one raw IRC line (sent paced, once registered).

        A QUIT of the user's own (`/raw QUIT :bye`) means leaving, as /quit
        does: the server's close that follows ends the session instead of
        starting a reconnect.  The line itself still goes out as typed.
        """
        line = ircmsg.clean(line)
        if self.quitting:
            return              # leaving: nothing more goes out
        command = _command(line)
        if command == "QUIT":
            self._quit_by_hand(line)
            return
        if command == "NICK":
            # A 433 from now on answers the user's own /nick and is shown,
            # even if our try to take the wanted nick back got no 433.
            self._regaining = False
        self._note_join_keys(line)
        if command == "AWAY":
            self._away_asked = _away_text(line)
        self._queue.append((line, True))
        self._pump()
        self._confirm_typed()

    def _confirm_typed(self) -> None:
        """`confirm_typed`: a flush barrier behind the user's lines not yet
        confirmed, unless one is on its way (its PONG calls this again for
        the lines behind it).  A line written into a connection already dead
        is then known as unconfirmed, and sent again after the reconnect:
        without it the full-screen interface lost such lines silently."""
        if self._confirm and not self._pongs and (self.unsent or self.unconfirmed):
            self.flush(self._confirm_typed)

    def flush(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the server has processed every queued line.

        A PING goes behind the queued lines; the server answers in order, so
        its PONG proves the lines before it reached the server.
        """
        self._flush_count += 1
        token = f"{FLUSH_TOKEN}{self._flush_count}"
        self._pongs[token] = callback
        self.send(ircmsg.build("PING", token))

    def quit(self, reason: str = "") -> None:
        """Say goodbye and close; `closed` turns true when done."""
        self._quitting = True
        if self.state == "ready":
            self._send_now(ircmsg.build("QUIT", reason or "Leaving"))
            self._quit_written = True
            self._deadlines["quit"] = time.monotonic() + QUIT_TIMEOUT_S
        else:
            self._close()
            self.closed = True

    def close_now(self, reason: str = "") -> None:
        """End at once (a second SIGTERM): the QUIT if it is not out yet and
        the socket takes it without waiting, then close, dropping the rest."""
        if self.state == "ready" and not self._quitting:
            self._send_now(ircmsg.build("QUIT", reason or "Leaving"))
        self._quitting = True
        self._close()
        self._deadlines.clear()
        self.closed, self.state = True, "closed"

    def _quit_by_hand(self, line: str) -> None:
        """A raw QUIT: queued behind the lines before it, nothing after it.

        Not registered (waiting to reconnect): there is no one to tell, so
        the session ends at once, as /quit does then.  In line mode
        (`resend_unconfirmed`), whose /quit first makes sure every line got
        through, the QUIT waits behind the lines before it instead, across
        a reconnect if need be: leaving starts when it is written.
        """
        self._quit_queued = True
        if not self._resend:
            self._quitting = True
        if self.state != "ready" and not (self._resend and self._queue):
            self.quit()
            return
        self._queue.append((line, False))
        self._pump()

    @property
    def quitting(self) -> bool:
        """The user asked to leave (/quit or a raw QUIT): nothing more goes out."""
        return self._quitting or self._quit_queued

    @property
    def leaving(self) -> bool:
        """The QUIT is written (or the session is closing): only the close is awaited."""
        return self._quitting

    @property
    def unsent(self) -> int:
        """Lines of the user's still in the paced queue (after /quit: never
        sent); line mode's flush barriers are not the user's and not counted."""
        return sum(1 for line, ours in self._queue if ours and not _is_flush(line))

    @property
    def unconfirmed(self) -> int:
        """Lines of the user's written but not yet confirmed by a barrier's PONG."""
        return sum(1 for line in self._unconfirmed if not _is_flush(line))

    @property
    def flush_pending(self) -> bool:
        """A flush barrier is on its way (so another one adds nothing)."""
        return bool(self._pongs)

    def awaited(self) -> tuple[str, float] | None:
        """The oldest LIST or WHO still unanswered and for how many seconds,
        or None: a busy server can hold one (and what follows it) 30 s."""
        if not self._asked or self.state != "ready":
            return None
        command, since = self._asked[0]
        return command, time.monotonic() - since

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def retry_in(self) -> float:
        """Seconds until the next try, for "reconnecting in N s".  A span,
        so the monotonic clock's: a wall clock set back an hour while we
        waited showed "reconnecting in 3601 s" (and one set forward, 0 s)
        for a try a second away."""
        return max(0.0, self.retry_at - time.monotonic())

    def next_timeout(self) -> float | None:
        """Seconds until the next timer, for `selector.select()`."""
        if not self._deadlines:
            return None
        return max(0.0, min(self._deadlines.values()) - time.monotonic())

    def tick(self) -> None:
        """Run the timers that are due."""
        now = time.monotonic()
        for name, when in sorted(self._deadlines.items(), key=lambda item: item[1]):
            if when <= now and self._deadlines.get(name) == when:
                del self._deadlines[name]
                TIMERS[name](self)

    # ---- connecting ----------------------------------------------------------

    def _status(self, text: str, code: str) -> None:
        """Tell the front end about the link itself; code is a STATUS_* word.

        Cleaned as all remote text is: the nicks it names may be the
        server's word (001, NICK), and line mode prints it on stderr as it
        is, an ESC or a bidi override and all."""
        self._on_event(events.UiEvent("status", time.time(), text=events.sanitize(text),
                                      other=code))

    def _open(self) -> None:
        """Start a connection attempt; the Link calls back when it is made or not."""
        self.state = "connecting"
        self._deadlines["connect"] = time.monotonic() + CONNECT_TIMEOUT_S
        self._link.open()

    def _start_register(self) -> None:
        """Connected: send PASS/NICK/USER; the 001 reply completes registration."""
        self.state = "registering"
        self.nick = self._nick_base = self._wanted_nick
        self._nick_try = 0
        self._regaining = False
        self.lengths = {}       # this server's own come with its 005, if it names them
        if self.settings.password:
            self._send_now(ircmsg.build("PASS", self.settings.password))
        self._send_now(ircmsg.build("NICK", self.nick))
        self._send_now(ircmsg.build("USER", self.settings.username, "0", "*",
                                    self.settings.realname))
        self._deadlines["idle"] = time.monotonic() + IDLE_PING_S

    # ---- losing it -------------------------------------------------------------

    def _close(self) -> None:
        self._link.close()

    def _fail(self, reason: str) -> None:
        """Give up for good: the front end exits with `fatal` as its message."""
        self._close()
        self._deadlines.clear()
        self.fatal = reason
        self.closed = True
        self.state = "closed"

    def _lost(self, reason: str) -> None:
        """The connection is gone: stop, give up, or schedule a retry."""
        reason = self._error_reason or reason
        self._error_reason = ""
        self._close()
        self._asked.clear()     # a new connection answers none of them
        for name in ("connect", "idle", "pong", "send"):
            self._deadlines.pop(name, None)
        if self._quitting:
            self.closed, self.state = True, "closed"
            return
        if not self.registered_once:
            self._fail(reason)
            return
        now = time.monotonic()
        self._lost_since = self._lost_since or now
        if self._give_up_s is not None and now - self._lost_since > self._give_up_s:
            self._fail(f"gave up reconnecting to {self.settings.address}: {reason}")
            return
        again = self.unconfirmed
        self._queue.extendleft(reversed([(line, True) for line in self._unconfirmed]))
        self._unconfirmed.clear()
        delay = RECONNECT_DELAYS_S[min(self._attempt, len(RECONNECT_DELAYS_S) - 1)]
        self._attempt += 1
        self.state = "waiting"
        self.retry_at = now + delay
        self._deadlines["retry"] = now + delay
        self._status(f"Disconnected: {reason}; reconnecting in {delay:.0f} s"
                     f"{resent_note(again)}", STATUS_DISCONNECTED)

    # ---- reading -----------------------------------------------------------------

    def _handle_raw(self, raw: bytes) -> None:
        """One line from the server: decode (UTF-8, else Latin-1 as old servers
        send), parse, update the session, hand the events to the front end."""
        self._deadlines["idle"] = time.monotonic() + IDLE_PING_S
        self._deadlines.pop("pong", None)
        try:
            msg = ircmsg.parse(ircmsg.decode(raw))
        except ValueError:
            return
        if not events.well_formed(msg):
            return
        if self._asked and _answers(msg, self._asked[0][0]):
            self._asked.popleft()
        me = self.nick
        handler = INTERNAL.get(msg.command)
        if handler is not None and handler(self, msg):
            return
        for event in events.translate(msg, me):
            self._on_event(event)

    # ---- internal handlers: return True to hide the message from the UI ------

    def _on_ping(self, msg: ircmsg.Message) -> bool:
        self._send_now(ircmsg.build("PONG", msg.param(0, "forkchat")))
        return True

    def _on_pong(self, msg: ircmsg.Message) -> bool:
        """A flush barrier came back: everything before its PING has arrived."""
        token = msg.params[-1] if msg.params else ""
        callback = self._pongs.pop(token, None)
        ping = ircmsg.build("PING", token)
        if ping in self._unconfirmed:
            del self._unconfirmed[:self._unconfirmed.index(ping) + 1]
        if callback is not None:
            callback()
            self._confirm_typed()   # a barrier of another's: ours wait for one too
        return True

    def _on_welcome(self, msg: ircmsg.Message) -> bool:
        """001: registered; rejoin rooms ahead of anything queued meanwhile.

        Once: another 001 on the same connection (an odd server's) is shown
        and no more.  Each queued the rejoin again, and a stream of them
        grew the queue without end, what the user typed waiting behind it."""
        if self.state == "ready":
            return False
        # bob_ after a collision: bob stays wanted.  A 001 with no nick (an
        # odd server's `001 :Welcome to IRC`) leaves ours: taken as the
        # nick, its text made our own JOINs and talk read as someone else's.
        if len(msg.params) >= 2 and ircmsg.can_be_nick(msg.params[0]):
            self.nick = msg.params[0]
        self.server_name = msg.prefix
        self.state = "ready"
        self._deadlines.pop("connect", None)
        self._attempt = 0
        self._lost_since = None
        self._rejoining = set(self.rooms)
        joins = join_lines(list(self.rooms.values()), self.keys)
        if self.away:   # a new server knows us as back: say it again, as irssi does
            joins.append(ircmsg.build("AWAY", self.away))
        if joins:
            self._queue.extendleft(reversed([(line, False) for line in joins]))
        self.registered_once = True
        self._status(f"Connected to {self.settings.address} as {self.nick}"
                     f"{UNCHECKED if self.settings.tls and self.settings.insecure else ''}",
                     STATUS_CONNECTED)
        self._pump()
        return False

    def _note_join_keys(self, line: str) -> None:
        """Our own `JOIN #a,#b keya,keyb`: keys to keep once the server lets us in."""
        try:
            msg = ircmsg.parse(line)
        except ValueError:
            return
        if msg.command != "JOIN" or len(msg.params) < 2:
            return
        for room, key in zip(msg.param(0).split(","), msg.param(1).split(",")):
            if room and key:
                self._offered_keys[ircmsg.casefold(room)] = key

    def _on_nick_taken(self, msg: ircmsg.Message) -> bool:
        """433 while registering (or 436, a collision, or 437, a nick held
        back after a netsplit): try bob_, bob2, ... instead of a dead end.

        Once registered, a 433 is the answer to a /nick, shown as it is, or
        to our own try to take the wanted nick back, which someone else was
        quicker to take: that one is not worth a word.
        """
        if self.state != "registering":
            return self._regain_refused(msg)
        self._nick_try += 1
        taken, self.nick = self.nick, alternative_nick(self._nick_base, self._nick_try)
        self._status(f"Nickname {taken} is already in use, trying {self.nick}",
                     STATUS_NICK_TAKEN)
        self._send_now(ircmsg.build("NICK", self.nick))
        return True

    def _regain_refused(self, msg: ircmsg.Message) -> bool:
        """Whether `msg` (a 433, or a 435: a ban in one of our rooms keeps
        our nick) answers our own try to take the wanted nick back, not a
        /nick of the user's: then it is not worth a word, and not a line of
        the user's that failed."""
        regaining, self._regaining = self._regaining, False
        return regaining and ircmsg.casefold(msg.param(1)) == ircmsg.casefold(self._wanted_nick)

    def _on_fatal_numeric(self, msg: ircmsg.Message) -> bool:
        if self.state != "registering":
            return False
        if msg.command == "432" and (self._nick_try or self.registered_once):
            refused, nick = self.nick, self._shorter_nick(msg)
            # A bare `432` (an odd server's) has no reason: msg.params[-1]
            # raised IndexError, a traceback that ended the client.
            reason = events.sanitize(msg.params[-1]) if len(msg.params) > 1 else ""
            if nick:
                self._status(f"Nickname {refused} refused by the server"
                             f"{f' ({reason})' if reason else ''}, trying {nick}",
                             STATUS_NICK_TAKEN)
                self.nick = nick
                self._send_now(ircmsg.build("NICK", nick))
                return True
        reason = f"registration refused by {self.settings.address}: {self._refusal(msg)}"
        if msg.command != "432" and self.registered_once and self._give_up_s is None:
            # A password or a ban that a restarted server now asks: the
            # full-screen interface keeps trying, as for a lost connection,
            # where it ended, scrollback and all.  Line mode (which gives up)
            # still ends at once, and so does a nick with nothing left to cut.
            self._lost(reason)
        else:
            self._fail(reason)
        return True

    def _shorter_nick(self, msg: ircmsg.Message) -> str:
        """The nick to try after a 432 for ours: cut to the length the
        server names (forkchat says `longer than 9 characters`), else one
        character shorter; '' when nothing shorter is left to try.

        With a suffix (bob_, bob2 after a 433) the base is cut so the suffix
        fits.  Without one it is the wanted nick itself, refused at a
        reconnect: a server restarted with a lower NICKLEN ended the client
        there, though the nick had been fine and nothing was typed wrong.
        """
        limit = _nick_limit(msg.params[-1]) if len(msg.params) > 2 else None
        if limit is None or limit >= len(self.nick):
            limit = len(self.nick) - 1
        suffix = alternative_nick("", self._nick_try) if self._nick_try else ""
        if limit - len(suffix) < 1:
            return ""
        self._nick_base = self._nick_base[:limit - len(suffix)]
        return self._nick_base + suffix

    def _refusal(self, msg: ircmsg.Message) -> str:
        """Why registration failed, in our words, then the server's when they
        add something; a password refused when we gave none asks for one."""
        reason = FATAL_BEFORE_WELCOME[msg.command]
        if msg.command == "464" and not self.settings.password:
            return "the server wants a password (give it with --password-file)"
        detail = events.sanitize(msg.params[-1]) if len(msg.params) > 1 else ""
        if not detail or detail.casefold().startswith(reason.casefold()):   # same words, or more
            return reason + detail[len(reason):]
        return f"{reason} ({detail})"

    def _on_error(self, msg: ircmsg.Message) -> bool:
        """ERROR precedes the close: its text becomes the reason _lost() reports
        (cleaned as all remote text is: line mode prints it on a terminal)."""
        self._error_reason = "server said: " + events.sanitize(msg.param(0))
        return True

    def _on_nick(self, msg: ircmsg.Message) -> bool:
        if ircmsg.casefold(msg.nick) == ircmsg.casefold(self.nick):
            self.nick = self._wanted_nick = msg.param(0)
            self._regaining = False
        elif ircmsg.casefold(msg.param(0)) != ircmsg.casefold(msg.nick):
            self._regain(msg.nick)
        return False

    def _on_quit(self, msg: ircmsg.Message) -> bool:
        self._regain(msg.nick)
        return False

    def _regain(self, gone: str) -> None:
        """The holder of the nick we wanted left it (QUIT, or NICK away, in
        a room we share): ask for it once.  No timer and no retry: one NICK
        per departure seen, and a 433 if someone is quicker stays quiet."""
        wanted = self._wanted_nick
        if (self.state == "ready" and ircmsg.casefold(gone) == ircmsg.casefold(wanted)
                and ircmsg.casefold(self.nick) != ircmsg.casefold(wanted)):
            self._regaining = True
            self._send_now(ircmsg.build("NICK", wanted))

    def _on_join(self, msg: ircmsg.Message) -> bool:
        if ircmsg.casefold(msg.nick) == ircmsg.casefold(self.nick):
            room = ircmsg.casefold(msg.param(0))
            self.rooms[room] = msg.param(0)
            self._rejoining.discard(room)
            key = self._offered_keys.pop(room, "")
            if key:
                self.keys[room] = key
        return False

    def _forget_room(self, room: str) -> None:
        folded = ircmsg.casefold(room)
        self.rooms.pop(folded, None)
        self.keys.pop(folded, None)

    def _on_part(self, msg: ircmsg.Message) -> bool:
        if ircmsg.casefold(msg.nick) == ircmsg.casefold(self.nick):
            self._forget_room(msg.param(0))
        return False

    def _on_kick(self, msg: ircmsg.Message) -> bool:
        if ircmsg.casefold(msg.param(1)) == ircmsg.casefold(self.nick):
            self._forget_room(msg.param(0))
        return False

    def _on_join_refused(self, msg: ircmsg.Message) -> bool:
        """The key we offered did not open the room: nothing to remember.

        A refused rejoin (the key changed, a ban, +i while we were away) means
        we are no longer in the room: forget it rather than retry it after
        every reconnect; the error is shown as it is.
        """
        room = ircmsg.casefold(msg.param(1))
        self._offered_keys.pop(room, None)
        if room in self._rejoining:
            self._rejoining.discard(room)
            self._forget_room(room)
        return False

    def _on_mode(self, msg: ircmsg.Message) -> bool:
        """Follow +k key / -k in a room we are in, for the next rejoin."""
        room = ircmsg.casefold(msg.param(0))
        if room not in self.rooms:
            return False
        always = self._param_modes["always"] + self._param_modes["status"]
        when_set = self._param_modes["when_set"]
        args = list(msg.params[2:])
        adding = True
        for letter in msg.param(1):
            if letter in "+-":
                adding = letter == "+"
                continue
            takes = letter in always or (adding and letter in when_set)
            arg = args.pop(0) if takes and args else ""
            if letter == "k" and adding and arg:
                self.keys[room] = arg
            elif letter == "k" and not adding:
                self.keys.pop(room, None)
        return False

    def _on_away_set(self, msg: ircmsg.Message) -> bool:
        """306: marked away, with the text of our last AWAY."""
        self.away = self._away_asked or self.away
        return False

    def _on_back(self, msg: ircmsg.Message) -> bool:
        """305: no longer away; nothing to set again after a reconnect."""
        self.away = ""
        return False

    def _on_isupport(self, msg: ircmsg.Message) -> bool:
        """005: which channel modes take a parameter on this server, and
        how much of a topic, kick reason or away message it keeps (the
        commands cut to that and say so, where the server cut silently)."""
        for token in msg.params[1:-1]:
            name, _, value = token.partition("=")
            if name == "CHANMODES" and value.count(",") >= 2:
                lists = value.split(",")
                self._param_modes["always"] = lists[0] + lists[1]
                self._param_modes["when_set"] = lists[2]
            elif name == "PREFIX" and value.startswith("("):
                self._param_modes["status"] = value[1:].partition(")")[0]
            elif name in LENGTH_TOKENS and value.isdigit() and int(value) > 0:
                self.lengths[name] = int(value)
        return False

    def _on_privmsg(self, msg: ircmsg.Message) -> bool:
        """Answer CTCP VERSION and PING as every client does; show the rest.

        The answers are not the user's lines: they are neither counted as
        unsent nor sent again after a reconnect, and while a few wait in the
        paced queue more requests get none, so a flood of them cannot hold
        back what the user types behind a minute of answers.
        """
        text = msg.param(1)
        if not _answerable(msg.nick):
            return False
        if text.startswith("\x01VERSION") or text.startswith("\x01PING"):
            body = text.strip("\x01")
            if body.startswith("VERSION"):
                body = "VERSION " + VERSION_TEXT
            if not self.quitting and self._ctcp_answers_queued() < CTCP_ANSWERS_QUEUED:
                answer = ircmsg.clean(ircmsg.build("NOTICE", msg.nick, f"\x01{body}\x01"))
                self._queue.append((answer, False))
                self._pump()
        return False

    def _ctcp_answers_queued(self) -> int:
        return sum(1 for line, ours in self._queue
                   if not ours and line.startswith("NOTICE ") and "\x01" in line)

    # ---- writing -----------------------------------------------------------------

    def _pump(self) -> None:
        """Move queued lines to the socket as the token bucket allows; none
        after a QUIT (the server drops them: they count as unsent).

        A write can lose the link (a reset, a server not reading): the
        lines behind it stay queued, for the reconnect.  Taken out into the
        dead link, they counted as sent, and a later barrier's PONG as
        confirmed: lost without a word."""
        if self.state != "ready" or self._quit_written:
            return
        now = time.monotonic()
        self._tokens = min(SEND_BURST, self._tokens + (now - self._token_time) / SEND_INTERVAL_S)
        self._token_time = now
        while self._queue and self._tokens >= 1:
            self._tokens -= 1
            line, ours = self._queue.popleft()
            if ours and self._tracking:
                self._unconfirmed.append(line)
            self._send_now(line)
            command = _command(line)
            if self._quit_queued and command == "QUIT":
                self._quitting = True
                self._queue.clear()     # the server closes now: wait for that
                self._deadlines["quit"] = now + QUIT_TIMEOUT_S
            if self.state != "ready":
                return      # lost in the write: the rest waits for the reconnect
            if command in ANSWER_ENDS:
                self._asked.append((command, now))
        if self._queue:
            self._deadlines["send"] = now + (1 - self._tokens) * SEND_INTERVAL_S

    def _send_now(self, line: str) -> None:
        self._link.write(line)

    # ---- timers ------------------------------------------------------------------

    def _timer_connect(self) -> None:
        """No 001 in time: a silent network, or a port that is not IRC (the
        tutorial port says `NICK` and waits), which wants another remedy."""
        if self.state == "registering":
            self._lost(f"{self.settings.address} accepted the connection but sent no IRC"
                       f" welcome in {CONNECT_TIMEOUT_S:.0f} s (is it an IRC port?)")
        else:
            self._lost(f"timed out connecting to {self.settings.address}")

    def _timer_idle(self) -> None:
        self._send_now(ircmsg.build("PING", "forkchat-keepalive"))
        self._deadlines["pong"] = time.monotonic() + PING_TIMEOUT_S

    def _timer_pong(self) -> None:
        self._lost("no reply from the server (ping timeout)")

    def _timer_quit(self) -> None:
        self._close()
        self.closed, self.state = True, "closed"


def resent_note(count: int) -> str:
    """Said with the loss: how many lines the server never confirmed, which
    go out again after the reconnect (so they may arrive twice)."""
    if not count:
        return ""
    lines = "1 line" if count == 1 else f"{count} lines"
    return f"; {lines} not confirmed by the server will be sent again"


def join_lines(rooms: list[str], keys: dict[str, str]) -> list[str]:
    """The JOIN lines of a rejoin: the rooms with a key (casefolded room ->
    key) in lines of their own, keys in the same order, then the others;
    at most REJOIN_ROOMS rooms and about REJOIN_BYTES of names a line."""
    keyed = [(room, keys[ircmsg.casefold(room)]) for room in rooms
             if ircmsg.casefold(room) in keys]
    plain = [(room, "") for room in rooms if ircmsg.casefold(room) not in keys]
    lines = []
    for batch in _batches(keyed) + _batches(plain):
        names = ",".join(room for room, _ in batch)
        given = [key for _, key in batch if key]
        lines.append(ircmsg.build("JOIN", names, ",".join(given)) if given
                     else ircmsg.build("JOIN", names))
    return lines


def _batches(pairs: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """`pairs` cut into runs of at most REJOIN_ROOMS and about REJOIN_BYTES."""
    batches: list[list[tuple[str, str]]] = []
    size = 0
    for room, key in pairs:
        cost = len(room.encode()) + len(key.encode()) + 2
        if not batches or len(batches[-1]) >= REJOIN_ROOMS or size + cost > REJOIN_BYTES:
            batches.append([])
            size = 0
        batches[-1].append((room, key))
        size += cost
    return batches


def _command(line: str) -> str:
    """The command of a raw line we send, upper-cased ('' when unparsable)."""
    try:
        return ircmsg.parse(line).command.upper()
    except ValueError:
        return ""


def _answers(msg: ircmsg.Message, command: str) -> bool:
    """Whether `msg` ends the answer to our LIST or WHO: its end numeric, or
    an error naming it (`421 bob LIST :Unknown command`), after which no end
    comes.  A 263 is not the end: forkchat sends the end numeric after it."""
    if msg.command == ANSWER_ENDS[command]:
        return True
    return (msg.command.isdigit() and msg.command[0] in "45"
            and msg.param(1).upper() == command)


def _answerable(nick: str) -> bool:
    """Whether a CTCP request's sender can be the target of our NOTICE: a
    line with no prefix, or one like `:!u@h`, has no nick, and building
    the answer raised ValueError, a traceback that ended the client; so
    did a NUL in the nick, which the line's cleaning makes a space."""
    word = ircmsg.clean(nick)
    return bool(word) and " " not in word and not word.startswith(":")


def _nick_limit(text: str) -> int | None:
    """The length a 432's text names (`... longer than 9 characters`), if any."""
    found = NICK_LIMIT_TEXT.search(text)
    return int(found.group(1)) if found else None


def _away_text(line: str) -> str:
    """The message of an AWAY line we send ('' for back)."""
    try:
        return ircmsg.parse(line).param(0)
    except ValueError:
        return ""


def _is_flush(line: str) -> bool:
    """A flush barrier's PING (see `flush`)."""
    return line.startswith("PING " + FLUSH_TOKEN)


INTERNAL: dict[str, Callable[[Connection, ircmsg.Message], bool]] = {
    "PING": Connection._on_ping, "PONG": Connection._on_pong,
    "001": Connection._on_welcome, "433": Connection._on_nick_taken,
    "436": Connection._on_nick_taken, "437": Connection._on_nick_taken,
    "435": Connection._regain_refused,
    "432": Connection._on_fatal_numeric,
    "464": Connection._on_fatal_numeric, "465": Connection._on_fatal_numeric,
    "ERROR": Connection._on_error, "NICK": Connection._on_nick,
    "QUIT": Connection._on_quit,
    "JOIN": Connection._on_join, "PART": Connection._on_part,
    "KICK": Connection._on_kick, "PRIVMSG": Connection._on_privmsg,
    "MODE": Connection._on_mode, "005": Connection._on_isupport,
    "305": Connection._on_back, "306": Connection._on_away_set,
    **{code: Connection._on_join_refused for code in JOIN_REFUSALS},
}

TIMERS: dict[str, Callable[[Connection], None]] = {
    "connect": Connection._timer_connect, "retry": Connection._open,
    "idle": Connection._timer_idle, "pong": Connection._timer_pong,
    "quit": Connection._timer_quit, "send": Connection._pump,
}
