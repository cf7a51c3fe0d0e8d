"""worker.warm_up: the connect path used by the server's start, so that
CPython's first-use writes happen in the supervisor, not in each worker
(see WARM_UP_ROUNDS)."""

import logging
import os

from forkchat import worker


def test_the_warm_up_leaves_nothing_behind(caplog):
    """Run in the supervisor at the start: no descriptor, no log line, no
    exception, whatever it uses."""
    before = sorted(os.listdir("/proc/self/fd"))
    with caplog.at_level(logging.DEBUG):
        worker.warm_up(rounds=3)
    assert sorted(os.listdir("/proc/self/fd")) == before
    assert caplog.records == []


def test_the_warm_up_runs_what_a_connection_runs_first():
    """Its lines are those a client registers and joins with, and each is
    one a worker parses and runs as it would a client's."""
    commands = {worker.protocol.parse_line(line).command for line in worker._WARM_UP_LINES}
    assert {"NICK", "USER", "JOIN"} <= commands
    assert commands <= set(worker.commands.COMMANDS) | worker.SYNC_FIRST
