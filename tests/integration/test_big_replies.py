"""A reply to a client's own command is not held against its send queue.

LIST of a few thousand rooms, WHO of a big room (which irssi and weechat
send on every join) and the like are far more than `sendq_bytes` (256 KiB)
or `broker_buffer_bytes` (1 MiB): the client that asked must get the whole
reply and stay, while a client that does not read is still dropped when
other traffic piles up behind it.  The bounds are lowered here so that a
few hundred rooms, or a room of 100, are a big reply.
"""

from __future__ import annotations

import socket
import time

from tests.integration.chat_helpers import OPER_CONFIG, flood_until_dropped
from tests.integration.test_tls import TlsClient, certs, make_cert, start_tls_server, tls_port
from tests.support.ircclient import IrcTestClient

__all__ = ["certs"]      # a fixture, used by name

SMALL_BOUNDS = """
[limits]
sendq_bytes = 4096
broker_buffer_bytes = 8192
flood_burst = 100000
flood_rate = 100000.0
recvq_bytes = 65536
rooms_per_client = 1000
max_clients_per_ip = 200
connect_burst = 1000
connect_rate = 1000.0
"""
# The broker's bound as shipped: its overflow is not what is tested there.
SMALL_SENDQ = SMALL_BOUNDS.replace("broker_buffer_bytes = 8192\n", "")
ROOMS = 600
ROOMS_PER_OWNER = 150
TOPIC = "t" * 250
MEMBERS = 100
REALNAME = "r" * 100          # the most USER keeps
MOTD_LINES = 2000             # 372 lines of about 95 bytes: a reply of some 190 KB
# Pings every second, dropped after one more: a reply that takes a few
# seconds to read is past the ping timeout many times over.
QUICK_PINGS = "ping_interval = 1\nping_timeout = 1\n"
# No pings, and a stall watch of one second.
NO_PINGS = "ping_interval = 0\nping_timeout = 1\n"
SLOW_CHUNK = 1024
SLOW_PAUSE_S = 0.01           # at most 100 KB/s, as over a slow link


def small_window(client: IrcTestClient) -> None:
    """A small receive buffer, so that the kernel cannot take a big reply
    whole and the worker's own send queue must hold it."""
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)


def registered_small(port: int, nick: str, **kwargs) -> IrcTestClient:
    """A client with a small receive buffer, registered as `nick`."""
    client = IrcTestClient(port, **kwargs)
    small_window(client)
    client.register(nick)
    return client


class SmallWindowClient(IrcTestClient):
    """A client whose small receive buffer is set before it connects, so
    that the window it offers is small from the start: set after the
    connect, the kernel drops what the larger window already let in, and
    the MOTD of the registration alone took over 4 s of retransmissions."""

    def __init__(self, port: int, timeout: float) -> None:
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.settimeout(timeout)
        raw.connect(("127.0.0.1", port))
        self.sock = raw
        self.timeout = timeout
        self.buffer = b""
        self.nick = ""
        self.history = []


def registered_slow_reader(port: int) -> IrcTestClient:
    """The slow reader of the MOTD tests: a small window from the connect."""
    client = SmallWindowClient(port, timeout=10)
    client.register("slow")
    return client


def dropped_for_sendq(client: IrcTestClient) -> list:
    """The lines up to the close, which must end in the SendQ ERROR."""
    closing = client.expect_closed(timeout=10)
    assert closing[-1].command == "ERROR" and "Max SendQ exceeded" in closing[-1].params[0]
    return closing


def big_motd() -> str:
    """A [server] table whose MOTD is a reply of some 190 KB, more than
    the kernel holds for a client: the answer to MOTD, as big as a LIST of
    hundreds of rooms, with no other clients to make the rooms (and to
    keep alive)."""
    lines = "\\n".join(f"line {index:04d} " + "m" * 60 for index in range(MOTD_LINES))
    return f'[server]\nmotd = "{lines}"\n'


def read_slowly(client: IrcTestClient, command: str | None, timeout: float = 30.0) -> list:
    """The messages up to the first `command`, read SLOW_CHUNK bytes at a
    time with a pause between reads (a client on a slow link), sending
    nothing meanwhile.  Fails if the connection closes first, unless
    `command` is None: then all up to the close."""
    got: list = []
    deadline = time.monotonic() + timeout
    while True:
        while b"\n" in client.buffer:
            msg = client.read_msg()
            got.append(msg)
            if msg.command == command:
                return got
        assert time.monotonic() < deadline, f"no {command} in time; last {got[-3:]}"
        time.sleep(SLOW_PAUSE_S)        # the pace of the reader, not a wait for the server
        client.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = client.sock.recv(SLOW_CHUNK)
        except ConnectionResetError:
            data = b""
        if not data and command is None:
            return got
        assert data, f"connection closed before {command}; last {got[-3:]}"
        client.buffer += data


def make_rooms(port: int, count: int) -> list[IrcTestClient]:
    """`count` rooms with long topics, made in small steps by a few owners
    (the list of its rooms the broker sends a worker on each JOIN stays
    small, and each step's answer fits the lowered bounds with or without
    the fix).  Returns the owners; the first owns #r0."""
    owners = []
    for first in range(0, count, ROOMS_PER_OWNER):
        owner = IrcTestClient(port)
        owner.register(f"owner{first}")
        names = [f"#r{index}" for index in range(first, min(count, first + ROOMS_PER_OWNER))]
        for start in range(0, len(names), 10):
            owner.send("JOIN " + ",".join(names[start:start + 10]))
            owner.sync(f"j{start}")
        for index, name in enumerate(names):
            owner.send(f"TOPIC {name} :{TOPIC}")
            if index % 10 == 9:
                owner.sync(f"t{index}")
        owners.append(owner)
    return owners


def test_a_reading_client_gets_a_long_list_whole_and_stays(make_server):
    """Two LISTs of 600 rooms with 250-byte topics (about 170 KB each, 40
    times sendq_bytes) and a PING, sent at once: both lists come whole, in
    order, then the PONG (before the fix: 'Max SendQ exceeded')."""
    server = make_server(config_text=SMALL_BOUNDS)
    owners = make_rooms(server.port, ROOMS)
    names = [f"#r{index}" for index in range(ROOMS)]
    asker = registered_small(server.port, "asker", timeout=20)
    asker.send("LIST\r\nLIST\r\nPING :done")
    for _ in range(2):
        got = asker.collect_until("323")
        listed = [m for m in got if m.command == "322"]
        assert sorted(m.params[1] for m in listed) == sorted(names)
        assert all(m.params[-1].endswith(TOPIC) for m in listed)
    asker.expect(lambda m: m.command == "PONG" and m.params[-1] == "done")
    assert "asker closing" not in server.log_text()
    asker.close()
    for owner in owners:
        owner.close()


def test_a_tls_client_gets_a_long_list_whole(make_server, certs):
    """The same over TLS, where the worker hands OpenSSL one piece of its
    queue at a time (a quarter of sendq_bytes here)."""
    cert, key = make_cert(certs, "big")
    server = start_tls_server(make_server, cert, key, SMALL_BOUNDS)
    owners = make_rooms(server.port_of("irc"), ROOMS)
    asker = TlsClient(tls_port(server), cert, rcvbuf=4096)
    asker.timeout = 20.0
    asker.register("asker")
    asker.send("LIST\r\nPING :done")
    listed = [m for m in asker.collect_until("323") if m.command == "322"]
    assert sorted(m.params[1] for m in listed) == sorted(f"#r{i}" for i in range(ROOMS))
    asker.expect(lambda m: m.command == "PONG" and m.params[-1] == "done")
    asker.close()
    for owner in owners:
        owner.close()


def test_a_reading_client_gets_who_and_names_of_a_big_room(make_server):
    """WHO #room of 100 members with long real names (about 18 KB), as
    irssi sends after each join, and NAMES: the client gets every member
    and stays (before the fix the broker's bound dropped it)."""
    server = make_server(config_text=SMALL_BOUNDS)
    asker = registered_small(server.port, "asker", timeout=20)
    asker.join("#big")
    members = []
    for index in range(MEMBERS):
        member = socket.create_connection(("127.0.0.1", server.port))
        member.sendall(f"NICK m{index}\r\nUSER m{index} 0 * :{REALNAME}\r\n"
                       "JOIN #big\r\n".encode())
        members.append(member)
    try:
        for _ in range(MEMBERS):
            asker.expect("JOIN")
        asker.send("WHO #big\r\nNAMES #big\r\nPING :done")
        who = [m for m in asker.collect_until("315") if m.command == "352"]
        assert len(who) == MEMBERS + 1
        assert all(m.params[-1].endswith(REALNAME) for m in who if m.params[5] != "asker")
        names = asker.collect_until("366")
        nicks = {nick.lstrip("@+") for m in names if m.command == "353"
                 for nick in m.params[-1].split()}
        assert nicks == {"asker"} | {f"m{index}" for index in range(MEMBERS)}
        asker.expect(lambda m: m.command == "PONG" and m.params[-1] == "done")
    finally:
        for member in members:
            member.close()
    asker.close()


def test_a_client_that_does_not_read_is_still_dropped(make_server):
    """The reply is exempt, not the client: one that asks for a LIST and
    never reads is dropped with 'Max SendQ exceeded' once its room's talk
    piles up behind the reply, and finds the ERROR line when it reads."""
    server = make_server(config_text=SMALL_SENDQ)
    owners = make_rooms(server.port, ROOMS)
    owner = owners[0]
    owner.join("#room")
    stuck = registered_small(server.port, "stuck")
    stuck.join("#room")
    stuck.send("LIST")
    flood_until_dropped(owner, server, "stuck")
    dropped_for_sendq(stuck)
    for owner in owners:
        owner.close()
    stuck.close()


def test_a_client_that_takes_nothing_of_its_reply_is_dropped(make_server):
    """With no other traffic at all: a client that takes not one byte of its
    reply for ping_timeout seconds (1 here) is dropped with 'Max SendQ
    exceeded', whatever it sends meanwhile, and the reply is not kept."""
    server = make_server(config_text=SMALL_SENDQ + "ping_timeout = 1.0\n")
    owners = make_rooms(server.port, ROOMS)
    stuck = registered_small(server.port, "stuck")
    stuck.send("LIST")
    stuck.send("PING :still here")       # held behind the reply, keeps nothing alive
    server.wait_for_text("stuck closing: Max SendQ exceeded")
    closing = dropped_for_sendq(stuck)
    assert not any(m.command == "PONG" for m in closing)
    for owner in owners:
        owner.close()
    stuck.close()


def test_a_quit_sent_during_a_long_reply_gives_its_reason(make_server):
    """A client that sends QUIT in the middle of a LIST and closes (as
    irssi does after a few seconds, a script at once) leaves with its own
    reason.  The QUIT waits behind the reply, and the close of a socket with
    unread bytes resets the connection: before, its rooms read 'Write
    error: Broken pipe' (or 'Read error') instead."""
    server = make_server(config_text=SMALL_SENDQ)
    owners = make_rooms(server.port, ROOMS)
    owner = owners[0]
    owner.join("#room")
    leaver = registered_small(server.port, "leaver")
    leaver.join("#room")
    owner.expect(lambda m: m.command == "JOIN" and m.prefix.startswith("leaver!"))
    leaver.send("LIST")
    leaver.expect("322")           # the reply has begun; most of it waits
    leaver.send("QUIT :gone home")
    leaver.close()
    quit = owner.expect(lambda m: m.command == "QUIT" and m.prefix.startswith("leaver!"))
    assert quit.params[-1] == "Quit: gone home"
    for owner in owners:
        owner.close()


def test_a_quit_after_a_long_list_waits_for_it(make_server):
    """'LIST' and 'QUIT' sent at once by a client that reads to the end (a
    script): the whole list comes, then the ERROR of its QUIT."""
    server = make_server(config_text=SMALL_SENDQ)
    owners = make_rooms(server.port, ROOMS)
    asker = registered_small(server.port, "asker", timeout=20)
    asker.send("LIST\r\nQUIT :done")
    got = asker.expect_closed(timeout=20)
    assert len([m for m in got if m.command == "322"]) == ROOMS
    assert got[-1].command == "ERROR" and "Quit: done" in got[-1].params[0]
    for owner in owners:
        owner.close()


def test_a_client_that_half_closes_after_a_list_gets_it_whole(make_server):
    """'LIST', then the client closes its end (nc -N) and reads: the whole
    list comes before the ERROR.  Before, the worker left at once behind the
    request, and the broker dropped the answer with the link."""
    server = make_server(config_text=SMALL_SENDQ)
    owners = make_rooms(server.port, ROOMS)
    asker = registered_small(server.port, "asker", timeout=20)
    asker.send("LIST")
    asker.sock.shutdown(socket.SHUT_WR)
    got = asker.expect_closed(timeout=20)
    assert len([m for m in got if m.command == "322"]) == ROOMS
    assert got[-1].command == "ERROR" and "(Connection closed)" in got[-1].params[0]
    for owner in owners:
        owner.close()
    asker.close()


def test_a_tls_client_that_quits_during_a_long_reply_gives_its_reason(make_server, certs):
    """The same QUIT and close over TLS."""
    cert, key = make_cert(certs, "quit")
    server = start_tls_server(make_server, cert, key, SMALL_SENDQ)
    owners = make_rooms(server.port_of("irc"), ROOMS)
    owner = owners[0]
    owner.join("#room")
    leaver = TlsClient(tls_port(server), cert, rcvbuf=4096)
    leaver.register("leaver")
    leaver.join("#room")
    owner.expect(lambda m: m.command == "JOIN" and m.prefix.startswith("leaver!"))
    leaver.send("LIST")
    leaver.expect("322")
    leaver.send("QUIT :gone home")
    leaver.close()
    quit = owner.expect(lambda m: m.command == "QUIT" and m.prefix.startswith("leaver!"))
    assert quit.params[-1] == "Quit: gone home"
    for owner in owners:
        owner.close()


def check_slow_motd_reader(client: IrcTestClient, server, pings: int = 1) -> None:
    """MOTD and a PING sent at once, then read slowly for several ping
    timeouts: the whole MOTD comes, then the server's PING (queued behind
    the reply; `pings` of them), which is answered, then the PONG; the
    client stays."""
    client.send("MOTD\r\nPING :done")
    motd = read_slowly(client, "376")
    assert len([m for m in motd if m.command == "372"]) == MOTD_LINES
    after = read_slowly(client, "PONG")
    assert after[-1].params[-1] == "done"
    assert [m.command for m in after].count("PING") == pings
    for ping in (m for m in after if m.command == "PING"):
        client.send("PONG :" + ping.params[-1])
    client.sync("still here")
    assert "slow closing" not in server.log_text()


def test_a_client_that_reads_a_long_reply_slowly_keeps_its_sendq(make_server):
    """A reply read at a steady pace, with pings off and the stall watch at
    one second: the client takes bytes all the time, but the kernel holds
    some 130 KB and wakes the worker to send more only once a third of it
    is free, which took this reader longer than a second.  Before, it was
    dropped with 'Max SendQ exceeded' as if it took nothing."""
    server = make_server(config_text=big_motd() + SMALL_SENDQ + NO_PINGS)
    # The window is shrunk after the connect: the kernel's drops make this
    # reader slow enough (some 30 KB/s) to need the fix; the
    # SmallWindowClient reads too fast to tell.  Shrunk once registered,
    # so that the registration's MOTD is read at the usual speed.
    slow = IrcTestClient(server.port, timeout=10)
    slow.register("slow")
    small_window(slow)
    check_slow_motd_reader(slow, server, pings=0)
    slow.close()


def test_a_client_that_reads_a_long_reply_slowly_is_not_timed_out(make_server):
    """A reply (here 190 KB) that takes a slow link longer than ping_interval
    plus ping_timeout to read: a client that takes its bytes is alive, and
    its reply is read whole.  Before, the client could not see the server's
    PING behind the reply, nor could its lines be answered, and it was
    dropped with 'Ping timeout: 2 seconds' partway."""
    server = make_server(config_text=big_motd() + SMALL_SENDQ + QUICK_PINGS)
    slow = registered_slow_reader(server.port)
    check_slow_motd_reader(slow, server)
    slow.close()


def test_a_tls_client_that_reads_a_long_reply_slowly_is_not_timed_out(make_server, certs):
    """The same on a TLS listener."""
    cert, key = make_cert(certs, "slow")
    server = start_tls_server(make_server, cert, key, big_motd() + SMALL_SENDQ + QUICK_PINGS)
    slow = TlsClient(tls_port(server), cert, rcvbuf=4096)
    slow.timeout = 10.0
    slow.register("slow")
    check_slow_motd_reader(slow, server)
    slow.close()


def test_a_client_killed_while_it_reads_a_long_reply_is_told_why(make_server):
    """An operator's KILL (or a shutdown) in the middle of a reply read over
    a slow link: the rest of the reply is dropped, the KILL and the ERROR
    line come after what the kernel already held.  Before, the worker spent
    its last second sending more of the reply, and the client found it cut
    off mid-stream with no word of why."""
    server = make_server(config_text=big_motd() + SMALL_SENDQ + OPER_CONFIG)
    slow = registered_slow_reader(server.port)
    ircop = IrcTestClient(server.port)
    ircop.register("ircop")
    ircop.send("OPER admin pw")
    ircop.expect("381")
    slow.send("MOTD")
    read_slowly(slow, "372")
    ircop.send("KILL slow :enough")
    server.wait_for_text("slow closing: Killed")
    got = read_slowly(slow, None)
    assert got[-1].command == "ERROR" and "enough" in got[-1].params[0]
    assert [m.command for m in got[-2:]] == ["KILL", "ERROR"]
    assert [m.command for m in got[:-2]] == ["372"] * (len(got) - 2)
    assert len(got) - 2 < MOTD_LINES
    ircop.close()
    slow.close()
