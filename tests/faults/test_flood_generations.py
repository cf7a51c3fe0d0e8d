"""The broker holds each worker to twice the flood limits it was started
with, across a reload that lowered them and a broker restarted after it.

The worker's own flood control hides the broker's from a client of ours:
each test here takes a worker over as a bug its client found would (the
test holds a copy of its broker link, taken with pidfd_getfd, and sends
frames on it), and counts how many of its messages the broker lets
through at once.  A broker that held every worker to the highest limits
since the start let a worker started after a reload that lowered them, to
stop an abuse, send at twice the old rate until the server restarted.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import time

import pytest

from forkchat import broker, ipc
from tests.support.ircclient import IrcTestClient
from tests.support.server import ServerProcess, broker_pid, worker_pid

OLD_RATE, OLD_BURST = 10.0, 10
NEW_RATE, NEW_BURST = 1.0, 1
OLD_LIMITS = f"[limits]\nflood_burst = {OLD_BURST}\nflood_rate = {OLD_RATE}\n"
NEW_LIMITS = f"[limits]\nflood_burst = {NEW_BURST}\nflood_rate = {NEW_RATE}\n"
SYS_PIDFD_GETFD = 438       # the same number on every Linux architecture
FLOOD_LINES = 40


def take_over(pid: int) -> socket.socket:
    """A copy of worker `pid`'s link to the broker; the test is skipped
    where the kernel will not give one (before Linux 5.6, or no ptrace
    rights over the server, a child of the test)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        for name in os.listdir(f"/proc/{pid}/fd"):
            try:
                if not os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                    continue
            except OSError:
                continue
            fd = libc.syscall(SYS_PIDFD_GETFD, pidfd, int(name), 0)
            if fd < 0:
                pytest.skip(f"pidfd_getfd: {os.strerror(ctypes.get_errno())}")
            sock = socket.socket(fileno=fd)
            if sock.family == socket.AF_UNIX and b"forkchat-" in _peer(sock):
                return sock
            sock.close()
    finally:
        os.close(pidfd)
    raise AssertionError(f"worker {pid} holds no link to the broker")


def _peer(sock: socket.socket) -> bytes:
    try:
        name = sock.getpeername()
    except OSError:
        return b""
    return name if isinstance(name, bytes) else name.encode()


def flood(link: socket.socket, nick: str, bob: IrcTestClient) -> tuple[int, float]:
    """Send bob FLOOD_LINES messages at once as `nick`'s worker taken
    over; how many reached him before the answer to a WHOIS he sent once
    the first came (the broker runs what a worker's tokens allow in one
    go, then the rest as they come back), and the seconds since the
    flood was sent."""
    start = time.monotonic()
    link.sendall(b"".join(ipc.encode(ipc.Kind.REQUEST, f"PRIVMSG bob :{nick} {n}".encode())
                          for n in range(FLOOD_LINES)))

    def theirs(msg) -> bool:
        return msg.command == "PRIVMSG" and msg.prefix.startswith(f"{nick}!")
    bob.expect(theirs)
    bob.send("WHOIS bob")
    got = 1
    while bob.expect(lambda m: theirs(m) or m.command == "318").command != "318":
        got += 1
    return got, time.monotonic() - start


def most_at_once(rate: float, burst: int, seconds: float) -> float:
    """The most a worker started with these limits gets through the
    broker in `seconds` from a full bucket."""
    return broker.FLOOD_MARGIN * (burst + rate * seconds) + broker.FLOOD_OWN_FRAMES + 1


def test_after_a_reload_that_lowered_flood_limits_new_workers_get_the_new(make_server):
    """alice was accepted before the reload and keeps her pace through a
    broker restarted after it; carol, accepted after it while alice is
    still there, is held to the new limits at the broker, and so is dave,
    accepted after alice has gone."""
    server: ServerProcess = make_server(config_text=OLD_LIMITS)
    clients = {nick: IrcTestClient(server.port, timeout=20) for nick in ("alice", "bob")}
    links: list[socket.socket] = []
    try:
        for nick, client in clients.items():
            client.register(nick)
            client.join("#here")         # (bob sees alice leave)
        server.write_config(NEW_LIMITS)
        mark = server.log_length()
        server.signal(signal.SIGHUP)
        server.wait_for_text("configuration reloaded", start=mark)
        clients["carol"] = IrcTestClient(server.port, timeout=20)
        clients["carol"].register("carol")
        mark = server.log_length()
        os.kill(broker_pid(server), signal.SIGKILL)
        server.wait_for_text("recovery done", start=mark)
        bob = clients["bob"]

        links.append(take_over(worker_pid(server, "alice")))
        got, _seconds = flood(links[-1], "alice", bob)
        # her bucket's whole burst at once: twice the old one, and more
        # than a worker of the new limits ever gets at once
        assert got >= broker.FLOOD_MARGIN * OLD_BURST > most_at_once(NEW_RATE, NEW_BURST, 0)

        links.append(take_over(worker_pid(server, "carol")))
        got, seconds = flood(links[-1], "carol", bob)
        assert 1 <= got <= most_at_once(NEW_RATE, NEW_BURST, seconds), (got, seconds)

        clients.pop("alice").send("QUIT :bye")
        bob.expect(lambda m: m.command == "QUIT" and m.prefix.startswith("alice!"))
        clients["dave"] = IrcTestClient(server.port, timeout=20)
        clients["dave"].register("dave")
        links.append(take_over(worker_pid(server, "dave")))
        got, seconds = flood(links[-1], "dave", bob)
        assert 1 <= got <= most_at_once(NEW_RATE, NEW_BURST, seconds), (got, seconds)
    finally:
        for sock in links:
            sock.close()
        for client in clients.values():
            client.close()
