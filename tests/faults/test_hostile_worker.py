"""A worker taken over through its client, speaking the frame protocol to a
real broker: it must not crash the broker, nor get more than its client
could over IRC.

design.md: every client is crash-isolated in its own process.  A worker
taken over (by a bug its client found) is still a process of the server
and passes the broker's checks of who may connect; what it sends from
then on is nobody's word but its own.  Each test here is such a worker:
the test process connecting to an in-process Broker (tests.unit.
test_broker_cid's Harness), sending frames no worker of ours would.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import selectors
import signal
import socket
import time

import pytest

from forkchat import broker, flood, ipc, protocol
from tests.support.ircclient import IrcTestClient
from tests.support.server import broker_pid
from tests.unit.test_broker_cid import PEER, Harness, hello


@pytest.fixture
def harness(tmp_path):
    made = Harness(tmp_path)
    made.bind((2, os.getpid()))          # the test process serves conn 2
    yield made
    made.close()


@pytest.fixture
def no_flood_control(monkeypatch):
    """The broker's own flood control out of the way of a test of another bound."""
    monkeypatch.setattr(broker, "FLOOD_MARGIN", 1_000_000)


def closed_soon(harness: Harness, sock: socket.socket) -> bool:
    """Turn the broker's loop until it closes `sock` (True) or 5 s pass:
    a frame of 100 kB takes it two reads."""
    return closed_within(harness, sock, 5.0, 0.05)


def closed_within(harness: Harness, sock: socket.socket, seconds: float, step: float) -> bool:
    """Turn the broker's loop, `step` at a time, reading what it sends,
    until it closes `sock` (True) or `seconds` pass."""
    deadline = time.monotonic() + seconds
    sock.setblocking(False)
    while time.monotonic() < deadline:
        harness.turn(step)
        try:
            if sock.recv(1 << 20) == b"":
                return True
        except BlockingIOError:
            pass
        except ConnectionResetError:
            return True
    return False


def broken_link_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "broker link of" in r.getMessage()]


@pytest.mark.parametrize("kind", [ipc.Kind.HELLO, ipc.Kind.REGISTER, ipc.Kind.OPER,
                                  ipc.Kind.OPER_FAILED])
def test_json_nested_too_deep_closes_that_link_only(harness, caplog, kind):
    """json raises RecursionError, not ValueError, at some thousand levels:
    it went out of the broker's loop, and the broker died."""
    caplog.set_level(logging.ERROR, logger="forkchat.broker")
    first = [] if kind == ipc.Kind.HELLO else [hello(2)]
    sock = harness.worker(*first, ipc.encode(kind, b"[" * 100000))
    assert closed_soon(harness, sock)
    assert 2 not in harness.broker.links
    assert broken_link_lines(caplog) == [
        f"broker link of {'pid %d' % os.getpid() if kind == ipc.Kind.HELLO else 'conn 2'}: "
        "control frame is not JSON"]
    again = harness.worker(hello(2), ipc.encode(ipc.Kind.SYNC, b"x"))     # the broker goes on
    assert ipc.FrameReader().feed(again.recv(4096)) == [(ipc.Kind.SYNC, b"x")]


def registered(nick: str = "mallory") -> list[bytes]:
    """The frames of a worker whose client registered as `nick`."""
    return [hello(2), ipc.encode(ipc.Kind.REQUEST, f"NICK {nick}".encode()),
            ipc.encode_json(ipc.Kind.REGISTER, {"user": "m", "realname": "M"})]


def test_a_request_longer_than_an_irc_line_closes_that_link_only(harness, caplog):
    """The worker answers 417 to a line over 512 bytes and forwards none.
    A worker taken over sends a megabyte: 'LIST >' with 5000 digits raised
    ValueError (int() of more than 4300 digits) out of the broker's loop."""
    caplog.set_level(logging.ERROR, logger="forkchat.broker")
    line = b"LIST >" + b"9" * 5000
    sock = harness.worker(*registered(), ipc.encode(ipc.Kind.REQUEST, line))
    assert closed_soon(harness, sock)
    assert 2 not in harness.broker.links and not harness.broker.state.clients
    assert broken_link_lines(caplog) == [
        f"broker link of conn 2: REQUEST of {len(line)} bytes, longer than an IRC line"]
    again = harness.worker(hello(2), ipc.encode(ipc.Kind.SYNC, b"x"))     # the broker goes on
    assert ipc.FrameReader().feed(again.recv(4096)) == [(ipc.Kind.SYNC, b"x")]


def test_a_request_of_a_whole_line_is_served(harness):
    """512 bytes, CRLF included, is still a line."""
    line = b"PRIVMSG mallory :" + b"x" * (510 - len(b"PRIVMSG mallory :")) + b"\r\n"
    sock = harness.worker(*registered(), ipc.encode(ipc.Kind.REQUEST, line),
                          ipc.encode(ipc.Kind.SYNC, b"y"))
    assert (ipc.Kind.SYNC, b"y") in frames_until_sync(harness, sock)
    assert 2 in harness.broker.links


def frames_until_sync(harness: Harness, sock: socket.socket) -> list[tuple[int, bytes]]:
    """What the broker sends the link, up to its echo of a SYNC."""
    reader, frames = ipc.FrameReader(), []
    sock.setblocking(False)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(k == ipc.Kind.SYNC for k, _ in frames):
        harness.turn(0.05)
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            continue
        assert data, "the broker closed the link"
        frames += reader.feed(data)
    return frames


def test_a_worker_that_reads_nothing_gets_no_more_than_its_bound(harness, no_flood_control):
    """The replies to a client's own commands are not held against the
    link's bound: its worker asks nothing more before a reply has gone.
    One taken over asks on and reads nothing; a MOTD after MOTD grew the
    broker's memory by megabytes a second, without end.  Its frames now
    wait, unread, until it reads, and then every one is answered."""
    asked = 50000
    sock = harness.worker(*registered())
    link = harness.broker.links[2]
    limit = link.writer.limit
    frames = ipc.encode(ipc.Kind.REQUEST, b"MOTD") * asked
    sock.setblocking(False)
    sent, most, refused = 0, 0, 0
    deadline = time.monotonic() + 20
    while sent < len(frames) and refused < 50 and most <= limit + 4096 \
            and time.monotonic() < deadline:
        try:
            sent += sock.send(frames[sent:])
            refused = 0
        except BlockingIOError:
            refused += 1                # the broker reads no more of it
        harness.turn(0.001)
        most = max(most, link.writer.pending)
    assert most <= limit + 4096, (most, limit)
    assert sent < len(frames) and link.stalled is not None
    ends = send_and_read(harness.turn, sock, frames, sent, deadline, asked + 1,   # now it reads
                         lambda payload: payload.count(b" 376 ") + payload.count(b" 422 "))
    assert ends == asked + 1            # (and the welcome's)
    assert link.stalled is None and not link.closed


def send_and_read(turn, sock: socket.socket, frames: bytes, sent: int, deadline: float,
                  wanted: int, count) -> int:
    """Send the rest of `frames` as the broker takes them, turning its loop,
    and read its REPLY frames until `count` of their payloads adds up to
    `wanted` (or the deadline); returns the sum."""
    reader, got = ipc.FrameReader(), 0
    while got < wanted and time.monotonic() < deadline:
        if sent < len(frames):
            try:
                sent += sock.send(frames[sent:])
            except BlockingIOError:
                pass
        turn(0.001)
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            continue
        assert data, "the broker closed the link"
        got += sum(count(payload) for kind, payload in reader.feed(data)
                   if kind == ipc.Kind.REPLY)
    return got


def test_register_takes_a_user_and_real_name_as_a_worker_cuts_them(harness):
    """The worker keeps USER's real name to 100 characters and its user name
    to 16 of [A-Za-z0-9_.-].  One taken over sent a megabyte, which the
    broker kept, and kept in WHOWAS after the client left: 5000 entries
    of a megabyte each, from one worker reconnecting."""
    sock = harness.worker(hello(2), ipc.encode(ipc.Kind.REQUEST, b"NICK mallory"),
                          ipc.encode_json(ipc.Kind.REGISTER,
                                          {"user": "*?#\u00e9" * 20 + "m", "realname": "r" * 100000}))
    assert not closed_soon_or_quiet(harness, sock)
    client = harness.broker.state.clients[2]
    assert client.registered and client.user == "m" and client.realname == "r" * 100
    sock.sendall(ipc.encode(ipc.Kind.BYE, b"bye"))
    assert closed_soon(harness, sock)
    assert harness.broker.state.whowas["mallory"][-1].realname == "r" * 100


def test_reregister_takes_no_more_than_a_client_of_ours_could_have(tmp_path):
    """A worker the broker took over from a dead one restores its client
    once, as it states it (forkchat(7)); what it states is cut to what a
    client could have had: no megabyte of real name or away message, no
    nickname or room name past the configuration's ceiling."""
    made = Harness(tmp_path, expected=((2, os.getpid(), PEER), (3, 1, PEER)))
    try:
        identity = {"nick": "mallory", "user": "m", "host": PEER, "realname": "r" * 100000,
                    "away": "a" * 100000, "modes": "", "registered": True,
                    "rooms": {"#ok": "@", "#" + "x" * 5000: "@", "#odd": 5}}
        sock = made.worker(hello(2, reregister=True),
                           ipc.encode_json(ipc.Kind.REREGISTER, identity))
        assert not closed_soon_or_quiet(made, sock)
        client = made.broker.state.clients[2]
        assert client.nick == "mallory" and client.realname == "r" * 100
        assert client.away == "a" * made.broker.state.settings.awaylen
        assert list(client.joined) == ["#ok"]
        assert sorted(made.broker.state.rooms) == ["#ok"]
    finally:
        made.close()


def test_reregister_of_a_nick_no_configuration_allows_restores_none(tmp_path):
    made = Harness(tmp_path, expected=((2, os.getpid(), PEER), (3, 1, PEER)))
    try:
        identity = {"nick": "m" * 100000, "user": "m", "realname": "M", "registered": True,
                    "rooms": {"#ok": "@"}}
        sock = made.worker(hello(2, reregister=True),
                           ipc.encode_json(ipc.Kind.REREGISTER, identity))
        assert not closed_soon_or_quiet(made, sock)
        client = made.broker.state.clients[2]
        assert not client.registered and not client.nick and not made.broker.state.nicks
        assert not made.broker.state.rooms
    finally:
        made.close()


def closed_soon_or_quiet(harness: Harness, sock: socket.socket) -> bool:
    """Turn the broker's loop for a moment, reading what it sends: True if
    it closed the link."""
    return closed_within(harness, sock, 0.3, 0.02)


def test_oper_frames_log_the_client_becoming_operator_once(harness, caplog):
    """The worker checks OPER's password (an owner's decision, forkchat(7));
    the broker's log line is the trace of it.  A worker taken over sent
    OPER after OPER, each a line of the log, with a name of 100 kB."""
    caplog.set_level(logging.INFO, logger="forkchat.broker")
    oper = ipc.encode_json(ipc.Kind.OPER, {"name": "n" * 100000})
    sock = harness.worker(*registered())
    send_turning(harness, sock, oper * 20)
    assert not closed_soon_or_quiet(harness, sock)
    assert "o" in harness.broker.state.clients[2].modes
    lines = [r.getMessage() for r in caplog.records if "operator" in r.getMessage()]
    assert lines == ["conn 2 became operator " + "n" * 64]


def send_turning(harness: Harness, sock: socket.socket, data: bytes) -> None:
    """Send more than the socket holds, the broker's loop turning meanwhile
    (it reads what the test sends as it goes; the test reads nothing)."""
    sock.setblocking(False)
    sent, deadline = 0, time.monotonic() + 10
    while sent < len(data) and time.monotonic() < deadline:
        try:
            sent += sock.send(data[sent:])
        except BlockingIOError:
            pass
        harness.turn(0.01)
    assert sent == len(data)


def test_a_worker_gets_no_more_held_than_one_read_during_a_recovery(tmp_path, no_flood_control):
    """Until every worker alive at a broker's death is back (3 s at most),
    the new broker holds every frame but HELLO and REREGISTER.  A worker
    taken over sent frames as fast as the broker read them, each held:
    its memory grew without a bound.  Now a link with frames held is read
    no more until the recovery ends, and then all it sent runs, in order."""
    made = Harness(tmp_path, expected=((2, os.getpid(), PEER), (3, 1, PEER)))
    try:
        sock = made.worker(hello(2, reregister=True))     # its REREGISTER never comes
        asked = 100000
        frames = ipc.encode(ipc.Kind.REQUEST, b"MOTD") * asked
        sock.setblocking(False)
        sent, refused = 0, 0
        deadline = time.monotonic() + 20
        while sent < len(frames) and refused < 50 and time.monotonic() < deadline:
            try:
                sent += sock.send(frames[sent:])
                refused = 0
            except BlockingIOError:
                refused += 1
            made.turn(0.001)
        assert made.broker.awaiting == {2, 3}
        assert len(made.broker.held) <= broker.READ_BYTES // len(frames[:9]) + 1
        assert sent < len(frames)
        made.broker.awaiting.clear()        # RECOVERY_WAIT_S passed, as in Broker.run
        made.broker._end_recovery()
        answers = send_and_read(made.turn, sock, frames, sent, deadline, asked,
                                lambda payload: payload.count(b" 451 "))
        assert answers == asked         # (not registered: each MOTD is answered 451)
    finally:
        made.close()


def test_a_worker_gets_its_frames_run_at_twice_its_clients_flood_rate(harness):
    """Flood control is the worker's: its client's lines go at flood_rate
    (2 a second) after a burst of flood_burst (10).  A worker taken over
    sent a room's messages as fast as the broker read them, each to every
    member, whose links overflowed.  The broker runs a worker's frames at
    twice its client's rate and burst (and 10 frames of its own); the rest
    wait, unread, and run in their turn."""
    st, out = harness.broker.state, harness.broker.outbox
    st.connect(1, "192.0.2.1")
    st.request(1, protocol.parse_line(b"NICK victim"), out)
    st.register(1, "v", "V", out)
    st.request(1, protocol.parse_line(b"JOIN #room"), out)
    start = time.monotonic()
    sock = harness.worker(*registered(), ipc.encode(ipc.Kind.REQUEST, b"JOIN #room"))
    send_turning(harness, sock, ipc.encode(ipc.Kind.REQUEST, b"PRIVMSG #room :flood") * 2000)
    while time.monotonic() - start < 1.0:
        loop_turn(harness)
    ran = harness.broker.command_counts.get("PRIVMSG", 0)
    burst = 2 * 10 + 10 - 4             # HELLO, NICK, REGISTER and JOIN took 4
    assert burst <= ran <= burst + 4 * (time.monotonic() - start) + 1, ran
    while time.monotonic() - start < 2.0:
        loop_turn(harness)
    assert harness.broker.command_counts["PRIVMSG"] >= ran + 2       # in their turn
    assert not harness.broker.links[2].closed


def test_a_worker_counted_after_a_reload_that_lowered_flood_control_keeps_the_old_pace(harness):
    """A reload lowers flood_rate and flood_burst for the connections after
    it; a worker started before keeps its own.  The broker made a worker's
    bucket from the running limits when it first counted one of its frames:
    after such a reload, a worker a retired spawner started with the
    previous configuration, or one whose first frame came after it, was
    held below its own pace.  The supervisor names each worker to the
    broker with the limits it was started with."""
    limits = dataclasses.replace(harness.broker.cfg.limits, flood_rate=1.0, flood_burst=1)
    harness.supervisor_end.sendall(
        ipc.encode_json(ipc.Kind.CONTROL, {"op": "bind",
                                           "workers": [[2, os.getpid(), PEER, 2.0, 10]]})
        + ipc.encode(ipc.Kind.CONFIG, pickle.dumps(
            dataclasses.replace(harness.broker.cfg, limits=limits))))
    harness.broker.on_control(selectors.EVENT_READ)
    assert harness.broker.cfg.limits.flood_burst == 1
    start = time.monotonic()
    sock = harness.worker(*registered())
    send_turning(harness, sock, ipc.encode(ipc.Kind.REQUEST, b"PRIVMSG mallory :x") * 500)
    ran = harness.broker.command_counts.get("PRIVMSG", 0)
    burst = 2 * 10 + 10 - 3             # HELLO, NICK and REGISTER took 3
    assert burst <= ran <= burst + 4 * (time.monotonic() - start) + 1, ran


def loop_turn(harness: Harness) -> None:
    """A turn of the broker's loop with the chore of Broker.run's that the
    harness leaves out: the links whose flood control let them go on."""
    harness.turn(min(0.05, harness.broker._timeout()))
    if harness.broker.flood_stalled:
        harness.broker._resume_flood_stalled()


def test_a_link_held_by_its_output_once_its_tokens_are_back_does_not_spin_the_loop(harness):
    """A link stalled for flood control wakes the loop when its next token
    is due; once it is, its output may still hold it (its worker reads
    nothing).  Kept among those the loop wakes for, it asked for a wake-up
    at once every turn: the broker spun a core."""
    sock = harness.worker(*registered())
    link = harness.broker.links[2]
    link.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)   # the kernel holds little
    send_turning(harness, sock, ipc.encode(ipc.Kind.REQUEST, b"MOTD") * 100)
    assert link in harness.broker.flood_stalled
    link.writer.limit = 100             # and its output is over the bound now
    harness.broker.next_beat = time.monotonic() + 60      # no heartbeat due meanwhile
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        loop_turn(harness)
    assert link.stalled is not None and harness.broker._token_wait(link) == 0
    assert harness.broker._timeout() > 1


FAST_CLIENTS = "[limits]\nflood_burst = 20\nflood_rate = 20.0\n"
SLOW_CLIENTS = "[limits]\nflood_burst = 1\nflood_rate = 1.0\n"


def test_a_client_of_before_a_reload_that_lowered_flood_control_keeps_its_pace(make_server):
    """A client keeps the flood control it was accepted with (its worker
    makes it once); a reload that lowers flood_rate and flood_burst is for
    the connections after it.  A broker restarted after such a reload made
    every worker's bucket from the new limits: 60 lines of a client
    accepted before it, sent at its 20 a second, ran at 2 a second, 29 s
    instead of 2 (and one that could not answer a PING meanwhile could
    time out).  The broker holds workers to the highest limits since the
    start.  Counted, not timed: bob's worker answers his 100 PINGs at the
    same pace as alice's lets her 60 lines go, 2 s longer; all of them
    reach him before the last PONG."""
    lines, pings = 60, 100
    server = make_server(config_text=FAST_CLIENTS)
    alice, bob = IrcTestClient(server.port, timeout=20), IrcTestClient(server.port, timeout=20)
    try:
        alice.register("alice")
        bob.register("bob")
        server.write_config(SLOW_CLIENTS)
        mark = server.log_length()
        server.signal(signal.SIGHUP)
        server.wait_for_text("configuration reloaded", start=mark)
        mark = server.log_length()
        os.kill(broker_pid(server), signal.SIGKILL)
        server.wait_for_text("recovery done", start=mark)
        alice.send("".join(f"PRIVMSG bob :line {n}\r\n" for n in range(lines)).encode())
        bob.send(b"PING :tick\r\n" * pings)
        got, pongs = 0, 0
        while pongs < pings:
            msg = bob.expect(lambda m: m.command in ("PRIVMSG", "PONG"))
            got += msg.command == "PRIVMSG"
            pongs += msg.command == "PONG"
        assert got == lines
    finally:
        alice.close()
        bob.close()


def quit_reasons(harness: Harness, monkeypatch) -> list[str]:
    """The reasons the broker's clients quit with, from now on."""
    reasons: list[str] = []
    disconnect = harness.broker.state.disconnect
    monkeypatch.setattr(harness.broker.state, "disconnect",
                        lambda cid, reason, out: reasons.append(reason)
                        or disconnect(cid, reason, out))
    return reasons


@pytest.mark.parametrize("way", ["gone", "hangup"])
def test_a_gone_worker_waiting_for_its_flood_control_leaves_at_once(harness, caplog,
                                                                     monkeypatch, way):
    """A link waiting for its flood control is not read, so nothing told
    the broker its worker was gone: the client stayed, nick and rooms,
    while what the worker had sent ran at the flood rate.  The
    supervisor's word that the worker is gone, or a write to its link that
    fails, closes it at once; then all it had sent ran at once, flood
    control or not (a worker that filled its socket and exited had 5000
    room messages run in 0.05 s: a burst for each connection taken over).
    Now what its tokens allow runs, then its BYE alone (the client's quit
    reason); the rest is dropped, logged once with a count.  A worker of
    ours never has frames waiting for the broker's flood control."""
    caplog.set_level(logging.ERROR, logger="forkchat.broker")
    reasons = quit_reasons(harness, monkeypatch)
    start = time.monotonic()
    sock = harness.worker(*registered())
    send_turning(harness, sock, ipc.encode(ipc.Kind.REQUEST, b"PRIVMSG mallory :x") * 500
                 + ipc.encode(ipc.Kind.BYE, b"Quit: so long"))
    assert harness.broker.links[2] in harness.broker.flood_stalled
    ran = harness.broker.command_counts["PRIVMSG"]
    if way == "gone":
        harness.supervisor_end.sendall(ipc.encode_json(
            ipc.Kind.CONTROL, {"op": "gone", "cid": 2, "pid": os.getpid()}))
        harness.broker.on_control(selectors.EVENT_READ)
    else:                               # its worker exited; the broker writes to it
        sock.close()
        harness.broker.queue(2, ipc.encode(ipc.Kind.DELIVER, b":x PRIVMSG mallory :hi"))
        harness.broker._flush_dirty()
    assert 2 not in harness.broker.links and 2 not in harness.broker.state.clients
    after = harness.broker.command_counts["PRIVMSG"]
    assert ran <= after <= ran + 4 * (time.monotonic() - start) + 1, (ran, after)
    assert reasons == ["Quit: so long"]
    assert [r.getMessage() for r in caplog.records] == [
        f"conn 2: its worker exited with {500 - after} frames over its flood control, "
        "dropped"]
    assert not harness.broker.flood_stalled
    assert not harness.broker.buckets or way == "hangup"      # (until the supervisor's word)


def test_a_gone_workers_link_leaves_though_a_process_it_forked_holds_it(harness, caplog,
                                                                        monkeypatch):
    """The supervisor's word that a worker is gone closed its link only if
    it waited for its flood control; any other waited for its end of file.
    A worker taken over forks, and its child holds the link and sends on
    after the worker has exited: its client stayed, nick and rooms, for
    as long as that child liked, at twice the flood rate, or flooded with
    the broker's bucket of that worker made anew.  What it had sent when
    the word came runs as its tokens allow, then its BYE; nothing later."""
    caplog.set_level(logging.ERROR, logger="forkchat.broker")
    reasons = quit_reasons(harness, monkeypatch)
    start = time.monotonic()
    sock = harness.worker(*registered())
    sock.sendall(ipc.encode(ipc.Kind.REQUEST, b"PRIVMSG mallory :x") * 500
                 + ipc.encode(ipc.Kind.BYE, b"Quit: gone"))        # not read yet
    harness.supervisor_end.sendall(ipc.encode_json(
        ipc.Kind.CONTROL, {"op": "gone", "cid": 2, "pid": os.getpid()}))
    harness.broker.on_control(selectors.EVENT_READ)
    assert 2 not in harness.broker.links and 2 not in harness.broker.state.clients
    ran = harness.broker.command_counts["PRIVMSG"]
    assert ran <= 2 * 10 + 10 - 3 + 4 * (time.monotonic() - start) + 1, ran
    assert reasons == ["Quit: gone"]
    assert [r.getMessage() for r in caplog.records] == [
        f"conn 2: its worker exited with {500 - ran} frames over its flood control, dropped"]
    assert not harness.broker.buckets and not harness.broker.flood_stalled


class EndlessWriter:
    """A link's socket whose peer writes on without end (a process the
    worker forked): every read brings more frames."""

    def __init__(self, sock: socket.socket, frame: bytes) -> None:
        self.sock, self.data, self.reads = sock, frame * (broker.READ_BYTES // len(frame)), 0

    def recv(self, size: int) -> bytes:
        self.reads += 1
        return self.data[:size]

    def __getattr__(self, name: str):
        return getattr(self.sock, name)


def test_a_gone_workers_link_is_read_for_its_goodbye_a_bounded_while(harness, caplog):
    """Its link is read for its last frames when its worker is gone: one a
    process it forked still writes to held the broker's loop for ever."""
    caplog.set_level(logging.ERROR, logger="forkchat.broker")
    harness.worker(*registered())
    link = harness.broker.links[2]
    link.sock = EndlessWriter(link.sock, ipc.encode(ipc.Kind.REQUEST, b"PRIVMSG mallory :x"))
    harness.supervisor_end.sendall(ipc.encode_json(
        ipc.Kind.CONTROL, {"op": "gone", "cid": 2, "pid": os.getpid()}))
    harness.broker.on_control(selectors.EVENT_READ)
    assert link.closed and 2 not in harness.broker.state.clients
    assert link.sock.reads == broker.LEFT_READ_BYTES // broker.READ_BYTES


def test_a_gone_workers_last_lines_within_its_flood_control_all_run(harness, caplog):
    """A worker that exits right after its client's last lines (a QUIT
    behind them), before the broker read them, has every one run."""
    caplog.set_level(logging.ERROR, logger="forkchat.broker")
    sock = harness.worker(*registered())
    sock.sendall(ipc.encode(ipc.Kind.REQUEST, b"PRIVMSG mallory :x") * 20
                 + ipc.encode(ipc.Kind.BYE, b"Quit: done"))
    sock.close()
    harness.broker.queue(2, ipc.encode(ipc.Kind.DELIVER, b":x PRIVMSG mallory :hi"))
    harness.broker._flush_dirty()
    assert 2 not in harness.broker.links
    assert harness.broker.command_counts["PRIVMSG"] == 20
    assert not caplog.records


def test_links_waiting_for_flood_control_cost_the_loop_a_look_per_worker_not_per_link(
        harness, monkeypatch):
    """A worker may open links to the broker as fast as it likes, each
    waiting for the one flood control of its process.  The loop looked at
    every such link each turn (the next token's time, whether it had
    come): a worker holding 2000 links cost every turn 3.5 ms, for all
    clients, and the broker raises its descriptor limit to the hard one.
    Their wait is their worker's, looked at once a turn; they still run
    in their turn."""
    sock = harness.worker(*registered())
    send_turning(harness, sock, ipc.encode(ipc.Kind.REQUEST, b"PRIVMSG mallory :x") * 100)
    extra = []
    for _ in range(50):
        each = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        harness.socks.append(each)
        each.connect(harness.address)
        each.sendall(ipc.encode(ipc.Kind.SYNC, b"s"))      # (before HELLO: refused when run)
        extra.append(each)
        harness.turn(0)
    for _ in range(20):
        harness.turn(0)
    assert harness.broker.links[2] in harness.broker.flood_stalled
    looks = []
    wait_time = flood.TokenBucket.wait_time
    monkeypatch.setattr(flood.TokenBucket, "wait_time",
                        lambda bucket, cost=1.0: looks.append(bucket) or wait_time(bucket, cost))
    harness.broker._timeout()
    harness.broker._resume_flood_stalled()
    assert len(looks) <= 2, len(looks)
    monkeypatch.undo()
    deadline = time.monotonic() + 5
    for each in extra:
        each.setblocking(False)
        while time.monotonic() < deadline:
            loop_turn(harness)
            try:
                if each.recv(4096) == b"":
                    break
            except BlockingIOError:
                pass
            except ConnectionResetError:
                break
        else:
            raise AssertionError("a link waiting for its flood control was never run")


def test_what_waited_behind_a_scan_runs_within_the_output_bound(harness, no_flood_control):
    """A client's frames behind its scan waiting for its turn are held,
    and run once it is answered.  They ran without the output bound a
    link's read frames are held to: a worker that sent LIST after LIST
    and read nothing had one reply more queued for each LIST held (some
    150 with flood control; LISTs of 10000 rooms, 100 MB).  Released
    frames now stop where its output goes over the bound, and wait with
    what it sent later; once it reads, every reply comes, in order."""
    st, out = harness.broker.state, harness.broker.outbox
    st.connect(1, "192.0.2.1")
    st.request(1, protocol.parse_line(b"NICK owner"), out)
    st.register(1, "o", "O", out)
    for n in range(40):
        st.request(1, protocol.parse_line(f"JOIN #room{n}".encode()), out)
        st.request(1, protocol.parse_line(f"TOPIC #room{n} :{'t' * 100}".encode()), out)
    sock = harness.worker(*registered())
    link = harness.broker.links[2]
    link.writer.limit = 20000
    link.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)   # the kernel holds little
    harness.broker.scan_credit = -100.0            # every scan waits for its turn
    asked = 25
    sock.sendall(b"".join(ipc.encode(ipc.Kind.REQUEST, b"LIST")
                          + ipc.encode(ipc.Kind.SYNC, str(n).encode()) for n in range(asked)))

    def turn() -> None:          # a turn of the loop with nothing else to do: a spare turn
        harness.turn(0.001)
        harness.broker._serve_waiting_scans(spare=True)

    most, deadline = 0, time.monotonic() + 10
    for _ in range(20):
        turn()
        most = max(most, link.writer.pending)
    while time.monotonic() < deadline and harness.broker.waiting_scans:
        turn()
        most = max(most, link.writer.pending)
    for _ in range(20):
        turn()
        most = max(most, link.writer.pending)
    assert link.stalled, "the rest waits for the worker to read"
    reader, frames = ipc.FrameReader(), []
    sock.setblocking(False)
    while time.monotonic() < deadline and (ipc.Kind.SYNC, str(asked - 1).encode()) not in frames:
        turn()              # now it reads
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            continue
        assert data, "the broker closed the link"
        frames += reader.feed(data)
    ends = [payload.decode() if kind == ipc.Kind.SYNC else payload.split()[1].decode()
            for kind, payload in frames
            if kind == ipc.Kind.SYNC or b" 323 " in payload or b" 322 " in payload]
    assert ends == sum((["322"] * 40 + ["323", str(n)] for n in range(asked)), [])
    first = [len(ipc.encode(kind, payload)) for kind, payload in frames
             if b" 322 " in payload or b" 323 " in payload][:41]
    reply = sum(first)           # one LIST's answer
    assert most <= link.writer.limit + reply, (most, reply)
    assert link.stalled is None and not link.closed
