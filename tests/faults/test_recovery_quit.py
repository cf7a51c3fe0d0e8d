"""A client that quits while the broker restarts is still announced.

When the broker dies its workers reconnect to the next one and re-register
their clients (REREGISTER).  A client that quit in between (QUIT, or its
connection closed) had a worker that ended without re-registering it: the
next broker never knew it, and the members of its rooms never saw its QUIT
(their clients kept its nickname).  Its worker, closing, now says goodbye
to the next broker itself, its client re-registered first (forkchat(7)).
"""

import fcntl
import os
import select
import signal
import socket
import struct
import termios
import time

import pytest

from tests.faults.test_flood_generations import take_over
from tests.faults.test_kill_broker import wait_until_server_read
from tests.support.ircclient import IrcTestClient
from tests.support.server import broker_pid, worker_pid

QUITTERS = 8
CONFIG = "[limits]\nmax_clients_per_ip = 100\n"
# A recovery that waits for every worker as long as the test needs: at
# RECOVERY_WAIT_S (3 s) a slow machine ended it before alice's worker was
# back (or, alice's stopped, before bob's quit reached the broker), and
# the quits ran at once, unseen by her.
LONG_RECOVERY = "from forkchat import broker\nbroker.RECOVERY_WAIT_S = 60.0"


def room_with(server, count: int) -> tuple[IrcTestClient, list[IrcTestClient]]:
    """alice, who stays, and `count` others in #room with her."""
    alice = IrcTestClient(server.port)
    alice.register("alice")
    alice.join("#room")
    others = []
    for index in range(count):
        client = IrcTestClient(server.port)
        client.register(f"q{index}")
        client.join("#room")
        others.append(client)
    alice.expect(lambda m: m.command == "JOIN" and m.prefix.startswith(f"q{count - 1}!"))
    return alice, others


def quits_seen(alice: IrcTestClient, count: int) -> dict[str, str]:
    """The next `count` QUITs alice sees: nick -> reason."""
    seen: dict[str, str] = {}
    while len(seen) < count:
        msg = alice.expect("QUIT", 15)
        seen[msg.prefix.split("!")[0]] = msg.params[-1]
    return seen


def names(client: IrcTestClient) -> list[str]:
    client.send("NAMES #room")
    listed = client.expect("353").params[-1].split()
    client.expect("366")
    return sorted(name.lstrip("@+") for name in listed)


def wait_until_written_unread(worker: int, timeout: float = 10.0) -> None:
    """Until the link of `worker` to the (stopped) broker holds bytes the
    broker has not read: its goodbye.  That the worker read its client's
    QUIT was not enough: descheduled before it wrote, it wrote to the dead
    broker's closed link, and the test passed by another path (a link
    lost at the write), whatever the worker made of a reset.  SIOCOUTQ of
    a copy of the link counts what the peer has not read; without a copy
    (no pidfd_getfd), the read alone."""
    try:
        link = take_over(worker)
    except pytest.skip.Exception:
        return
    try:
        deadline = time.monotonic() + timeout
        while not struct.unpack("i", fcntl.ioctl(link.fileno(), termios.TIOCOUTQ,
                                                 bytes(4)))[0]:
            assert time.monotonic() < deadline, "the worker never wrote its goodbye"
            select.select([], [], [], 0.005)      # bounded poll of a kernel counter
    finally:
        link.close()


def test_clients_that_quit_as_the_broker_dies_are_announced(make_server):
    """Half quit with a reason, half close their end of the connection,
    all at the kill: each is announced with its own reason, by the next
    broker, to alice whenever she re-registered, and is gone from #room."""
    server = make_server(config_text=CONFIG, prelude=LONG_RECOVERY)
    alice, quitters = room_with(server, QUITTERS)
    first = broker_pid(server)
    mark = server.log_length()
    os.kill(first, signal.SIGKILL)
    for index, client in enumerate(quitters):
        if index % 2:
            client.sock.shutdown(socket.SHUT_WR)      # its end: the worker reads EOF
        else:
            client.send(f"QUIT :leaving {index}")
    broker_pid(server, after=mark)
    assert quits_seen(alice, QUITTERS) == {
        f"q{index}": "Connection closed" if index % 2 else f"Quit: leaving {index}"
        for index in range(QUITTERS)}
    assert names(alice) == ["alice"]
    for client in quitters:
        client.close()
    alice.close()


def test_a_quit_written_to_a_dying_broker_is_said_again_to_the_next(make_server):
    """The QUIT reached a broker that stopped and then died, its BYE
    unread: the worker hears the link reset and tells the next broker."""
    server = make_server(config_text=CONFIG, prelude=LONG_RECOVERY)
    alice, (bob,) = room_with(server, 1)
    bob.sync()              # its JOIN answered: its QUIT waits for no SYNC echo
    first = broker_pid(server)
    os.kill(first, signal.SIGSTOP)
    bob.send("QUIT :bye now")
    wait_until_server_read(server.port, bob.sock.getsockname()[1])
    wait_until_written_unread(worker_pid(server, "q0"))
    mark = server.log_length()
    os.kill(first, signal.SIGKILL)
    broker_pid(server, after=mark)
    assert quits_seen(alice, 1) == {"q0": "Quit: bye now"}
    assert names(alice) == ["alice"]
    bob.close()
    alice.close()


def test_a_quit_in_a_recovery_reaches_the_members_back_after_it(make_server):
    """bob quits while the next broker still waits for alice's worker
    (stopped): his worker re-registers him and says goodbye, and the quit
    waits for the end of the recovery, when alice is back to see it.  It
    ran at once, and alice, back later, kept bob in #room."""
    server = make_server(config_text=CONFIG, prelude=LONG_RECOVERY)
    alice, (bob,) = room_with(server, 1)
    bob.sync()
    stopped = worker_pid(server, "alice")
    os.kill(stopped, signal.SIGSTOP)
    try:
        mark = server.log_length()
        os.kill(broker_pid(server), signal.SIGKILL)
        broker_pid(server, after=mark)
        bob.send("QUIT :before alice is back")
        bob.expect_closed(10)        # after his worker's goodbye to the next broker
        assert "recovery done" not in "\n".join(server.log_text().split("\n")[mark:])
    finally:
        os.kill(stopped, signal.SIGCONT)
    assert quits_seen(alice, 1) == {"q0": "Quit: before alice is back"}
    assert names(alice) == ["alice"]
    bob.close()
    alice.close()
