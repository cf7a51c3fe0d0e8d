"""Every limit answers with a clear ERROR or numeric, before anything grows."""

import os
import signal
import socket

from tests.support.ircclient import IrcTestClient
from tests.support.server import worker_pid


def refused_with(port: int) -> str:
    client = IrcTestClient(port)
    closing = client.expect_closed(timeout=5)
    client.close()
    assert closing and closing[-1].command == "ERROR"
    return closing[-1].params[0]


def test_max_clients_refused_before_a_worker_is_forked(make_server):
    server = make_server(config_text="[limits]\nmax_clients = 2\n")
    first, second = IrcTestClient(server.port), IrcTestClient(server.port)
    first.register("one")
    second.register("two")
    workers_before = len(server.descendants())
    assert "Server is full" in refused_with(server.port)
    assert len(server.descendants()) == workers_before
    first.close()
    second.close()


def test_max_clients_per_ip(make_server):
    server = make_server(config_text="[limits]\nmax_clients_per_ip = 1\n")
    only = IrcTestClient(server.port)
    only.register("only")
    assert "Too many connections from your address" in refused_with(server.port)
    only.close()


def refused_from(port: int, source: str) -> str:
    client = IrcTestClient(port, source=source)
    closing = client.expect_closed(timeout=5)
    client.close()
    assert closing and closing[-1].command == "ERROR"
    return closing[-1].params[0]


def test_max_clients_per_ip_counts_the_address_block(make_server):
    """ipv4_prefix = 24: 127.0.0.1 and 127.0.0.2 (all of 127/8 is loopback)
    count as one block, as the addresses of one IPv6 /64 do by default."""
    server = make_server(config_text="[limits]\nmax_clients_per_ip = 1\nipv4_prefix = 24\n")
    only = IrcTestClient(server.port, source="127.0.0.1")
    only.register("only")
    assert "Too many connections from your address" in refused_from(server.port, "127.0.0.2")
    server.wait_for_text("refused connection from 127.0.0.2 (127.0.0.0/24): Too many")
    only.close()


def test_without_a_block_another_address_is_not_counted(make_server):
    server = make_server(config_text="[limits]\nmax_clients_per_ip = 1\n")
    first = IrcTestClient(server.port, source="127.0.0.1")
    first.register("first")
    second = IrcTestClient(server.port, source="127.0.0.2")
    assert second.register("second")[0].command == "001"
    first.close()
    second.close()


def test_connection_rate_per_ip(make_server):
    server = make_server(config_text="[limits]\nconnect_burst = 3\nconnect_rate = 0.1\n")
    kept = [IrcTestClient(server.port) for _ in range(3)]
    for index, client in enumerate(kept):
        client.register(f"c{index}")
    assert "Connecting too fast" in refused_with(server.port)
    for client in kept:
        client.close()


def test_ipv6_listener(make_server):
    """A client from ::1 is shown as 0::1 (the same address): in WHO, WHOIS
    and WHOWAS the host is a middle parameter, where '::1' read as the
    trailing '1', and a ban built from WHO's host (irssi's /ban) matched
    nobody.  The prefix says 0::1 too, so that they agree."""
    server = make_server(listen=["[::1]:0"])
    assert server.ports[0][0] == "::1"
    client = IrcTestClient(server.ports[0][1], host="::1")
    burst = client.register("six")
    assert "six!six@0::1" in burst[0].params[-1]
    client.join("#v6")
    client.send("WHO #v6")
    assert client.expect("352").params[3] == "0::1"
    client.send("WHOIS six")
    assert client.expect("311").params[3] == "0::1"
    client.send("MODE #v6 +b *!*@0::1")
    client.send("NICK seven")
    client.expect("NICK")
    client.send("WHOWAS six")
    assert client.expect("314").params[3] == "0::1"
    other = IrcTestClient(server.ports[0][1], host="::1")
    other.register("other")
    other.send("JOIN #v6")
    assert other.expect("474").params[1] == "#v6"     # the ban from WHO's host holds
    other.close()
    client.close()


def test_stalled_worker_is_dropped_by_the_broker_bound(make_server):
    """The broker's buffer per worker is bounded: a worker that stops reading
    its link (SIGSTOP) is dropped, and nobody else waits for it."""
    server = make_server(config_text="[limits]\nbroker_buffer_bytes = 65536\n"
                                     "flood_burst = 100000\nflood_rate = 100000.0\n")
    alice = IrcTestClient(server.port)
    alice.register("alice")
    alice.join("#room")
    frozen = IrcTestClient(server.port)
    frozen.register("frozen")
    frozen.join("#room")
    alice.expect("JOIN")
    pid = worker_pid(server, "frozen")
    os.kill(pid, signal.SIGSTOP)
    try:
        for index in range(2000):
            alice.send(f"PRIVMSG #room :{index} " + "y" * 300)
            if index % 250 == 249:
                alice.sync(f"s{index}")
        alice.sync("end")
        quits = [m for m in alice.history if m.command == "QUIT"]
        assert [(m.prefix.split("!")[0], m.params) for m in quits] == \
            [("frozen", ["Max SendQ exceeded"])]
    finally:
        os.kill(pid, signal.SIGCONT)
    closing = frozen.expect(lambda m: m.command == "ERROR", 10)
    assert "Max SendQ exceeded" in closing.params[0]
    alice.close()
    frozen.close()


def test_room_and_member_bounds_answer_with_numerics(make_server):
    server = make_server(config_text="[limits]\nrooms_per_client = 2\nmembers_per_room = 2\n"
                                     "bans_per_room = 1\nmax_rooms = 3\n"
                                     "flood_burst = 1000\nflood_rate = 1000.0\n")
    alice = IrcTestClient(server.port)
    alice.register("alice")
    alice.join("#a")
    alice.join("#b")
    alice.send("JOIN #c")
    alice.expect("405")
    bob = IrcTestClient(server.port)
    bob.register("bob")
    bob.join("#a")
    carol = IrcTestClient(server.port)
    carol.register("carol")
    carol.send("JOIN #a")
    carol.expect("471")
    carol.join("#c")
    carol.send("JOIN #d")
    carol.expect("405")
    alice.send("MODE #a +b x!*@*")
    alice.expect("MODE")
    alice.send("MODE #a +b y!*@*")
    alice.expect("478")
    for client in (alice, bob, carol):
        client.close()


def test_half_open_flood_of_connections_does_not_stop_service(make_server):
    server = make_server(config_text="[limits]\nregistration_timeout = 2\n")
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
    alice = IrcTestClient(server.port)
    alice.register("alice")
    alice.sync()
    for sock in idle:
        sock.close()
    alice.close()


def test_dual_stack_listener_takes_ipv4_too(make_server):
    server = make_server(listen=["[::]:0"])
    port = server.ports[0][1]
    four = IrcTestClient(port, host="127.0.0.1")
    assert "four!four@127.0.0.1" in four.register("four")[0].params[-1]
    six = IrcTestClient(port, host="::1")
    six.register("six")
    four.close()
    six.close()


def test_a_refusal_on_a_tls_listener_writes_no_plain_text(make_server, tmp_path):
    """Only a worker speaks TLS: a connection refused before one exists is
    closed without a word on a TLS port (a plain ERROR line would reach the
    client as a broken handshake), while the plain port still says why."""
    from tests.integration.test_tls import make_cert, start_tls_server
    os.chmod(tmp_path, 0o755)                 # readable after the drop to nobody
    cert, key = make_cert(str(tmp_path), "server")
    server = start_tls_server(make_server, cert, key, "[limits]\nmax_clients_per_ip = 1\n")
    holder = IrcTestClient(server.port_of("irc"))
    holder.register("holder")
    with socket.create_connection(("127.0.0.1", server.port_of("irc+tls")), timeout=5) as raw:
        assert raw.recv(200) == b""           # closed, nothing written
    assert "Too many connections" in refused_with(server.port_of("irc"))
    holder.close()


def test_a_reload_that_lowers_limits_refuses_new_ones_and_keeps_who_is_there(make_server):
    """forkchat.toml(5): max_clients_per_ip and rooms_per_client are 'reload'
    limits; lowered below what clients have, they refuse the next connection and
    the next join, and drop nobody and leave nobody's rooms."""
    limits = "[limits]\nmax_clients_per_ip = {}\nrooms_per_client = {}\n"
    server = make_server(config_text=limits.format(3, 3))
    kept = [IrcTestClient(server.port) for _ in range(2)]
    for index, client in enumerate(kept):
        client.register(f"kept{index}")
        client.join("#one")
        client.join("#two")
    mark = server.log_length()
    server.write_config(limits.format(1, 1))
    server.signal(signal.SIGHUP)
    server.wait_for_text("configuration reloaded", start=mark)
    server.wait_for_text("broker took the new configuration", start=mark)
    assert "Too many connections from your address" in refused_with(server.port)
    for client in kept:
        client.send("JOIN #three")
        assert client.expect("405").params[1] == "#three"
        client.send("PRIVMSG #two :still here")
        client.send("PART #one")
        assert client.expect("PART").params[0] == "#one"
    assert kept[0].expect("PRIVMSG").params == ["#two", "still here"]
    for client in kept:
        client.close()
