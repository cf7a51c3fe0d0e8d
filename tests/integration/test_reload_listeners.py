"""SIGHUP binds the [[listen]] entries added to the file and closes those removed,
port 0 ones included, while the clients of the listeners that stay talk on."""

import signal
import socket

import pytest

from tests.support.ircclient import IrcTestClient
from tests.support.server import ServerProcess

IRC = '[[listen]]\naddress = "127.0.0.1"\nport = 0\n'
TUTORIAL = '[[listen]]\naddress = "127.0.0.1"\nport = 0\nprotocol = "tutorial"\n'


@pytest.fixture
def file_server():
    server = ServerProcess(config_text=IRC, listen=[])
    yield server.start()
    server.stop()


def test_sighup_binds_an_added_listener_and_closes_a_removed_port_0_one(file_server):
    server = file_server
    keeper = IrcTestClient(server.port)
    keeper.register("keeper")

    mark = server.log_length()
    server.write_config(IRC + TUTORIAL)
    server.signal(signal.SIGHUP)
    server.wait_for_text("configuration reloaded", start=mark)
    tutorial_port = server.port_of("tutorial")
    with socket.create_connection(("127.0.0.1", tutorial_port), timeout=5) as guest:
        assert guest.recv(100) == b"NICK"

    mark = server.log_length()
    server.write_config(IRC)
    server.signal(signal.SIGHUP)
    server.wait_for_text(f"stopped listening on 127.0.0.1:{tutorial_port}", start=mark)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", tutorial_port), timeout=5).close()
    keeper.sync()                 # the listener that stayed, and its client, go on
    keeper.close()
