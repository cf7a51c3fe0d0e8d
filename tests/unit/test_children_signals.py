"""children.reset_signals: a new child's first step, undoing the parent's
signal wiring, without the enum lookups of signal.signal (each one failed
through an exception for the parent's Python handler, and copied some 30
pages of every worker on the way)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)

# Enum member lookups counted while `enum.EnumType.__call__ is counted`.
COUNTING = r"""
import enum, os, signal
from forkchat import children, signals

lookups = []
real_call = enum.EnumType.__call__

def counted(cls, *args, **kwargs):
    lookups.append(cls.__name__)
    return real_call(cls, *args, **kwargs)
"""

# A parent wired as the spawner is (a Python handler, a wakeup fd) resets in
# place, with enum member lookups counted, and prints what each signal does.
RESET_SCRIPT = COUNTING + r"""
read_end, write_end = signals.install([signal.SIGCHLD, signal.SIGTERM])
enum.EnumType.__call__ = counted
children.reset_signals()
enum.EnumType.__call__ = real_call
print(len(lookups), signal.set_wakeup_fd(-1),
      *(int(signal.getsignal(signum)) for signum in children.HANDLED_SIGNALS))
"""

# A parent starts a child through children.start with enum member lookups
# counted (in the parent only: the child exits at once), and reaps it.
START_SCRIPT = COUNTING + r"""
children.make_lifeline()
read_end, write_end = signals.install([signal.SIGCHLD, signal.SIGTERM])
enum.EnumType.__call__ = counted
process = children.start("forkchat-test", lambda: None, ())
enum.EnumType.__call__ = real_call
process.join(10)
print(len(lookups), process.exitcode,
      signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, []))
"""


def run_script(script: str) -> list[str]:
    """Run `script` in a fresh interpreter (it rewires signals); its output's words."""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def test_reset_signals_undoes_the_parents_wiring_without_enum_lookups():
    # TERM, INT, HUP, USR1, CHLD: default (0), ignored (1) three times, default
    assert run_script(RESET_SCRIPT) == ["0", "-1", "0", "1", "1", "1", "0"]


def test_a_childs_start_blocks_and_restores_signals_without_enum_lookups():
    """The masks around the fork are plain sets of numbers: each enum lookup
    in the spawner at a fork wrote pages that the worker forked before
    then owned.  Nothing is left blocked in the parent."""
    assert run_script(START_SCRIPT) == ["0", "0", "False"]
