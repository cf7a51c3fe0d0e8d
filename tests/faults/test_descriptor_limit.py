"""At the descriptor limit (RLIMIT_NOFILE) the server waits, quietly, and recovers."""

from __future__ import annotations

import sys
import time

import pytest

from tests.support.ircclient import IrcTestClient
from tests.support.server import ServerProcess

pytestmark = pytest.mark.timeout(90)

# Low enough that the broker (one descriptor per client) runs out after a
# dozen clients, before the supervisor or a worker does.
NOFILE = 26
LIMITED = ("import os, resource, sys; "
           f"resource.setrlimit(resource.RLIMIT_NOFILE, ({NOFILE}, {NOFILE})); "
           "os.execv(sys.executable, [sys.executable] + sys.argv[1:])")


class LimitedServer(ServerProcess):
    """The real server, started with a low descriptor limit (soft and hard)."""

    def command(self) -> list[str]:
        return [sys.executable, "-c", LIMITED, *super().command()[1:]]


def registers(server: ServerProcess, client: IrcTestClient, nick: str) -> bool:
    """Whether `client` registers within 5 s, or within 1.5 s once the broker
    has logged that it could not accept a link (it retries every 0.5 s):
    the stuck client no longer costs the whole 5 s once the broker says why."""
    client.send(f"NICK {nick}")
    client.send(f"USER {nick} 0 * :Test {nick}")
    started = time.monotonic()
    while time.monotonic() < started + 5:
        try:
            client.expect(lambda m: m.command in ("376", "422"), 0.25)
            return True
        except AssertionError:
            if (time.monotonic() >= started + 1.5
                    and "accept on broker socket failed" in server.log_text()):
                return False
    return False


def test_the_broker_out_of_descriptors_logs_once_and_takes_the_link_once_one_frees():
    """accept() failing with EMFILE left the link queued and the listener
    readable: the broker spun at full CPU and logged the failure on every
    turn (300,000 lines in 5 s) until a client left."""
    server = LimitedServer(config_text="[limits]\nflood_burst = 1000\n").start()
    clients: list[IrcTestClient] = []
    try:
        stuck = None
        for number in range(3 * NOFILE):
            client = IrcTestClient(server.port)
            clients.append(client)
            if not registers(server, client, f"fd{number}"):
                stuck = client            # its worker's link waits in the queue
                break
        assert stuck is not None, "the broker never ran out of descriptors"
        server.wait_for_text("accept on broker socket failed")
        clients.pop(0).close()
        clients.pop(0).close()
        stuck.expect(lambda m: m.command in ("376", "422"), timeout=10)
        server.wait_for_text("accepting broker links again")
        assert server.log_text().count("accept on broker socket failed") == 1
        # the link taken with the last descriptor is checked (/proc) all the same
        assert "refused broker link" not in server.log_text()
    finally:
        for client in clients:
            client.close()
        server.stop()
