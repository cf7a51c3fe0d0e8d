"""Line mode: stdin lines go to the current room, events come out on stdout.

For pipes, cron jobs and scripts:

    echo "backup done" | forkchat-client -n cron -r '#ops' chat.example.org

Each stdin line is sent to the current room (the first `-r` room) or, when
it starts with `/`, run as a command (`/join #other` also makes #other the
current room; `/part` of the current room makes the first room we are still
in current at once, not at the server's echo, which comes after the lines
piped behind it are read).  Each event that arrives is printed as one line
on stdout (`events.line_text`); link status and errors go to stderr.  At EOF the lines
still queued are sent, a PING is sent behind them, and only when its PONG
arrives (proof the server has processed every line) does the client QUIT.

SIGTERM, SIGHUP and SIGINT end it the same way, but within DRAIN_S: what
is still queued then is dropped and counted; a second signal ends at once.

Exit status: 0 when every line was delivered; 1 when the connection or the
registration failed, the server went away for good, the server rejected
a line (no such room, cannot send, a wrong OPER password, no privilege),
a signal left lines unsent, or stdout could not be written; 130 on Ctrl+C
once every line was sent.  The reading of stdin starts after registration,
so nothing typed early is lost or reordered.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import sys
import time
from typing import TextIO

from forkchat.client import connection, events, ircmsg, slash, wakeup

GIVE_UP_S = 120.0
READ_BYTES = 65536
# A flush barrier (PING) goes behind every this many lines queued, so that a
# lost connection resends at most these (and the few in flight), not every
# line since the start of a big read (`< file` is read in one go).
BARRIER_LINES = 8
# Replies that mean "a line we sent did not get where it was meant to go", or
# was refused for want of a privilege (OPER: a wrong password, the back-off
# wait, no O-line for the host; an operator's or a room operator's command),
# or a /nick refused (erroneous, in use, banned in a room: the lines after
# it went out under the old name), or a /list or /who the server declined
# for now (263: a busy forkchat-server's scan queue; its end numeric
# follows, and read as an empty answer), so a script's exit status tells.
# The connection hides the 433 or 435 that answers its own quiet try to
# take the wanted nick back.
DELIVERY_ERRORS = frozenset(["263", "401", "403", "404", "405", "432", "433", "435", "436",
                             "437", "441", "442", "464", "471", "473", "474", "475", "476",
                             "477", "481", "482", "491"])
HIDDEN_KINDS = frozenset(["server", "ctcp"])
# After SIGTERM, SIGINT or SIGHUP the lines already read get this long to go
# out (at the pace, 8 at once and then one per 0.6 s: some 16 lines) before
# the QUIT.
DRAIN_S = 5.0
# Keyed by signal number: wakeup.received() gives plain ints.
SIGNAL_REASONS: dict[int, str] = {signal.SIGTERM: "Terminated", signal.SIGHUP: "Terminated",
                                  signal.SIGINT: "Interrupted"}
SIGNAL_NAMES: dict[int, str] = {signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP",
                                signal.SIGINT: "Ctrl+C"}
# The exit status when every line got through: Ctrl+C keeps the shell's 130.
SIGNAL_STATUS: dict[int, int] = {signal.SIGINT: 130}


class LineMode:
    """The pipe front end; `run()` returns the exit status."""

    def __init__(self, settings: connection.Settings, stdin_fd: int = 0,
                 out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.sel = selectors.DefaultSelector()
        self.conn = connection.Connection(self.sel, settings, self.on_event,
                                          give_up_s=GIVE_UP_S, resend_unconfirmed=True)
        self.current = settings.rooms[0] if settings.rooms else ""
        self.failures = 0
        self._stdin_fd = stdin_fd
        self._out = out or sys.stdout
        self._err = err or sys.stderr
        self._pending = b""
        self._unbarriered = 0     # lines queued since the last flush barrier
        self._reading = False
        self._stdin_is_file = False   # a file or /dev/null: no select(), never blocks
        self._eof = False
        self._quit_reason = ""
        self._names_quiet: set[str] = set()
        # NAMES (by room) or WHO lists whose rows came, until their end; in
        # the order they began, the oldest forgotten past LISTED_MAX.
        self._listed: dict[str, None] = {}
        # A NAMES of every room sent, its end for `*` not yet come: whether
        # rows came since (None when none is awaited).
        self._every_room: bool | None = None
        self._leaving: set[str] = set()   # rooms we sent PART for, echo not yet seen
        self._signal = 0                  # the first SIGTERM/SIGINT/SIGHUP, 0 before
        self._drain_until: float | None = None   # when the queue's time after it is up
        self._dropped = 0                 # lines still queued when the client had to go
        self._output_lost = False         # stdout could not be written: the run fails

    def run(self) -> int:
        with wakeup.catching(SIGNAL_REASONS) as wake:
            self.sel.register(wake, selectors.EVENT_READ, lambda _: self._on_signal(wake))
            self.conn.start()
            self._loop()
        return self._exit_status()

    def _loop(self) -> None:
        while not self.conn.closed:
            self._watch_stdin()
            polling = self._reading and self._stdin_is_file
            for key, mask in self.sel.select(0.0 if polling else self._timeout()):
                key.data(mask)
            if polling and self._reading:       # not when a signal stopped the reading
                self._on_stdin(selectors.EVENT_READ)
            self.conn.tick()
            self._end_of_drain()

    def _exit_status(self) -> int:
        """0 when every line got through (130 after Ctrl+C), else 1 and why."""
        if self.conn.fatal:
            self._complain(self.conn.fatal)
            return 1
        if self._dropped:
            self._complain(f"{self._dropped} line(s) not sent: "
                           f"{SIGNAL_NAMES.get(self._signal, 'a signal')} came before they went out")
        if self.failures:
            self._complain(f"{self.failures} line(s) refused or not delivered")
        if self.failures or self._dropped or self._output_lost:
            return 1
        return SIGNAL_STATUS.get(self._signal, 0)

    # ---- signals ------------------------------------------------------------

    def _on_signal(self, wake: socket.socket) -> None:
        """Signals only wake the loop (see wakeup.py); act on them here."""
        for signum in wakeup.received(wake):
            if signum in SIGNAL_REASONS:
                self._signalled(signum)

    def _signalled(self, signum: int) -> None:
        """SIGTERM, SIGINT, SIGHUP: end as at end of input, but within
        DRAIN_S (`timeout 60 forkchat-client ... < file` lost the lines
        still paced in the queue, and the server saw no QUIT); the second
        one ends at once."""
        if self._signal:
            self._dropped = max(self._dropped, self.conn.unsent)
            self.conn.close_now(SIGNAL_REASONS[self._signal])
            return
        self._signal = signum
        self._drain_until = time.monotonic() + DRAIN_S
        pending, self._pending = self._pending, b""
        self._finish(pending, SIGNAL_REASONS[signum])
        if not self.conn.ready and not self.conn.unsent:
            self.conn.quit()    # connecting, nothing of ours to wait for: go now

    def _end_of_drain(self) -> None:
        """DRAIN_S after the signal: QUIT now; lines still queued are lost."""
        if (self._drain_until is None or self.conn.leaving or self.conn.closed
                or time.monotonic() < self._drain_until):
            return
        self._dropped = self.conn.unsent
        self.conn.quit(SIGNAL_REASONS[self._signal])

    def _timeout(self) -> float | None:
        """Until the next connection timer, or the end of the drain."""
        pending = self.conn.next_timeout()
        if self._drain_until is None or self.conn.leaving:
            return pending
        drain = max(0.0, self._drain_until - time.monotonic())
        return drain if pending is None else min(pending, drain)

    # ---- stdin --------------------------------------------------------------

    def _watch_stdin(self) -> None:
        """Start reading stdin once registered (early lines would race JOIN).

        `< message.txt` or `< /dev/null`: epoll refuses a regular file or
        /dev/null (EPERM); they are always readable, so the loop reads them
        each turn instead, until their EOF.
        """
        if self.conn.ready and not self._reading and not self._eof:
            try:
                self.sel.register(self._stdin_fd, selectors.EVENT_READ, self._on_stdin)
            except PermissionError:
                self._stdin_is_file = True
            self._reading = True

    def _on_stdin(self, mask: int) -> None:
        try:
            data = os.read(self._stdin_fd, READ_BYTES)
        except OSError:
            data = b""      # a terminal that hung up (EIO): the end of input
        if not data:
            self._finish(self._pending)
            return
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()
        for raw in lines:
            self._handle_line(raw)
            if self._eof:
                return
            if self._unbarriered >= BARRIER_LINES:
                self._barrier()
        if self._unbarriered and not self.conn.flush_pending:
            self._barrier()     # and one per batch: what to resend after a loss

    def _barrier(self) -> None:
        """A PING behind the lines queued so far; its PONG confirms them."""
        self._unbarriered = 0
        self.conn.flush(_confirmed)

    def _finish(self, last: bytes = b"", reason: str = "") -> None:
        """EOF or /quit: stop reading, send the rest, quit after the PONG."""
        if last:
            self._handle_line(last)
        if not self._eof:
            self._stop_reading()
            self._quit_reason = reason
            self.conn.flush(self._flushed)

    def _stop_reading(self) -> None:
        """No more stdin: at EOF, /quit, or a raw QUIT already on its way."""
        if self._reading and not self._stdin_is_file:
            self.sel.unregister(self._stdin_fd)
        self._reading = False
        self._eof = True

    def _flushed(self) -> None:
        self.conn.quit(self._quit_reason)

    def _handle_line(self, raw: bytes) -> None:
        text = ircmsg.decode(raw).rstrip("\r")
        if not text.strip():
            return
        try:
            context = slash.Context(self.current, self.conn.nick, lengths=dict(self.conn.lengths))
            result = slash.interpret(text, context)
        except slash.SlashError as exc:
            self.failures += 1
            self._complain(str(exc))
            return
        for line in result.lines:
            self.conn.send(line)
            names = ircmsg.names_asked(line)
            if names is not None and names[1] == {"*"}:     # `/raw NAMES`
                self._every_room = False
        self._unbarriered += len(result.lines)
        if self.conn.quitting:
            self._stop_reading()    # `/raw QUIT`: leaving as /quit does, with the user's line
            return
        for action in result.local:
            LOCAL_ACTIONS.get(action[0], LineMode._ignore)(self, *action[1:])

    # ---- local actions of slash commands -------------------------------------

    def _set_current(self, target: str) -> None:
        self.current = target

    def _set_current_joined(self, target: str) -> None:
        self._leaving.discard(ircmsg.casefold(target))
        self.current = target

    def _parting(self, rooms: str) -> None:
        """Leaving the current room moves on now, not at the PART echo: the
        lines piped after /part are handled before the echo arrives.  `rooms`
        may be a list (`/part #a,#b`)."""
        leaving = {ircmsg.casefold(room) for room in rooms.split(",") if room}
        self._leaving |= leaving
        if ircmsg.casefold(self.current) in leaving:
            self.current = self._next_room()

    def _closing(self, nick: str) -> None:
        """/part in a private conversation: back to a room."""
        if ircmsg.casefold(nick) == ircmsg.casefold(self.current):
            self.current = self._next_room()

    def _next_room(self) -> str:
        """The first room we are in and not leaving, '' when none."""
        return next((name for folded, name in self.conn.rooms.items()
                     if folded not in self._leaving), "")

    def _switch(self, target: str) -> None:
        if target.isdigit():
            self.failures += 1
            self._complain("/switch takes a room or nick in line mode")
        else:
            self.current = target

    def _quit(self, reason: str) -> None:
        self._finish(reason=reason)

    def _help(self, text: str) -> None:
        self._print(text)

    def _ignore(self, *args: str) -> None:
        """Echoes of our own lines: line mode prints only what arrives."""

    # ---- output -------------------------------------------------------------

    def on_event(self, event: events.UiEvent) -> None:
        if event.kind == "status":
            if event.other != connection.STATUS_CONNECTED:
                self._complain(event.text)
        elif event.kind == "error":
            if event.other in DELIVERY_ERRORS:
                self.failures += 1
            self._complain(event.text)
            self._follow_given_up(event)
        elif event.kind in ("names", "names_end") and self._quiet_names(event):
            return
        elif event.kind in LIST_KINDS and self._list_row_or_end(event):
            return
        elif event.kind not in HIDDEN_KINDS:
            self._print(events.line_text(event, self.current))
            self._follow_own(event)

    def _quiet_names(self, event: events.UiEvent) -> bool:
        """The member list that follows our own JOIN is noise in a pipe.

        It arrives between our JOIN and its 366; a later /names reply shows.
        """
        room = ircmsg.casefold(event.buffer)
        if event.kind == "names_end" and room in self._names_quiet:
            self._names_quiet.discard(room)
            return True
        return room in self._names_quiet

    def _list_row_or_end(self, event: events.UiEvent) -> bool:
        """True to hide: the end of a NAMES or WHO list that had rows.  The
        end of an empty one is the whole answer (`/names #secret` from
        outside), so it prints.  A NAMES of every room ends with one 366
        for `*`, which ends every room's list: it printed `*: End of
        /NAMES list` after the rows, and the rooms' ends stayed awaited.
        A server that ends each of its rooms with their own 366 too printed
        that `*` end after the rows, as if no room had any."""
        row = not event.kind.endswith("_end")
        key = event.kind.removesuffix("_end")
        if key == "names":
            key += " " + ircmsg.casefold(event.buffer)
        if row:
            if key.startswith("names ") and self._every_room is not None:
                self._every_room = True
            self._listed[key] = None
            if len(self._listed) > LISTED_MAX:     # 353s for room after room, no 366
                del self._listed[next(iter(self._listed))]
            return False
        answered = False
        if key == "names *":    # `/raw NAMES`: every room's rows, then one 366 for *
            ended = [name for name in self._listed if name.startswith("names ")]
            answered, self._every_room = bool(self._every_room), None
        else:
            ended = [key] if key in self._listed else []
        for name in ended:
            del self._listed[name]
        return bool(ended) or answered

    def _follow_own(self, event: events.UiEvent) -> None:
        """Leaving the current room makes the next joined room current; the
        partner of a /query who changes nick is followed, as the full-screen
        interface renames the conversation (the lines went to the old nick,
        refused 401 each)."""
        if (event.kind == "nick" and not ircmsg.is_room(self.current)
                and ircmsg.casefold(event.nick) == ircmsg.casefold(self.current)):
            self.current = event.other
        if event.kind == "join" and event.own:
            self._names_quiet.add(ircmsg.casefold(event.buffer))
        gone = (event.kind == "part" and event.own) or (event.kind == "kick" and event.own)
        if gone:
            self._leaving.discard(ircmsg.casefold(event.buffer))
        if gone and ircmsg.casefold(event.buffer) == ircmsg.casefold(self.current):
            self.current = self._next_room()

    def _follow_given_up(self, event: events.UiEvent) -> None:
        """A refused rejoin gives the room up (the connection forgets it):
        if it was the current room, the lines after go to the next one."""
        room = ircmsg.casefold(event.buffer or "")
        if room and room == ircmsg.casefold(self.current) and room not in self.conn.rooms:
            self.current = self._next_room()

    def _print(self, text: str) -> None:
        """A line on stdout.  When it cannot be written (a reader gone, as
        under `| head -1`, a full disk, a terminal hung up) the lines from
        stdin are still sent, but the run fails (status 1): it said 0 with
        every event lost."""
        try:
            self._out.write(text + "\n")
            self._out.flush()
        except OSError as exc:
            self._out = open(os.devnull, "w")
            self._output_lost = True
            self._complain(f"cannot write to standard output: {exc.strerror or exc}")

    def _complain(self, text: str) -> None:
        """A line on stderr; a reader of it that went away (`2>&1 | head -1`,
        a dead logger, a hung-up terminal) must not end the run, only this message."""
        try:
            self._err.write(f"forkchat-client: {text}\n")
            self._err.flush()
        except OSError:
            self._err = open(os.devnull, "w")


def _confirmed() -> None:
    """Nothing to do: the barrier's PONG already cleared the resend list."""


# Rows of a NAMES or WHO list, and their ends.
LIST_KINDS = frozenset(["names", "names_end", "who", "who_end"])
# Lists whose end is awaited at once, at most: a stream of 353s, each for
# another room and none ended by its 366, grew the set without end.
LISTED_MAX = 64

LOCAL_ACTIONS = {
    "joining": LineMode._set_current_joined,
    "parting": LineMode._parting,
    "close": LineMode._closing,
    "query": LineMode._set_current,
    "switch": LineMode._switch,
    "quit": LineMode._quit,
    "help": LineMode._help,
    "note": LineMode._complain,     # on stderr: stdout holds only the chat (and /help)
}


def run(settings: connection.Settings) -> int:
    """Entry point used by app.main()."""
    return LineMode(settings).run()
