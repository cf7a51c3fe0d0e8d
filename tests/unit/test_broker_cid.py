"""A connection id belongs to the worker process it was given to.

A worker is crash-isolated so that its client can only hurt itself.  One
taken over (by a bug its client found) still passes the broker's checks of
who may connect, being a process of the server: it must not be able to
state another connection's id in its HELLO, which took that connection over
(its client quit, the impostor got what it was sent).  The supervisor tells
the broker which pid serves each cid ("bind"); the broker compares that
with the link's SO_PEERCRED pid.  The same word carries the address the
supervisor accepted the client from: the client is shown with that, not
with the host its worker states.

These tests run a Broker in-process, with no loop of its own, on a real
listening Unix socket: the test process connects as a worker does, and the
broker takes it for one of its server's (its supervisor is the test).
"""

from __future__ import annotations

import logging
import os
import secrets
import selectors
import socket
import subprocess
import sys
import time

import pytest

from forkchat import broker, config, ipc, protocol, supervisor


OTHER_WORKER = """
import json, socket, struct, sys
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect("\\0" + sys.argv[1])
hello = json.dumps({"cid": int(sys.stdin.readline()), "host": "192.0.2.9", "proto": "irc"})
sock.sendall(struct.pack("!IB", len(hello), 1) + hello.encode())
sys.stdin.read()
sock.setblocking(False)
try:
    while sock.recv(65536):      # what the broker sent it, if anything
        pass
    print("closed")
except BlockingIOError:
    print("open")
except ConnectionResetError:
    print("closed")
"""


class Harness:
    def __init__(self, tmp_path, expected: tuple[tuple[int, int, str], ...] = ()) -> None:
        self.address = f"\0forkchat-test-{secrets.token_hex(8)}"
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.address)
        self.listener.listen(16)
        self.listener.setblocking(False)
        self.control, self.supervisor_end = socket.socketpair()
        cfg = config.Config(server=config.Server(state_dir=str(tmp_path)))
        self.broker = broker.Broker(self.listener, self.control, cfg, "today", expected)
        self.broker.supervisor_pid = os.getpid()    # the test is the server's root
        self.broker._watch_listener()
        self.socks: list[socket.socket] = []
        self.children: list[subprocess.Popen[str]] = []

    def turn(self, timeout: float = 0.0) -> None:
        """One turn of the broker's loop."""
        for key, mask in self.broker.selector.select(timeout):
            key.data(mask)
        self.broker._maybe_flush()

    def worker(self, *frames: bytes) -> socket.socket:
        """Connect as a worker does and send `frames`; the broker accepts."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.socks.append(sock)
        sock.connect(self.address)
        sock.sendall(b"".join(frames))
        sock.settimeout(5)
        links = len(self.broker.selector.get_map())
        while len(self.broker.selector.get_map()) == links:   # accepted
            self.turn(5)
        self.turn(0.5)                                          # its frames read
        return sock

    def other_worker(self, cid: int) -> subprocess.Popen[str]:
        """Another process of the server that connects as the worker of
        `cid`; it says at the end whether the broker closed its link."""
        child = subprocess.Popen([sys.executable, "-c", OTHER_WORKER, self.address[1:]],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.children.append(child)
        self.bind((cid, child.pid, "192.0.2.9"))
        child.stdin.write(f"{cid}\n")
        child.stdin.flush()
        deadline = time.monotonic() + 10
        while cid not in self.broker.links and time.monotonic() < deadline:
            self.turn(0.1)
        assert cid in self.broker.links
        return child

    def bind(self, *workers: tuple) -> None:
        """The supervisor's word, through the control socket: (cid, pid,
        peer), the peer PEER unless given."""
        self.supervisor_end.sendall(ipc.encode_json(
            ipc.Kind.CONTROL, {"op": "bind", "workers": [[*w, PEER][:3] for w in workers]}))
        self.broker.on_control(selectors.EVENT_READ)

    def close(self) -> None:
        self.broker.selector.close()
        for sock in [self.listener, self.control, self.supervisor_end, *self.socks]:
            sock.close()
        for child in self.children:
            child.kill()
            child.communicate()


@pytest.fixture
def harness(tmp_path):
    made = Harness(tmp_path)
    yield made
    made.close()


PEER = "192.0.2.7"     # the address the supervisor accepted a client from


def hello(cid: int, reregister: bool = False, host: str = PEER) -> bytes:
    return ipc.encode_json(ipc.Kind.HELLO, {"cid": cid, "host": host, "proto": "irc",
                                            "reregister": reregister})


def closed_by_broker(sock: socket.socket) -> bool:
    sock.settimeout(1)
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def other_pid() -> int:
    """A pid that is not the test's: another worker, as far as the broker knows."""
    return os.getppid()


def test_a_worker_stating_another_connections_id_is_refused(harness, caplog):
    caplog.set_level(logging.ERROR, logger="forkchat.broker")
    victim = harness.other_worker(1)
    harness.broker.state.request(1, protocol.parse_line(b"NICK alice"), harness.broker.outbox)
    harness.broker.state.register(1, "alice", "Alice", harness.broker.outbox)
    harness.turn()
    harness.bind((2, os.getpid()))               # the test process serves conn 2
    impostor = harness.worker(hello(1), ipc.encode(ipc.Kind.REQUEST, b"PRIVMSG alice :hi"))
    assert closed_by_broker(impostor)
    link = harness.broker.links[1]               # conn 1 is its own worker's still
    assert not link.closed and link.pid == victim.pid
    assert harness.broker.state.clients[1].nick == "alice"
    assert victim.communicate("", timeout=10)[0] == "open\n"
    refused = [r.getMessage() for r in caplog.records]
    assert refused == [f"refused broker link from pid {os.getpid()}: the worker of conn 2 "
                       f"stated conn 1"]


def test_a_worker_taken_over_cannot_retry_its_way_into_the_log(harness, caplog):
    caplog.set_level(logging.ERROR, logger="forkchat.broker")
    harness.bind((2, os.getpid()))
    for cid in (1, 3, 4):
        assert closed_by_broker(harness.worker(hello(cid)))
    harness.broker.forged_window.logged_at -= broker.REFUSED_LINKS_WINDOW_S
    assert closed_by_broker(harness.worker(hello(5)))
    assert [r.getMessage() for r in caplog.records] == [
        f"refused broker link from pid {os.getpid()}: the worker of conn 2 stated conn 1",
        f"refused broker link from pid {os.getpid()}: the worker of conn 2 stated conn 5 "
        "(2 more refused since the last such line)"]


def test_a_worker_states_its_own_id_and_is_served(harness):
    harness.bind((2, os.getpid()))
    sock = harness.worker(hello(2), ipc.encode(ipc.Kind.SYNC, b"x"))
    assert ipc.FrameReader().feed(sock.recv(4096)) == [(ipc.Kind.SYNC, b"x")]
    assert harness.broker.links[2].pid == os.getpid()


def test_a_hello_before_its_workers_pid_waits_for_it(harness):
    """The worker connects as soon as it is forked; its spawner's report
    comes through the supervisor, often later.  What it sent meanwhile is
    kept, in order, and answered once the pid is known."""
    sock = harness.worker(hello(2), ipc.encode(ipc.Kind.SYNC, b"a"))
    sock.sendall(ipc.encode(ipc.Kind.SYNC, b"b"))
    harness.turn(0.1)
    assert 2 not in harness.broker.links
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(4096)
    harness.bind((2, os.getpid()))
    harness.turn(0.5)
    sock.settimeout(5)
    frames = ipc.FrameReader().feed(sock.recv(4096))
    if len(frames) < 2:
        harness.turn(0.5)
        frames += ipc.FrameReader().feed(sock.recv(4096))
    assert frames == [(ipc.Kind.SYNC, b"a"), (ipc.Kind.SYNC, b"b")]
    assert harness.broker.links[2].pid == os.getpid()
    assert not harness.broker.unbound


def test_a_waiting_hello_of_another_id_is_refused_when_the_pid_is_named(harness, caplog):
    caplog.set_level(logging.ERROR, logger="forkchat.broker")
    sock = harness.worker(hello(7))
    harness.bind((2, os.getpid()))
    assert closed_by_broker(sock)
    assert 7 not in harness.broker.links and not harness.broker.unbound
    assert "the worker of conn 2 stated conn 7" in caplog.text


def test_a_process_never_named_is_refused_after_the_wait(harness, caplog):
    """A process a worker forked descends from the server too, but serves
    no connection: its HELLO waits, then it is refused."""
    caplog.set_level(logging.WARNING, logger="forkchat.broker")
    sock = harness.worker(hello(3))
    harness.broker._expire_unbound(harness.broker.unbound[os.getpid()][0].waiting_since
                                   + broker.BIND_WAIT_S)
    assert closed_by_broker(sock)
    assert not harness.broker.unbound and 3 not in harness.broker.links
    assert f"refused broker link from pid {os.getpid()}: no connection of this server" \
        in caplog.text


def test_a_gone_workers_pid_names_its_connection_no_more(harness):
    """The kernel may give a dead worker's pid to a new one."""
    harness.bind((2, os.getpid()))
    harness.supervisor_end.sendall(ipc.encode_json(
        ipc.Kind.CONTROL, {"op": "gone", "cid": 2, "pid": os.getpid()}))
    harness.broker.on_control(selectors.EVENT_READ)
    assert os.getpid() not in harness.broker.owners
    harness.bind((9, os.getpid()))
    harness.worker(hello(9))
    assert harness.broker.links[9].pid == os.getpid()


def test_a_new_broker_knows_the_workers_of_the_dead_one(tmp_path, caplog):
    """After a broker restart the supervisor's list binds the cids: a worker
    coming back re-registers as itself, and only as itself."""
    caplog.set_level(logging.ERROR, logger="forkchat.broker")
    made = Harness(tmp_path, expected=((1, other_pid(), PEER), (2, os.getpid(), PEER),
                                       (3, 0, PEER)))
    try:
        impostor = made.worker(hello(1, reregister=True),
                               ipc.encode_json(ipc.Kind.REREGISTER, {"nick": "alice"}))
        assert closed_by_broker(impostor)
        assert 1 not in made.broker.state.clients and 1 in made.broker.awaiting
        made.worker(hello(2, reregister=True),
                    ipc.encode_json(ipc.Kind.REREGISTER, {"nick": "bob"}))
        assert made.broker.state.clients[2].nick == "bob"
        assert made.broker.awaiting == {1, 3}
    finally:
        made.close()


# -- the supervisor's side --------------------------------------------------------

def test_the_supervisor_names_each_workers_pid_to_the_broker(monkeypatch):
    """The spawner's reports read together become one "bind" frame, sent
    before the "gone" of a worker that ended in the same batch; a new
    broker gets every worker's (cid, pid, peer) at start; the peer is the
    address each client connected from."""
    targets = supervisor.Targets(broker=lambda *args: None, worker=lambda *args: None)
    boss = supervisor.Supervisor(config.Config(), targets)
    control, broker_end = socket.socketpair()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    conns = [socket.socketpair() for _ in range(3)]
    try:
        boss.broker_control = control
        boss.broker_out = ipc.FrameWriter(control, ipc.CONTROL_QUEUE_BYTES)
        boss.broker_pid = 4242
        boss.children[4242] = supervisor.Child("broker", 4242, None, -1)
        handle = supervisor.spawner.Handle(ours, 1234, [1])
        boss.spawners[1234] = handle
        for cid, (_client, server_side) in zip((12, 13, 14), conns):
            boss.admission.admitted(f"192.0.2.{cid}")
            handle.request(supervisor.spawner.Request(cid, server_side, f"192.0.2.{cid}",
                                                      "irc", 1))
        for report in (b"S 12 5012", b"S 13 5013", b"X 5012 0"):
            theirs.send(report)
        boss._read_spawner(handle)
        sent = [ipc.decode_json(payload) for _kind, payload in
                ipc.FrameReader().feed(broker_end.recv(65536))]
        assert sent == [{"op": "bind", "workers": [[12, 5012, "192.0.2.12"],
                                                   [13, 5013, "192.0.2.13"]]},
                        {"op": "gone", "cid": 12, "pid": 5012}]
        started: list[tuple] = []

        def no_fork(kind, target, args, *rest):
            started.append(args)
            raise OSError(11, "Resource temporarily unavailable")
        monkeypatch.setattr(boss, "_start", no_fork)
        assert not boss.spawn_broker()
        assert started[0][-1] == ((13, 5013, "192.0.2.13"),
                                  (14, 0, "192.0.2.14"))     # 14: not reported yet
    finally:
        boss.broker_listener.close()
        boss.selector.close()
        for sock in [control, broker_end, ours, theirs, *(s for pair in conns for s in pair)]:
            sock.close()


# -- REREGISTER -------------------------------------------------------------------

FORGED_IDENTITY = {"nick": "mallory", "user": "m", "modes": "o", "rooms": {"#secret": "@"}}


def test_a_worker_started_under_this_broker_cannot_reregister(harness, caplog):
    """It has nothing to restore; one taken over gave itself operator status
    and +o in any room, silently, whenever it liked."""
    caplog.set_level(logging.ERROR, logger="forkchat.broker")
    harness.bind((2, os.getpid()))
    forged = ipc.encode_json(ipc.Kind.REREGISTER, FORGED_IDENTITY)
    sock = harness.worker(hello(2, reregister=True), forged, forged, forged)   # one line for all
    client = harness.broker.state.clients[2]
    assert client.nick == "" and not client.modes and "#secret" not in harness.broker.state.rooms
    harness.turn(0.1)
    assert (ipc.Kind.DROP, b"Server error: session not restored") in \
        ipc.FrameReader().feed(sock.recv(65536))
    assert [r.getMessage() for r in caplog.records] == [
        "conn 2: REREGISTER refused: not a connection this broker took over, "
        "or restored already"]


def test_a_connection_taken_over_from_a_dead_broker_reregisters_once(tmp_path):
    made = Harness(tmp_path, expected=((2, os.getpid(), PEER),))
    try:
        sock = made.worker(hello(2, reregister=True),
                           ipc.encode_json(ipc.Kind.REREGISTER, {"nick": "bob", "user": "b"}))
        assert made.broker.state.clients[2].nick == "bob"
        sock.sendall(ipc.encode_json(ipc.Kind.REREGISTER, FORGED_IDENTITY))
        made.turn(0.5)
        client = made.broker.state.clients[2]
        assert client.nick == "bob" and not client.modes
    finally:
        made.close()


# -- the client's host ------------------------------------------------------------

SYNCED = b"all answered"


def lines_until_synced(harness, sock: socket.socket) -> list[bytes]:
    """What the broker sent the worker, up to its echo of the SYNC SYNCED."""
    reader, lines = ipc.FrameReader(), []
    deadline = time.monotonic() + 10
    while SYNCED not in lines:
        assert time.monotonic() < deadline, lines
        harness.turn(0.1)
        sock.settimeout(0.1)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        assert data, lines
        lines += [payload for _kind, payload in reader.feed(data)]
    return lines


def misstated(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "stated host" in r.getMessage()]


def test_a_worker_stating_another_host_is_shown_and_banned_as_its_real_address(harness,
                                                                              caplog):
    """A worker taken over could state any host in its HELLO: a ban on its
    real address did not match it, WHOIS showed what it liked."""
    caplog.set_level(logging.ERROR, logger="forkchat.broker")
    st, out = harness.broker.state, harness.broker.outbox
    st.connect(1, "198.51.100.1")
    for line in (b"NICK alice", b"JOIN #r", b"MODE #r +b *!*@192.0.2.7"):
        st.request(1, protocol.parse_line(line), out)
        if line.startswith(b"NICK"):
            st.register(1, "alice", "Alice", out)
    harness.bind((2, os.getpid(), "192.0.2.7"))
    sock = harness.worker(hello(2, host="203.0.113.66"),
                          ipc.encode(ipc.Kind.REQUEST, b"NICK mallory"),
                          ipc.encode_json(ipc.Kind.REGISTER, {"user": "m", "realname": "M"}),
                          ipc.encode(ipc.Kind.REQUEST, b"WHOIS mallory"),
                          ipc.encode(ipc.Kind.REQUEST, b"JOIN #r"),
                          ipc.encode(ipc.Kind.SYNC, SYNCED))
    lines = lines_until_synced(harness, sock)
    whois = [line for line in lines if b" 311 " in line]
    assert len(whois) == 1 and b" mallory m 192.0.2.7 " in whois[0], lines
    assert not any(b"203.0.113.66" in line for line in lines)
    assert any(b" 474 mallory #r " in line for line in lines)
    assert st.clients[2].host == "192.0.2.7" and 2 not in st.rooms["#r"].members
    assert misstated(caplog) == [
        "conn 2: its worker stated host '203.0.113.66', not 192.0.2.7, "
        "the address its client connected from"]


def test_an_honest_workers_host_is_its_own_and_not_logged(harness, caplog):
    """The broker makes the host as the worker does: IPv6 ::1 is 0::1."""
    caplog.set_level(logging.ERROR, logger="forkchat.broker")
    harness.bind((2, os.getpid(), "::1"))
    harness.worker(hello(2, host="0::1"))
    assert harness.broker.state.clients[2].host == "0::1"
    assert caplog.records == []


def test_a_reregistering_worker_is_restored_with_its_real_address(tmp_path, caplog):
    """After a broker restart the identity's host is the worker's word too;
    its HELLO and its REREGISTER stating another host are logged once.  A
    worker its spawner had not reported yet (pid 0) gets its address with
    its "bind"."""
    caplog.set_level(logging.ERROR, logger="forkchat.broker")
    made = Harness(tmp_path, expected=((2, os.getpid(), "192.0.2.7"), (3, 0, "2001:db8::3")))
    try:
        made.worker(hello(2, reregister=True, host="203.0.113.66"),
                    ipc.encode_json(ipc.Kind.REREGISTER, {"nick": "bob", "user": "b",
                                                          "host": "203.0.113.66"}))
        assert made.broker.state.clients[2].nick == "bob"
        assert made.broker.state.clients[2].host == "192.0.2.7"
        assert misstated(caplog) == [
            "conn 2: its worker stated host '203.0.113.66', not 192.0.2.7, "
            "the address its client connected from"]
        made.broker.misstated_window.logged_at -= broker.REFUSED_LINKS_WINDOW_S
        made.broker._unbind(2, os.getpid())          # its pid now serves conn 3
        sock = made.worker(hello(3, reregister=True, host="2001:db8::3"),
                           ipc.encode_json(ipc.Kind.REREGISTER, {"nick": "carol", "user": "c",
                                                                 "host": "2001:db8::99"}))
        assert 3 not in made.broker.state.clients     # waits for its "bind"
        made.bind((3, os.getpid(), "2001:db8::3"))
        assert made.broker.state.clients[3].nick == "carol"
        assert made.broker.state.clients[3].host == "2001:db8::3"
        assert misstated(caplog)[1:] == [
            "conn 3: its worker stated host '2001:db8::99', not 2001:db8::3, "
            "the address its client connected from"]
        assert not closed_by_broker(sock)
    finally:
        made.close()


def test_a_worker_misstating_its_host_cannot_reconnect_its_way_into_the_log(harness, caplog):
    caplog.set_level(logging.ERROR, logger="forkchat.broker")
    harness.bind((2, os.getpid()))
    for _ in range(3):                   # each new link replaces the one before
        harness.worker(hello(2, host="203.0.113.66"))
    harness.broker.misstated_window.logged_at -= broker.REFUSED_LINKS_WINDOW_S
    harness.worker(hello(2, host="203.0.113.67"))
    assert misstated(caplog) == [
        "conn 2: its worker stated host '203.0.113.66', not 192.0.2.7, "
        "the address its client connected from",
        "conn 2: its worker stated host '203.0.113.67', not 192.0.2.7, "
        "the address its client connected from (2 more since the last such line)"]
    assert harness.broker.state.clients[2].host == "192.0.2.7"


def test_a_worker_sending_broken_frames_is_closed_and_cannot_fill_the_log(harness, caplog):
    """A frame of a kind the broker does not take closed nothing and logged
    a line each: a worker taken over through its client could write the
    log as fast as it sent them.  Now each such link is closed, and one
    line a window says how many were not logged."""
    caplog.set_level(logging.ERROR, logger="forkchat.broker")
    harness.bind((2, os.getpid()))
    unknown = ipc.encode(ipc.Kind.DELIVER, b"")      # a kind only the broker sends
    for _ in range(3):
        assert closed_by_broker(harness.worker(hello(2), unknown, unknown))
    assert closed_by_broker(harness.worker(ipc.encode(ipc.Kind.SYNC, b"x")))   # no HELLO first
    harness.broker.link_error_window.logged_at -= broker.REFUSED_LINKS_WINDOW_S
    assert closed_by_broker(harness.worker(hello(2), unknown))
    assert [r.getMessage() for r in caplog.records] == [
        f"broker link of conn 2: unexpected frame kind {ipc.Kind.DELIVER}",
        f"broker link of conn 2: unexpected frame kind {ipc.Kind.DELIVER} "
        "(3 more since the last such line)"]
    assert 2 not in harness.broker.links


def test_a_client_that_quits_during_a_recovery_quits_after_its_last_lines(tmp_path):
    """Its worker's frames are held until every worker is back; it ended
    meanwhile.  The client's last lines and its quit reason run once the
    recovery ends: the supervisor's "gone" closed its link at once, and
    they were dropped, the client leaving with "Connection closed"."""
    made = Harness(tmp_path, expected=((2, os.getpid(), PEER), (3, 0, PEER)))
    done: list[tuple] = []
    try:
        sock = made.worker(hello(2, reregister=True),
                           ipc.encode_json(ipc.Kind.REREGISTER, {"nick": "bob", "user": "b"}))
        state = made.broker.state
        request, disconnect = state.request, state.disconnect
        state.request = lambda cid, msg, out: (done.append((cid, msg.command)),
                                               request(cid, msg, out))
        state.disconnect = lambda cid, reason, out: (done.append((cid, reason)),
                                                     disconnect(cid, reason, out))
        sock.sendall(ipc.encode(ipc.Kind.REQUEST, b"AWAY :gone home")
                     + ipc.encode(ipc.Kind.BYE, b"Quit: see you"))
        sock.close()
        for _ in range(3):
            made.turn(0.1)
        for cid, pid in ((2, os.getpid()), (3, 0)):     # its worker ended; then the last
            made.supervisor_end.sendall(ipc.encode_json(
                ipc.Kind.CONTROL, {"op": "gone", "cid": cid, "pid": pid}))
            made.broker.on_control(selectors.EVENT_READ)
            assert done == [] or cid == 3
        assert done == [(2, "AWAY"), (2, "Quit: see you")]
        assert 2 not in state.clients
    finally:
        made.close()
