"""The full-screen curses interface.

Model apart from view, as the curses examples do it: `buffers.ChatModel` holds
the buffers (status, one per room, one per private conversation) and routes
every UiEvent into them without touching curses; `Tui` owns the screen and redraws
it whole from the model after each turn of the event loop, so incoming text
can never garble the input line, which is simply drawn again from the
`LineEditor` each time.

    row 0          title: the buffer's topic
    rows 1..h-3    message pane (HH:MM, nick in a stable colour)
    row h-2        status: time, nick, server, buffer, members, activity
    row h-1        input line

One `selectors` loop, no threads: the connection's socket, stdin (keys via
get_wch in no-delay mode) and a signal wake-up socket (SIGWINCH -> resize,
SIGTERM/SIGHUP -> quit).
`_wrapper` restores the terminal on every way out, exceptions included, and
also when the terminal itself is gone (SIGHUP).
"""

from __future__ import annotations

import array
import curses
import itertools
import locale
import os
import selectors
import signal
import socket
import sys
import termios
import time
import zlib
from typing import Callable, Iterable

from forkchat.client import (buffers, connection, events, ircmsg, layout, lineedit, slash,
                             wakeup)

# A line typed after /quit or /raw QUIT, before the server closes: refused, not echoed.
LEAVING_NOT_SENT = "leaving: not sent"
NICK_COLOURS = (curses.COLOR_RED, curses.COLOR_GREEN, curses.COLOR_YELLOW,
                curses.COLOR_BLUE, curses.COLOR_MAGENTA, curses.COLOR_CYAN)


# Wrapping lives in `layout`; the tests pin its rules through this name too.
wrap = layout.wrap


def nick_colour_index(nick: str) -> int:
    """A stable colour slot per nick (crc32, not the salted hash())."""
    return zlib.crc32(ircmsg.casefold(nick).encode()) % len(NICK_COLOURS)


def line_segments(line: buffers.Line, nick_attr: Callable[[str], int],
                  dim: int, error: int, me: str = "") -> list[tuple[str, int]]:
    """How one Line looks: time, then marker/nick, then text (bold when it names me)."""
    stamp = (events.clock(line.time) + " ", dim)
    mentioned = line.kind in ("msg", "action", "notice") and _names(line, me)
    text = (line.text, curses.A_BOLD if mentioned else 0)
    if line.kind in ("msg", "own"):
        return [stamp, (f"<{line.nick}> ", nick_attr(line.nick)), text]
    if line.kind in ("action", "ownaction"):
        return [stamp, (f"* {line.nick} ", nick_attr(line.nick)), text]
    if line.kind in ("notice", "ownnotice"):
        return [stamp, (f"-{line.nick}- ", nick_attr(line.nick)), text]
    attr = error if line.kind == "error" else dim
    return [stamp, ("-!- " + line.text, attr)]


def room_state(buffer: buffers.Buffer) -> str:
    """The status line's word on a room: its member count, or that we left."""
    if not buffer.joined:
        return "not joined"
    count = len(buffer.members)
    return "1 member" if count == 1 else f"{count} members"


def input_prompt(name: str, width: int) -> str:
    """`[#room] ` before the input line, the name cut (`~`) to leave at
    least half the row to the text: a room name as wide as the terminal
    left no cell for it, and what was typed could not be seen."""
    prompt = f"[{name}] "
    if lineedit.text_width(prompt) <= width // 2:
        return prompt
    return "[" + lineedit.fit(name, max(1, width // 2 - 4)) + "~] "


def buffer_label(number: int, name: str, width: int) -> str:
    """`3:#room` in the status line, the name cut (`~`) to a quarter of the
    row: a long one pushed what changes (Act, reconnecting) off the edge."""
    label = f"{number}:{name}"
    if lineedit.text_width(label) <= width // 4:
        return label
    return lineedit.fit(label, max(len(str(number)) + 2, width // 4 - 1)) + "~"


def fit_status(parts: list[str], width: int, spare: tuple[int, ...]) -> str:
    """The status line's parts joined; on a narrow terminal the parts at the
    indexes in `spare` are left out, in that order, until the rest fits.

    Cut at the right edge instead, a narrow terminal lost what changes
    (unread rooms, "reconnecting in 30 s", "more below") before what never
    does (the clock, the server's address).
    """
    shown = list(parts)
    for index in spare:
        if lineedit.text_width(_join_status(shown)) <= width:
            break
        shown[index] = ""
    return _join_status(shown)


def fit_activity(labels: list[str], room: int) -> str:
    """`Act: 2,3*,5` in at most `room` cells: the labels that fit, then
    `+N` for the rest ('' when not even that fits).  In 30 rooms the whole
    list ran off the status line's edge, and the news after it
    (`reconnecting in 30 s`, `more below`) with it.

    Measured once, not joined again for each count tried: with a thousand
    unread buffers (private messages from as many nicks) each redraw took
    a second, and the interface crawled."""
    widths = [len("Act: ")]         # of "Act: " and the first n labels, by n
    for index, label in enumerate(labels):
        widths.append(widths[-1] + lineedit.text_width(label) + (1 if index else 0))
    for shown in range(len(labels), -1, -1):
        rest = len(labels) - shown
        more = len(f"+{rest}") + (1 if shown else 0) if rest else 0
        if widths[shown] + more <= room:
            return "Act: " + ",".join(labels[:shown] + ([f"+{rest}"] if rest else []))
    return ""


def status_with_activity(parts: list[str], labels: list[str], width: int) -> str:
    """The status line's parts and, last, the unread buffers: whole when
    they fit (the spare parts left out first), else cut to the room left."""
    activity = "Act: " + ",".join(labels) if labels else ""
    if lineedit.text_width(activity) <= width:     # else it cannot fit whole
        line = fit_status(parts + [activity], width, STATUS_SPARE)
        if lineedit.text_width(line) <= width or not labels:
            return line
    line = fit_status(parts, 0, STATUS_SPARE)     # every spare part out first
    shown = fit_activity(labels, width - lineedit.text_width(line) - 3)
    return f"{line} | {shown}" if shown else line


def _join_status(parts: list[str]) -> str:
    return " " + " | ".join(part for part in parts if part)


# The status line's parts to leave out when it does not fit: the server's
# address (index 2), then the clock (0).
STATUS_SPARE = (2, 0)


# Seconds a /list or /who goes unanswered before the status line says it
# waits: a busy forkchat-server holds one up to 30 s, and what is typed after
# it (a /join, a /nick) waits behind it, which looked like a hung client.
AWAIT_SHOWN_S = 2.0


def awaited_notice(awaited: tuple[str, float] | None) -> str:
    """`waiting for /list: 12 s`, once the answer is late; else ''."""
    if awaited is None or awaited[1] < AWAIT_SHOWN_S:
        return ""
    command, seconds = awaited
    return f"waiting for /{command.lower()}: {seconds:.0f} s"


def unsent_notice(count: int) -> str:
    """Lines shown as said but still queued (paced) when the client left:
    a pasted block then /quit went out in part, silently.  Said on leaving."""
    if not count:
        return ""
    lines = "1 line" if count == 1 else f"{count} lines"
    return f"{lines} shown as sent had not gone out yet (sending is paced): not sent"


def terminal_gone(fd: int) -> bool:
    """The terminal hung up: stdin reads as end of file, ioctls fail (EIO).

    The kernel sends SIGHUP to the session leader only; a client started
    by a shell that ignores it or does not pass it on (`sh -c`, a script,
    nohup) learns of the hang-up only here, and spun at full CPU, still
    connected, on a stdin that was readable forever.
    """
    try:
        termios.tcgetattr(fd)
    except termios.error:
        return True
    return False


class Tui:
    """The screen, the keys and the loop."""

    def __init__(self, stdscr: curses.window, settings: connection.Settings) -> None:
        self.scr = stdscr
        self.settings = settings
        self.model = buffers.ChatModel()
        self.model.me = settings.nick
        self.editor = lineedit.LineEditor()
        self.sel = selectors.DefaultSelector()
        self.conn = connection.Connection(self.sel, settings, self.on_event, confirm_typed=True)
        self.model.pending_switch.add(ircmsg.casefold(settings.rooms[0]))
        self._escape: str | None = None   # keys after an ESC, None when none pending
        self._pasting = False   # between the terminal's bracketed-paste marks
        self.scr_fd = sys.stdout.fileno()   # the terminal curses draws on
        self._colours = self._init_colours()

    # ---- loop ------------------------------------------------------------------

    def run(self) -> str:
        """Run until /quit or a fatal error; return the fatal message or ''."""
        with wakeup.catching(SIGNALS) as wake:
            self.sel.register(wake, selectors.EVENT_READ, lambda _: self._on_signal(wake))
            self.sel.register(sys.stdin.fileno(), selectors.EVENT_READ, self._on_keys)
            self.model.info(f"Connecting to {self.settings.address} ...", self.model.buffers[0])
            self.conn.start()
            self._loop()
        return self.conn.fatal

    def _loop(self) -> None:
        try:
            while not self.conn.closed:
                self.draw()
                for key, mask in self.sel.select(self._timeout()):
                    key.data(mask)
                self.conn.tick()
        except KeyboardInterrupt:
            self.conn.quit("Interrupted")

    def _timeout(self) -> float:
        """Wake at the next connection timer or the next minute (the clock)."""
        to_minute = 60.0 - time.time() % 60.0
        if self.conn.state == "waiting" or self.conn.awaited() is not None:
            to_minute = min(to_minute, 1.0)  # a countdown or wait in the status line
        pending = self.conn.next_timeout()
        return to_minute if pending is None else min(pending, to_minute)

    def on_event(self, event: events.UiEvent) -> None:
        # Our nick is the server's word (001, NICK): shown, it is cleaned as
        # all remote text is; curses passes a bidi override on raw.
        self.model.me = events.sanitize(self.conn.nick)
        self.model.apply(event)

    def _on_signal(self, wake: socket.socket) -> None:
        """Signals only wake the loop (see wakeup.py); act on them here,
        each once (a drag of the window sends many SIGWINCH)."""
        for signum in dict.fromkeys(wakeup.received(wake)):
            action = SIGNALS.get(signum)   # SIGINT comes as KeyboardInterrupt instead
            if action is not None:
                action(self)

    def _hang_up(self) -> None:
        """SIGTERM/SIGHUP: leave politely; _wrapper() restores the terminal."""
        if sys.stdin.fileno() in self.sel.get_map():
            self.sel.unregister(sys.stdin.fileno())  # a hung-up tty reads as EOF forever
        self.conn.quit("Terminated")

    def _resumed(self) -> None:
        """Back from Ctrl+Z: bash switches the terminal's paste marks off
        before `fg`, and a pasted tab completed nicks again.  Ask again."""
        _bracketed_paste(True)

    def _resize(self) -> None:
        size = os.get_terminal_size(self.scr_fd)
        curses.resizeterm(size.lines, size.columns)
        self.scr.clear()

    # ---- keys ------------------------------------------------------------------------

    def _on_keys(self, mask: int) -> None:
        keys = 0
        while True:
            try:
                key = self.scr.get_wch()
            except curses.error:
                break  # no more input queued
            keys += 1
            self._key(key)
        if self._escape == "":
            self._escape = None  # a lone Escape: nothing to do
        if not keys and terminal_gone(sys.stdin.fileno()):
            self._hang_up()

    def _key(self, key: str | int) -> None:
        if self._escape is not None and self._escape_step(key):
            return
        if key == "\x1b":
            self._escape = ""
            return
        if key == "\t" and self._pasting:
            self.editor.insert(" ")   # a pasted tab parts columns; it completes nothing
            return
        action = KEYS.get(key)
        if action is None and isinstance(key, int):
            action = NAMED_KEYS.get(curses.keyname(key))
        if action is not None:
            action(self)
        elif isinstance(key, str) and lineedit.typable(key):
            self.editor.insert(key)

    def _escape_step(self, key: str | int) -> bool:
        """Feed a key to a pending ESC sequence; True when it was consumed.

        ESC + digit is Alt+digit; ESC + letter an Alt key; ESC [ ... or ESC O x
        a sequence curses did not know (TERM not matching the terminal):
        decoded from ESCAPE_SEQUENCES when known, else dropped, never typed.
        """
        seq = self._escape or ""
        self._escape = None
        if not isinstance(key, str):
            action = ALT_KEYS.get(key)
        elif seq == "" and key in "[O":
            self._escape = key
            return True
        elif seq == "":
            if key.isdigit():
                self.model.switch_to(str(int(key) or 10))
                return True
            action = ALT_KEYS.get(key)
        else:
            seq += key
            finished = seq[0] == "O" or "@" <= key <= "~"
            if not finished:
                self._escape = seq if len(seq) < 16 else None
                return True
            action = ESCAPE_SEQUENCES.get(seq)
        if action is not None:
            action(self)
        return True

    def _submit(self) -> None:
        text = self.editor.submit()
        if not text.strip():
            return
        context = slash.Context(self.model.target, self.conn.nick, self._gone_rooms(),
                                dict(self.conn.lengths))
        try:
            result = slash.interpret(text, context)
        except slash.SlashError as exc:
            self.model.info(str(exc), kind="error")
            return
        if result.lines and self.conn.quitting:
            # QUIT is on its way (/quit, /raw QUIT): the connection sends
            # nothing more, so neither show the line as said nor act on it.
            self.model.info(LEAVING_NOT_SENT, kind="error")
            return
        for line in result.lines:
            self.conn.send(line)
            asked = self.model.sent(line)
            if asked is not None:   # a NAMES: its answer is over by the PONG at the latest
                self.conn.flush(lambda key=asked: self.model.answered(key))
        for action in result.local:
            LOCAL_ACTIONS[action[0]](self, *action[1:])

    def _gone_rooms(self) -> frozenset[str]:
        """Room buffers we are out of for good (kicked, rejoin refused), not
        those a reconnect will rejoin."""
        return frozenset(ircmsg.casefold(b.name) for b in self.model.buffers
                         if b.is_room and ircmsg.casefold(b.name) not in self.conn.rooms)

    def _page(self, direction: int) -> None:
        height = max(1, self.scr.getmaxyx()[0] - 4)
        buffer = self.model.current
        buffer.scroll = max(0, buffer.scroll + direction * height)

    # ---- local actions of slash commands --------------------------------------

    def _own(self, target: str, text: str) -> None:
        self.model.own_talk("own", target, text)

    def _own_action(self, target: str, text: str) -> None:
        self.model.own_talk("ownaction", target, text)

    def _own_notice(self, target: str, text: str) -> None:
        self.model.own_talk("ownnotice", target, text)

    def _joining(self, room: str) -> None:
        buffer = self.model.find(room)
        if buffer is not None and buffer.joined:
            self.model.switch(buffer)
        else:
            self.model.pending_switch.add(ircmsg.casefold(room))

    def _parting(self, room: str) -> None:
        """Nothing yet: the buffer closes when the server's PART echo comes."""

    def _query(self, nick: str) -> None:
        self.model.switch(self.model.open(nick))

    def _switch(self, spec: str) -> None:
        if not self.model.switch_to(spec):
            self.model.info(f"no buffer {spec!r} (see the numbers in the status line)",
                            kind="error")

    def _close(self, name: str) -> None:
        buffer = self.model.find(name)
        if buffer is not None:
            self.model.close(buffer)

    def _quit(self, reason: str) -> None:
        self.conn.quit(reason)

    def _help(self, text: str) -> None:
        self.model.info(text)

    def _note(self, text: str) -> None:
        """What was sent differs from what was typed (cut to fit a line)."""
        self.model.info(text, kind="error")

    # ---- drawing -------------------------------------------------------------------

    def _init_colours(self) -> dict[str, int]:
        """Colour pairs when the terminal has colours, plain attributes if not."""
        colours = {"dim": curses.A_DIM, "error": curses.A_BOLD, "bar": curses.A_REVERSE}
        if curses.has_colors():
            curses.start_color()
            background = -1
            try:
                curses.use_default_colors()
            except curses.error:
                background = curses.COLOR_BLACK  # no "default colour" on this terminal
            for index, colour in enumerate(NICK_COLOURS, start=1):
                curses.init_pair(index, colour, background)
            curses.init_pair(len(NICK_COLOURS) + 1, curses.COLOR_RED, background)
            curses.init_pair(len(NICK_COLOURS) + 2, curses.COLOR_WHITE, curses.COLOR_BLUE)
            colours["error"] = curses.color_pair(len(NICK_COLOURS) + 1) | curses.A_BOLD
            colours["bar"] = curses.color_pair(len(NICK_COLOURS) + 2)
        return colours

    def nick_attr(self, nick: str) -> int:
        if not curses.has_colors():
            return curses.A_BOLD
        return curses.color_pair(1 + nick_colour_index(nick)) | curses.A_BOLD

    def _put(self, row: int, col: int, text: str, attr: int = 0) -> None:
        try:
            self.scr.addstr(row, col, text, attr)
        except curses.error:
            pass  # writing the bottom-right cell moves the cursor off-screen: harmless

    def _bar(self, row: int, text: str, width: int) -> None:
        text = lineedit.fit(text, width)
        self._put(row, 0, text + " " * (width - lineedit.text_width(text)), self._colours["bar"])

    def draw(self) -> None:
        height, width = self.scr.getmaxyx()
        self.scr.erase()
        if height < 4 or width < 20:
            self._put(0, 0, lineedit.fit("terminal too small", width))
            self.scr.refresh()
            return
        buffer = self.model.current
        self._bar(0, self._title(buffer), width)
        for index, row in enumerate(self._pane_rows(buffer, width, height - 3)):
            col = 0
            for text, attr in row:
                self._put(1 + index, col, text, attr)
                col += lineedit.text_width(text)
        self._bar(height - 2, self._status_text(buffer, width), width)
        prompt = input_prompt(buffer.name, width)
        shown, cursor = self.editor.view(max(2, width - lineedit.text_width(prompt)))
        self._put(height - 1, 0, prompt + shown)
        self.scr.move(height - 1, min(width - 1, lineedit.text_width(prompt) + cursor))
        self.scr.noutrefresh()
        curses.doupdate()

    def _title(self, buffer: buffers.Buffer) -> str:
        if buffer.is_room:
            return f" {buffer.name}: {buffer.topic}" if buffer.topic else f" {buffer.name}"
        if buffer is self.model.buffers[0]:
            return " forkchat-client  (/help lists the commands)"
        return f" private conversation with {buffer.name}"

    def _status_text(self, buffer: buffers.Buffer, width: int) -> str:
        parts = [events.clock(time.time()), events.sanitize(self.conn.nick), self.settings.address,
                 buffer_label(self.model.active + 1, buffer.name, width)]
        if buffer.is_room:
            parts.append(room_state(buffer))
        waiting = awaited_notice(self.conn.awaited())
        if waiting:
            parts.append(waiting)
        if self.conn.state == "waiting":
            parts.append(f"reconnecting in {self.conn.retry_in():.0f} s")
        elif not self.conn.ready:
            parts.append("connecting")
        if buffer.scroll:
            parts.append("-- more below (PageDown) --")
        active = [f"{i + 1}{'*' if b.highlight else ''}"
                  for i, b in enumerate(self.model.buffers) if b.unread]
        return status_with_activity(parts, active, width)

    def _pane_rows(self, buffer: buffers.Buffer, width: int, height: int
                   ) -> list[list[tuple[str, int]]]:
        """The rows to show, from the bottom up, honouring the scroll offset.

        Lines are measured (their rows counted) from the bottom up until
        the view is filled, each wrapped once for this width (`_starts`),
        and only the rows on screen are built."""
        if buffer.below and buffer.scroll:   # a wrapped line moved the view by one row only
            held = itertools.islice(reversed(buffer.lines), buffer.below)
            buffer.scroll += sum(len(_starts(line, width)) for line in held)
        buffer.below = 0
        measured: list[tuple[buffers.Line, array.array]] = []
        total, wanted = 0, height + buffer.scroll
        for line in reversed(buffer.lines):
            measured.append((line, _starts(line, width)))
            total += len(measured[-1][1])
            if total >= wanted:
                break
        buffer.scroll = min(buffer.scroll, max(0, total - height))
        end = total - buffer.scroll
        return self._rows_between(reversed(measured), max(0, end - height), end, width)

    def _rows_between(self, measured: Iterable[tuple[buffers.Line, array.array]],
                      first: int, end: int, width: int) -> list[list[tuple[str, int]]]:
        """Rows `first` to `end - 1` of the measured lines (top down), in
        their styles of now: the nick's colour, bold when it names me."""
        dim, error = self._colours["dim"], self._colours["error"]
        rows: list[list[tuple[str, int]]] = []
        top = 0
        for line, starts in measured:
            bottom = top + len(starts)
            if top < end and bottom > first:
                segments = line_segments(line, self.nick_attr, dim, error, self.model.me)
                rows += layout.rows(segments, starts, max(first, top) - top,
                                    min(end, bottom) - top, width)
            top = bottom
        return rows


def _plain(nick: str) -> int:
    return 0


def _starts(line: buffers.Line, width: int) -> array.array:
    """Where the rows of `line` begin at `width`, wrapped once and kept on
    the line until the width or a field they are cut from changes: they do
    not depend on styles, which are applied to the rows shown only."""
    key = (width, line.time, line.kind, line.nick, line.text)
    if line.wrapped is None or line.wrapped.key != key:
        texts = [text for text, _ in line_segments(line, _plain, 0, 0)]
        line.wrapped = layout.Memo(key, layout.row_starts(texts, width))
    return line.wrapped.starts


def _names(line: buffers.Line, me: str) -> bool:
    """Whether `line` names `me`, asked once per nick and text of a line
    the view keeps a memo for."""
    memo = line.wrapped
    if memo is None:
        return buffers.names(line.text, me)
    if memo.named is None or memo.named[0] != me or memo.named[1] is not line.text:
        memo.named = (me, line.text, buffers.names(line.text, me))
    return memo.named[2]


def _edit(method: str) -> Callable[[Tui], None]:
    return lambda t: getattr(t.editor, method)()


KEYS: dict[str | int, Callable[[Tui], None]] = {
    "\n": Tui._submit, "\r": Tui._submit, curses.KEY_ENTER: Tui._submit,
    curses.KEY_BACKSPACE: _edit("backspace"),
    "\x7f": _edit("backspace"), "\x08": _edit("backspace"),
    curses.KEY_DC: _edit("delete"), "\x04": _edit("delete"),
    curses.KEY_LEFT: _edit("left"), "\x02": _edit("left"),
    curses.KEY_RIGHT: _edit("right"), "\x06": _edit("right"),
    curses.KEY_HOME: _edit("home"), "\x01": _edit("home"),
    curses.KEY_END: _edit("end"), "\x05": _edit("end"),
    curses.KEY_UP: _edit("history_prev"),
    curses.KEY_DOWN: _edit("history_next"),
    "\x17": _edit("delete_word"), "\x15": _edit("kill_to_start"),
    "\x0b": _edit("kill_to_end"),
    "\t": lambda t: t.editor.complete(t.model.completions),
    curses.KEY_PPAGE: lambda t: t._page(+1), curses.KEY_NPAGE: lambda t: t._page(-1),
    "\x0e": lambda t: t.model.cycle(+1), "\x10": lambda t: t.model.cycle(-1),
    "\x0c": lambda t: t.scr.clear(), curses.KEY_RESIZE: lambda t: t.scr.clear(),
}

# Keys without a fixed curses constant: found by their terminfo name.  On
# xterm-style terminals (xterm, tmux) Ctrl+arrow is kLFT5/kRIT5 and Alt+arrow
# kLFT3/kRIT3, decoded by curses before an ESC could reach ALT_KEYS.
NAMED_KEYS: dict[bytes, Callable[[Tui], None]] = {
    b"kLFT5": _edit("word_left"), b"kRIT5": _edit("word_right"),
    b"kLFT3": lambda t: t.model.cycle(-1), b"kRIT3": lambda t: t.model.cycle(+1),
}

# Alt+key arrives as ESC then key.
ALT_KEYS: dict[str | int, Callable[[Tui], None]] = {
    "b": _edit("word_left"), "f": _edit("word_right"),
    curses.KEY_LEFT: lambda t: t.model.cycle(-1), curses.KEY_RIGHT: lambda t: t.model.cycle(+1),
}

# Raw sequences for when TERM does not match the terminal (curses then passes them on).
ESCAPE_SEQUENCES: dict[str, Callable[[Tui], None]] = {
    "[1~": _edit("home"), "[7~": _edit("home"), "[H": _edit("home"), "OH": _edit("home"),
    "[4~": _edit("end"), "[8~": _edit("end"), "[F": _edit("end"), "OF": _edit("end"),
    "[3~": _edit("delete"), "[A": _edit("history_prev"), "OA": _edit("history_prev"),
    "[B": _edit("history_next"), "OB": _edit("history_next"),
    "[C": _edit("right"), "OC": _edit("right"), "[D": _edit("left"), "OD": _edit("left"),
    "[1;5C": _edit("word_right"), "[1;5D": _edit("word_left"),
    "[5~": lambda t: t._page(+1), "[6~": lambda t: t._page(-1),
    "[200~": lambda t: setattr(t, "_pasting", True),
    "[201~": lambda t: setattr(t, "_pasting", False),
    "[1;3C": lambda t: t.model.cycle(+1), "[1;3D": lambda t: t.model.cycle(-1),
}

BRACKETED_PASTE = {True: b"\x1b[?2004h", False: b"\x1b[?2004l"}

# Handled in the loop, never inside the handler (which only wakes the loop).
SIGNALS: dict[int, Callable[[Tui], None]] = {
    signal.SIGWINCH: Tui._resize, signal.SIGTERM: Tui._hang_up, signal.SIGHUP: Tui._hang_up,
    signal.SIGCONT: Tui._resumed,
}

LOCAL_ACTIONS: dict[str, Callable[..., None]] = {
    "own": Tui._own, "ownaction": Tui._own_action, "ownnotice": Tui._own_notice,
    "joining": Tui._joining,
    "parting": Tui._parting,
    "query": Tui._query, "switch": Tui._switch, "close": Tui._close,
    "quit": Tui._quit, "help": Tui._help, "note": Tui._note,
}


def _main(stdscr: curses.window, settings: connection.Settings) -> tuple[str, str]:
    """Run the interface; (the fatal message, a notice for the way out)."""
    stdscr.nodelay(True)
    stdscr.keypad(True)
    view = Tui(stdscr, settings)
    fatal = view.run()
    return fatal, unsent_notice(view.conn.unsent)


def _bracketed_paste(on: bool) -> None:
    """Ask the terminal to mark pasted text (ESC [200~ ... ESC [201~), so
    that a pasted tab is text, not Tab completion; terminals without the
    mode ignore the request."""
    try:
        os.write(sys.stdout.fileno(), BRACKETED_PASTE[on])
    except OSError:
        pass    # the terminal is gone


def _restore(stdscr: curses.window) -> None:
    """Give the terminal back as curses.wrapper() does, each step on its own.

    After a SIGHUP the terminal is gone and every step fails (ERR):
    wrapper() raised the first failure as a traceback and skipped the rest.
    """
    _bracketed_paste(False)
    for step in (lambda: stdscr.keypad(False), curses.echo, curses.nocbreak, curses.endwin):
        try:
            step()
        except curses.error:
            pass


def _wrapper(settings: connection.Settings) -> tuple[str, str]:
    """curses.wrapper(_main), with a restore that survives a vanished terminal."""
    stdscr = curses.initscr()
    try:
        curses.noecho()
        curses.cbreak()
        _bracketed_paste(True)
        return _main(stdscr, settings)
    finally:
        _restore(stdscr)


def _utf8_ctype() -> None:
    """Under LC_ALL=C Python runs in UTF-8 mode (PEP 540), but curses reads
    keys and draws by the C library's character type, ASCII there: a typed
    é was dropped without a word.  Take C.UTF-8's, as Python's own coercion
    (PEP 538) does when LC_ALL is not set."""
    codeset = locale.nl_langinfo(locale.CODESET).upper().replace("-", "")
    if sys.flags.utf8_mode and codeset != "UTF8":
        try:
            locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
        except locale.Error:
            pass    # no such locale here: ASCII it stays


def terminal_problem() -> str:
    """Why curses cannot run on this terminal ('' when it can): a TERM with
    no terminfo entry here (ssh from kitty, alacritty ...) made initscr()
    end in a traceback."""
    term = os.environ.get("TERM", "")
    try:
        curses.setupterm(term, sys.stdout.fileno())
    except curses.error:
        return (f"terminal type {term!r} is not known on this system (no terminfo entry):"
                " run with TERM=xterm-256color, or use --line")
    return ""


def run(settings: connection.Settings) -> int:
    """Entry point used by app.main(); the terminal is restored on every exit."""
    os.environ.setdefault("ESCDELAY", "25")   # Alt+key arrives as ESC + key
    locale.setlocale(locale.LC_ALL, "")
    _utf8_ctype()
    for name in ("LINES", "COLUMNS"):
        os.environ.pop(name, None)  # stale exported values (readline sets them) beat the tty size
    try:
        fatal, notice = _wrapper(settings)
    except KeyboardInterrupt:
        return 130
    if notice:
        print(f"forkchat-client: {notice}", file=sys.stderr)
    if fatal:
        print(f"forkchat-client: {fatal}", file=sys.stderr)
        return 1
    return 0
