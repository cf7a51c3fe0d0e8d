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


def reaped_cpu_seconds(parent: psutil.Process) -> float:
    """CPU of the children `parent` has reaped: an exited worker's figure
    lives on there, whereas its own can no longer be read."""
    times = parent.cpu_times()
    return times.children_user + times.children_system


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
    # The worker exits once it has answered the held lines, at a moment no
    # reply tells (CI once read its CPU too late), so its CPU is read from
    # its parent after it has been reaped: the parent's count of reaped
    # children's CPU then holds all of the worker's, and no other child of
    # the spawner is reaped meanwhile (this is the server's only client).
    spawner = psutil.Process(worker.ppid())
    before = cpu_seconds(worker) + reaped_cpu_seconds(spawner)
    client.sock.sendall(b"".join(b"PING :p%d\r\n" % i for i in range(HELD_PINGS)))
    client.sock.shutdown(socket.SHUT_WR)
    last_but_one = f"p{HELD_PINGS - 2}"
    client.expect(lambda m: m.command == "PONG" and m.params[-1] == last_but_one, timeout=60)
    closing = client.expect_closed(timeout=10)
    pongs = [m.params[-1] for m in closing if m.command == "PONG"]
    assert pongs == [f"p{HELD_PINGS - 1}"], f"after p{HELD_PINGS - 2} the server answered {pongs}"
    gone, alive = psutil.wait_procs([worker], timeout=10)
    assert not alive, "the worker outlived its closed connection"
    used = reaped_cpu_seconds(spawner) - before
    client.close()
    assert used < 0.5, f"worker used {used:.2f} s of CPU while the server paced held lines"
