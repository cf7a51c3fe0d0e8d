"""Logging setup, the first call of every process entry point.

One event a line on stderr.  Under systemd (JOURNAL_STREAM set) lines carry
no timestamp but a syslog priority prefix (`<3>` ... `<7>`) that journald
turns into the entry's priority.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
from typing import Iterator

from forkchat import systemd

_PRIORITIES = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4,
               logging.ERROR: 3, logging.CRITICAL: 2}
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO,
           "warning": logging.WARNING, "error": logging.ERROR}


# C0 and C1 controls and DEL as \xNN, Unicode's line and paragraph
# separators as \uNNNN: a QUIT reason, a nick, a config value in a log line
# must not move a terminal's cursor, retitle it, or start a line of its own
# (one event a line).  Tracebacks are added after, untouched.
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPES.update({0x2028: "\\u2028", 0x2029: "\\u2029"})


# The role this process names in its lines (setup); a field of each record
# rather than part of the format, so that a child forked from a process set
# up alike only names its own role (see setup).
_role = ""


class _PrintableMessages(logging.Filter):
    """Escape control characters in the message, arguments included, and
    name the process's role."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.role = _role
        try:
            message = record.getMessage()
        except Exception:        # bad arguments: left to the handler's own error path
            return True
        # kept formatted, so the formatter does not run msg % args again
        record.msg, record.args = message.translate(_ESCAPES), None
        return True


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITIES.get(record.levelno, 6)
        text = super().format(record)
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


# Write errors that mean standard error is gone for good: its reader exited
# (journald restarted, a `| tee` killed) or its terminal hung up.
_GONE = (errno.EPIPE, errno.ECONNRESET, errno.EIO)


class _StderrHandler(logging.StreamHandler):
    """A handler of standard error that, once it is gone for good, points
    descriptor 2 at /dev/null.

    logging drops a line it cannot write (raiseExceptions is off), but the
    line stays in sys.stderr's buffer: each later line fails again, and the
    flush at exit fails last, which made a clean stop exit 120 (systemd
    then counts the unit failed).  Redirected, the process writes on
    quietly; a child forked after this inherits the redirection, one
    forked before finds out for itself at its own next line.
    """

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError) and error.errno in _GONE:
            silence_stderr()
        super().handleError(record)


def silence_stderr() -> None:
    """Descriptor 2 to /dev/null, and what sys.stderr still holds flushed
    there; out of descriptors, it stays as it is (tried at the next line)."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(null, 2)
    finally:
        os.close(null)
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


# Our handler as setup() last made it, whether it wrote for the journal,
# and the process that found out.
_made: tuple[logging.Handler, bool, int] | None = None


def setup(role: str, level: str = "info") -> None:
    """Configure the root logger for this process (called again after fork).

    A worker forked from a spawner set up alike (the same standard error,
    both under the journal or neither) keeps the handler it inherited and
    only names its own role: making a handler, formatter and filter anew in
    every worker cost each a third of a millisecond, most of it pages of
    the logging module it wrote to, copied from its parent.

    A forked child takes its parent's answer to whether standard error
    is the journal's: it has the same standard error and environment.
    Asking again cost every worker some 20 pages copied from its spawner
    (os.environ raises and catches a KeyError for an unset variable).
    """
    global _made, _role
    if _made is not None and _made[2] != os.getpid():
        journal = _made[1]
    else:
        journal = systemd.under_journal()
    root = logging.getLogger()
    _role = role
    if _made is not None and root.handlers == [_made[0]] and _made[1] == journal \
            and getattr(_made[0], "stream", None) is sys.stderr:
        wanted = _LEVELS.get(level, logging.INFO)
        if root.level != wanted:
            root.setLevel(wanted)
        return
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = _StderrHandler(sys.stderr)
    if journal:
        handler.setFormatter(_JournalFormatter("%(role)s[%(process)d]: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(role)s[%(process)d] %(levelname)s %(message)s"))
    handler.addFilter(_PrintableMessages())
    root.addHandler(handler)
    _made = (handler, journal, os.getpid())
    root.setLevel(_LEVELS.get(level, logging.INFO))
    logging.raiseExceptions = False
    # No line shows a thread, a multiprocessing name or a source location;
    # looking them up for each record touches objects whose pages a forked
    # worker would otherwise copy (logging's own optimisation switches).
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging._srcfile = None


@contextlib.contextmanager
def written_nowhere() -> Iterator[None]:
    """Lines logged meanwhile take their usual way through our handler,
    formatted and written, but to the null device, and reach no other
    handler (warmup.warm_up runs connections, whose lines nobody made).

    The handler is the one setup() made, which forked children keep, so
    that its code is warm in them (without setup, a plain one).  Its
    stream is swapped, not flushed: standard error may have no reader.
    """
    root = logging.getLogger()
    handlers = root.handlers[:]
    with open(os.devnull, "w") as sink:
        handler: logging.StreamHandler = logging.StreamHandler(sink)  # type: ignore[type-arg]
        if _made is not None and isinstance(_made[0], logging.StreamHandler):
            handler = _made[0]
        stream, handler.stream = handler.stream, sink
        root.handlers[:] = [handler]
        try:
            yield
        finally:
            root.handlers[:] = handlers
            handler.stream = stream


class Window:
    """At most one log line per `seconds` for an event another process may
    cause as often as it likes (any local process connecting to the broker's
    socket, a worker taken over through its client): each event would
    otherwise be a line of the server's log.  The events not logged are
    counted, for the next line to say."""

    __slots__ = ("seconds", "logged_at", "unlogged")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.logged_at = float("-inf")
        self.unlogged = 0

    def held_back(self, now: float) -> int | None:
        """None while the window is shut (this event is counted); else how
        many were counted since the last line, which is to be logged now."""
        if now - self.logged_at < self.seconds:
            self.unlogged += 1
            return None
        more, self.unlogged, self.logged_at = self.unlogged, 0, now
        return more


def set_level(level: str) -> None:
    logging.getLogger().setLevel(_LEVELS.get(level, logging.INFO))
