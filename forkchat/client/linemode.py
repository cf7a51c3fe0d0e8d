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

Exit status: 0 when every line was delivered; 1 when the connection or the
registration failed, the server went away for good, or the server rejected
a line (no such room, cannot send, a wrong OPER password, no privilege);
130 on Ctrl+C.  The reading of stdin starts after registration, so nothing
typed early is lost or reordered.
"""

from __future__ import annotations

import os
import selectors
import sys
from typing import TextIO

from forkchat.client import connection, events, ircmsg, slash

GIVE_UP_S = 120.0
READ_BYTES = 65536
# A flush barrier (PING) goes behind every this many lines queued, so that a
# lost connection resends at most these (and the few in flight), not every
# line since the start of a big read (`< file` is read in one go).
BARRIER_LINES = 8
# Replies that mean "a line we sent did not get where it was meant to go", or
# was refused for want of a privilege (OPER: a wrong password, the back-off
# wait, no O-line for the host; an operator's or a room operator's command),
# so a script's exit status tells.
DELIVERY_ERRORS = frozenset(["401", "403", "404", "405", "441", "442", "464", "471",
                             "473", "474", "475", "476", "477", "481", "482", "491"])
HIDDEN_KINDS = frozenset(["server", "ctcp"])


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
        self._listed: set[str] = set()   # rooms whose NAMES or WHO rows came, until the end
        self._leaving: set[str] = set()   # rooms we sent PART for, echo not yet seen

    def run(self) -> int:
        self.conn.start()
        try:
            while not self.conn.closed:
                self._watch_stdin()
                polling = self._reading and self._stdin_is_file
                for key, mask in self.sel.select(0.0 if polling else self.conn.next_timeout()):
                    key.data(mask)
                if polling:
                    self._on_stdin(selectors.EVENT_READ)
                self.conn.tick()
        except KeyboardInterrupt:
            self.conn.quit("Interrupted")
            return 130
        if self.conn.fatal:
            self._complain(self.conn.fatal)
            return 1
        if self.failures:
            self._complain(f"{self.failures} line(s) refused or not delivered")
            return 1
        return 0

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
        data = os.read(self._stdin_fd, READ_BYTES)
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
            result = slash.interpret(text, slash.Context(self.current, self.conn.nick))
        except slash.SlashError as exc:
            self.failures += 1
            self._complain(str(exc))
            return
        for line in result.lines:
            self.conn.send(line)
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
        outside), so it prints."""
        row = not event.kind.endswith("_end")
        key = event.kind.removesuffix("_end")
        if key == "names":
            key += " " + ircmsg.casefold(event.buffer)
        if row:
            self._listed.add(key)
            return False
        shown = key in self._listed
        self._listed.discard(key)
        return shown

    def _follow_own(self, event: events.UiEvent) -> None:
        """Leaving the current room makes the next joined room current."""
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
        try:
            self._out.write(text + "\n")
            self._out.flush()
        except BrokenPipeError:
            self._out = open(os.devnull, "w")  # reader went away (| head): go on quietly

    def _complain(self, text: str) -> None:
        """A line on stderr; a reader of it that went away (`2>&1 | head -1`,
        a dead logger) must not end the run, only this message."""
        try:
            self._err.write(f"forkchat-client: {text}\n")
            self._err.flush()
        except BrokenPipeError:
            self._err = open(os.devnull, "w")


def _confirmed() -> None:
    """Nothing to do: the barrier's PONG already cleared the resend list."""


# Rows of a NAMES or WHO list, and their ends.
LIST_KINDS = frozenset(["names", "names_end", "who", "who_end"])

LOCAL_ACTIONS = {
    "joining": LineMode._set_current_joined,
    "parting": LineMode._parting,
    "close": LineMode._closing,
    "query": LineMode._set_current,
    "switch": LineMode._switch,
    "quit": LineMode._quit,
    "help": LineMode._help,
}


def run(settings: connection.Settings) -> int:
    """Entry point used by app.main()."""
    return LineMode(settings).run()
