"""Clients that half-close, reset or stop reading cost their own worker only,
and neither a spinning core nor a lost line."""

from __future__ import annotations

import socket

import psutil

from tests.support.ircclient import IrcTestClient


def worker_of(server, client: IrcTestClient) -> psutil.Process:
    """The worker process that holds this client's connection."""
    port = client.sock.getsockname()[1]
    for process in server.descendants():
        try:
            connections = process.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if any(c.raddr and c.raddr.port == port for c in connections):
            return process
    raise AssertionError(f"no worker holds the connection from port {port}")


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


# 3 tokens left after NICK and USER, then 20 lines a second: the 100 held
# PINGs below take the server about 5 s to answer.
PACED = "[limits]\nflood_burst = 5\nflood_rate = 20.0\n"
HELD_PINGS = 100


def test_half_closed_client_with_held_lines_does_not_spin(make_server):
    """After SHUT_WR the socket is always writable: it must not be watched for that."""
    server = make_server(config_text=PACED)
    client = IrcTestClient(server.port, timeout=30)
    client.register("half")
    worker = worker_of(server, client)
    before = cpu_seconds(worker)
    client.sock.sendall(b"".join(b"PING :p%d\r\n" % i for i in range(HELD_PINGS)))
    client.sock.shutdown(socket.SHUT_WR)
    # Read the CPU at the last but one answer: the worker is then still
    # alive, pacing the last line, whereas after the last answer it may
    # already have closed and exited.
    last_but_one = f"p{HELD_PINGS - 2}"
    client.expect(lambda m: m.command == "PONG" and m.params[-1] == last_but_one, timeout=60)
    used = cpu_seconds(worker) - before
    closing = client.expect_closed(timeout=10)
    pongs = [m.params[-1] for m in closing if m.command == "PONG"]
    assert pongs == [f"p{HELD_PINGS - 1}"], f"after p{HELD_PINGS - 2} the server answered {pongs}"
    client.close()
    assert used < 0.5, f"worker used {used:.2f} s of CPU while the server paced held lines"
