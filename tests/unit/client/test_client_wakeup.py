"""The client's signal wake-ups (wakeup.py): a storm of signals loses none."""

from __future__ import annotations

import os
import select
import signal

from forkchat.client import wakeup


def test_a_sigterm_after_a_storm_of_sigwinch_is_not_lost(capfd):
    """Dragging a terminal's corner sends SIGWINCH after SIGWINCH while the
    loop draws; the wake-up socketpair holds some 270 one-byte writes, and
    a SIGTERM that found it full lost its byte: the client never hung up,
    and Python's "Exception ignored" lines went across the screen."""
    with wakeup.catching([signal.SIGWINCH, signal.SIGTERM]) as wake:
        for _ in range(3000):
            os.kill(os.getpid(), signal.SIGWINCH)    # delivered before kill returns
        os.kill(os.getpid(), signal.SIGTERM)
        taken = b""
        while select.select([wake], [], [], 0)[0]:
            taken += wakeup.received(wake)
        assert signal.SIGTERM in taken
        assert taken.count(signal.SIGWINCH) == 3000      # one a delivery, as before
        assert taken[-1] == signal.SIGTERM
    assert "wakeup fd" not in capfd.readouterr().err


def test_signals_come_once_each_in_order_and_none_twice():
    """A look takes what came since the last one, and only that."""
    with wakeup.catching([signal.SIGUSR1, signal.SIGUSR2]) as wake:
        os.kill(os.getpid(), signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGUSR1)
        assert wakeup.received(wake) == bytes([signal.SIGUSR2, signal.SIGUSR1])
        assert wakeup.received(wake) == b""
