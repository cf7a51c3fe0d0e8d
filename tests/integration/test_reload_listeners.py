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


def _reload(server: ServerProcess, text: str, outcome: str) -> list[str]:
    """Write `text`, SIGHUP, wait for `outcome`; the log lines of the reload."""
    mark = server.log_length()
    server.write_config(text)
    server.signal(signal.SIGHUP)
    server.wait_for_text(outcome, start=mark)
    return server.log_text().splitlines()[mark:]


def _irc_on(port: int, extra: str = "") -> str:
    return f'[[listen]]\naddress = "127.0.0.1"\nport = {port}\n{extra}'


def _registers(port: int, nick: str) -> None:
    client = IrcTestClient(port)
    client.register(nick)
    client.close()


def test_a_listener_moved_to_a_taken_port_serves_on_until_the_port_is_free(file_server):
    """The old listener was closed before the new one failed to bind,
    which left the server with no IRC listener at all."""
    server = file_server
    old_port = server.port
    holder = socket.create_server(("127.0.0.1", 0))
    taken = holder.getsockname()[1]
    try:
        lines = _reload(server, _irc_on(taken), "listener(s) could not be bound")
        assert any(f"cannot listen on 127.0.0.1:{taken}" in line for line in lines)
        assert any(f"still listening on 127.0.0.1:{old_port} (irc)" in line for line in lines)
        assert not any("stopped listening" in line for line in lines)
        _registers(old_port, "stayed")
    finally:
        holder.close()

    lines = _reload(server, _irc_on(taken), "configuration reloaded")
    assert any(f"listening on 127.0.0.1:{taken} (irc)" in line for line in lines)
    assert any(f"stopped listening on 127.0.0.1:{old_port} (irc)" in line for line in lines)
    _registers(taken, "moved")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", old_port), timeout=5).close()


def test_a_listener_changed_on_its_own_port_is_closed_first_and_reopened_if_it_fails(
        file_server, tmp_path):
    """A new entry on the port of a removed one can bind only once the old
    is closed; if it still fails (a certificate that does not load), the
    old listener is opened again on its port."""
    server = file_server
    port = server.port
    lines = _reload(server, _irc_on(port, 'protocol = "tutorial"\n'), "configuration reloaded")
    assert any(f"listening on 127.0.0.1:{port} (tutorial)" in line for line in lines)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as guest:
        assert guest.recv(100) == b"NICK"

    (tmp_path / "cert.pem").write_text("not a certificate\n")
    (tmp_path / "key.pem").write_text("not a key\n")
    broken = _irc_on(port, f'tls_cert = "{tmp_path}/cert.pem"\ntls_key = "{tmp_path}/key.pem"\n')
    lines = _reload(server, broken, "listener(s) could not be bound")
    assert any("cannot load TLS certificate" in line for line in lines)
    assert any(f"still listening on 127.0.0.1:{port} (tutorial)" in line for line in lines)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as guest:
        assert guest.recv(100) == b"NICK"
