"""A SIGTERM to the whole process group stops the server; it never restarts a child.

The broker and spawner may exit on the signal before the supervisor has
read its own; the supervisor must still see that it is stopping.
"""

import os
import signal

from tests.conftest import TEST_LIMITS
from tests.support.ircclient import IrcTestClient

TRIES = 4      # the race is not won every time: a few stops, each a fresh server


def test_group_sigterm_never_restarts_the_broker_or_spawner(make_server):
    for _ in range(TRIES):
        server = make_server(config_text=TEST_LIMITS)
        alice = IrcTestClient(server.port)
        alice.register("alice")
        alice.join("#room")
        os.killpg(server.pid, signal.SIGTERM)
        alice.expect_closed(timeout=5)
        assert server.proc.wait(10) == 0
        log = server.log_text()
        assert "restarting the broker" not in log, log
        assert "restarting the spawner" not in log, log
        # the broker may end on its own copy first: expected, so no warning
        assert "cannot reach the broker" not in log, log
        alice.close()
