"""Fixtures: a real server on port 0, clients that close themselves."""

from __future__ import annotations

import pytest

from tests.support.ircclient import IrcTestClient, client_factory
from tests.support.server import ServerProcess, left_behind

TEST_LIMITS = """
[limits]
flood_burst = 1000
flood_rate = 1000.0
"""


@pytest.fixture
def make_server():
    """Factory: make_server(config_text=..., extra_args=[...]) -> started server."""
    started: list[ServerProcess] = []

    def make(**kwargs) -> ServerProcess:
        if "config_text" not in kwargs:
            kwargs["config_text"] = TEST_LIMITS
        server = ServerProcess(**kwargs).start()
        started.append(server)
        return server
    yield make
    stray = []
    for server in started:       # every one stopped before any assertion
        leftover = server.descendants()
        server.stop()
        stray += left_behind(leftover)
    assert not stray, f"processes left behind: {stray}"


@pytest.fixture
def server(make_server) -> ServerProcess:
    return make_server()


@pytest.fixture
def clients(server):
    """Factory: clients() -> a connected IrcTestClient to `server`, closed at teardown."""
    with client_factory(server.port) as connect:
        yield connect


@pytest.fixture
def registered(clients):
    """Factory: registered("alice") -> a client through the welcome burst."""
    def make(nick: str) -> IrcTestClient:
        client = clients()
        client.register(nick)
        return client
    return make
