"""Children that a test signals get the signals' default dispositions."""

from __future__ import annotations

import signal

# What a terminal, a service manager or `kill` sends the programs under test.
SENT = (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTERM)


def as_started_by_hand() -> None:
    """Give SENT their default action and unblock them, in a child before
    its exec (a Popen preexec_fn, or the child of pty.fork).

    An ignored signal stays ignored across exec, and so does a blocked one,
    and forkchat keeps an ignored SIGINT or SIGHUP ignored on purpose (sh
    starts a background job with SIGINT ignored; nohup ignores SIGHUP).  A
    test suite run by such a runner started clients that Ctrl+C or a
    SIGINT could not stop: exit 1 where the test expected 130.
    """
    for signum in SENT:
        signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SENT)
