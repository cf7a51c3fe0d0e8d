"""children.start: what a child inherits in its first moments."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)

# A parent with the supervisor's signal wiring (a Python handler and a wakeup
# fd) starts a child whose start-up is held at a gate, signals it there, and
# reports how the child ended and whether its own loop was woken.
SCRIPT = r"""
import os, select, signal
import multiprocessing.process
from forkchat import children, signals

read_end, write_end = signals.install([signal.SIGTERM])
children.make_lifeline()
reached, gate = os.pipe(), os.pipe()
real_bootstrap = multiprocessing.process.BaseProcess._bootstrap

def held_bootstrap(self, parent_sentinel=None):
    os.write(reached[1], b"x")
    os.read(gate[0], 1)                 # never written: only a signal ends this
    return real_bootstrap(self, parent_sentinel)

multiprocessing.process.BaseProcess._bootstrap = held_bootstrap
child = children.start("forkchat-test", lambda: None, ())
os.read(reached[0], 1)
os.kill(child.pid, signal.SIGTERM)
if not select.select([child.sentinel], [], [], 5)[0]:
    os.kill(child.pid, signal.SIGKILL)  # it survived the SIGTERM
_, status = os.waitpid(child.pid, 0)
print(os.waitstatus_to_exitcode(status), signals.received(read_end))
"""


def test_a_signal_to_a_new_child_is_its_own_not_the_parents():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr[-2000:]
    code, woken = done.stdout.split(maxsplit=1)
    assert woken.strip() == "b''", "the child's signal woke the parent's loop"
    assert int(code) == -15          # the child took the default action
