"""Clients that never read, flood, or send garbage harm only themselves."""

import os
import random
import socket

import pytest

from tests.integration.chat_helpers import SMALL_SENDQ, flood_until_dropped
from tests.support.ircclient import IrcTestClient



def test_client_that_never_reads_is_dropped_and_nobody_waits(make_server):
    server = make_server(config_text=SMALL_SENDQ)
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", server.port))
    stuck.sendall(b"NICK stuck\r\nUSER s 0 * :S\r\nJOIN #room\r\n")
    alice = IrcTestClient(server.port)
    alice.register("alice")
    alice.join("#room")
    bob = IrcTestClient(server.port)
    bob.register("bob")
    bob.join("#room")
    text = "x" * 400
    quits = []
    for index in range(2000):
        alice.send(f"PRIVMSG #room :{index} {text}")
        if index % 100 == 99:
            # bob keeps reading and gets everything, in order, meanwhile
            for expected in range(index - 99, index + 1):
                msg = bob.expect(lambda m: m.command in ("PRIVMSG", "QUIT"), 10)
                while msg.command == "QUIT":
                    quits.append(msg)
                    msg = bob.expect(lambda m: m.command in ("PRIVMSG", "QUIT"), 10)
                assert msg.params[1].startswith(f"{expected} ")
    assert [(q.prefix.split("!")[0], q.params) for q in quits] == \
        [("stuck", ["Max SendQ exceeded"])]
    stuck.close()
    alice.close()
    bob.close()


def test_flooder_is_dropped_with_excess_flood(make_server):
    server = make_server(config_text="")
    flooder = IrcTestClient(server.port)
    flooder.register("flooder")
    witness = IrcTestClient(server.port)
    witness.register("witness")
    payload = b"".join(b"PRIVMSG witness :flood %d\r\n" % i for i in range(3000))
    try:
        flooder.sock.sendall(payload)
    except (BrokenPipeError, ConnectionResetError):
        pass
    closing = flooder.expect_closed(timeout=10)
    assert "Excess Flood" in closing[-1].params[0]
    witness.sync()
    flooder.close()
    witness.close()


def test_invalid_utf8_and_nul_are_answered_and_never_relayed(registered):
    alice = registered("alice")
    bob = registered("bob")
    alice.join("#room")
    bob.join("#room")
    alice.expect("JOIN")
    bob.send(b"PRIVMSG #room :bad \xff\xfe bytes\r\n")
    assert "UTF-8" in bob.expect("NOTICE").params[-1]
    bob.send(b"PRIVMSG #room :nul \x00 inside\r\n")
    assert "NUL" in bob.expect("NOTICE").params[-1]
    bob.send("PRIVMSG #room :clean")
    msg = alice.expect("PRIVMSG")
    assert msg.params == ["#room", "clean"]


def test_overlong_lines_get_417_and_the_client_goes_on(registered):
    alice = registered("alice")
    alice.send(b"PRIVMSG alice :" + b"y" * 600 + b"\r\n")
    alice.expect("417")
    alice.send(b"PRIVMSG alice :" + b"z" * 100_000 + b"\r\n")
    alice.expect("417")
    alice.send("PRIVMSG alice :short")
    assert alice.expect("PRIVMSG").params == ["alice", "short"]


def test_random_bytes_and_half_open_connections(server, registered):
    rng = random.Random(1459)
    for _ in range(5):
        junk = socket.create_connection(("127.0.0.1", server.port))
        junk.sendall(bytes(rng.randrange(256) for _ in range(4096)))
        junk.close()
    half = socket.create_connection(("127.0.0.1", server.port))
    half.shutdown(socket.SHUT_WR)
    half.close()
    alice = registered("alice")
    alice.sync()


def test_never_registers(make_server):
    server = make_server(config_text="[limits]\nregistration_timeout = 1\n")
    silent = IrcTestClient(server.port)
    closing = silent.expect_closed(timeout=5)
    assert "Registration timed out" in closing[-1].params[0]
    silent.close()


def test_stuck_reader_finds_the_error_line_when_it_reads_again(make_server):
    """The drop is told even to a client whose buffers were full."""
    server = make_server(config_text=SMALL_SENDQ)
    stuck = IrcTestClient(server.port)
    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.register("stuck")
    stuck.join("#room")
    alice = IrcTestClient(server.port)
    alice.register("alice")
    alice.join("#room")
    flood_until_dropped(alice, server, "stuck")
    closing = stuck.expect_closed(timeout=10)
    assert closing[-1].command == "ERROR" and "Max SendQ exceeded" in closing[-1].params[0]
    alice.close()
    stuck.close()


def test_a_bad_line_held_by_flood_control_is_answered_once(make_server):
    server = make_server(config_text="[limits]\nflood_burst = 2\nflood_rate = 5.0\n")
    client = IrcTestClient(server.port)
    client.register("throttled")          # uses the burst; the next lines wait
    client.send(b"PRIVMSG throttled :\xff bad\r\nPING :after\r\n")
    got = client.collect_until("PONG", 10)
    assert [m.command for m in got].count("NOTICE") == 1
    client.close()
