"""The supervisor's end of the spawner protocol, over a real socket pair."""

import errno
import os
import socket
import subprocess
import sys
import types

import pytest

from forkchat import spawner


@pytest.fixture
def pair():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    yield ours, theirs
    ours.close()
    theirs.close()


def test_request_round_trips_with_an_ipv6_peer():
    kind, fields = spawner.parse_message(spawner.request_message(7, "tutorial", 1, "::1"))
    assert (kind, fields) == ("W", ["7", "tutorial", "1", "::1"])


def request(cid: int, conn: socket.socket, listener: int) -> spawner.Request:
    return spawner.Request(cid, conn, f"192.0.2.{cid}", "irc", listener)


def test_a_request_carries_the_client_socket_and_we_keep_ours_until_answered(pair):
    ours, theirs = pair
    handle = spawner.Handle(ours, 1234, [111, 222])
    client, server_side = socket.socketpair()
    handle.request(spawner.Request(5, server_side, "10.0.0.9", "irc", 222))
    assert handle.flush()
    assert server_side.fileno() != -1          # ours until the spawner reports
    data, fds, _flags, _addr = socket.recv_fds(theirs, 512, 1)
    assert spawner.parse_message(data) == ("W", ["5", "irc", "1", "10.0.0.9"])
    passed = socket.socket(fileno=fds[0])
    passed.sendall(b"hello")
    assert client.recv(5) == b"hello"
    assert handle.answered(5).peer == "10.0.0.9"
    assert server_side.fileno() == -1 and handle.requests == {}
    assert handle.answered(5) is None          # a second report changes nothing
    passed.close()
    client.close()


def test_retire_is_queued_after_the_requests(pair):
    ours, theirs = pair
    handle = spawner.Handle(ours, 1, [1])
    client, server_side = socket.socketpair()
    handle.request(request(1, server_side, 1))
    handle.retire()
    assert handle.flush()
    first, fds, _f, _a = socket.recv_fds(theirs, 512, 1)
    second = theirs.recv(512)
    assert first.startswith(b"W ") and len(fds) == 1 and second == b"R"
    socket.socket(fileno=fds[0]).close()
    client.close()


def test_a_lingering_retirement_is_said_so(pair):
    """A supervisor that is no subreaper asks a retired spawner to stay
    until its last worker ends, else it could not learn how they end."""
    ours, theirs = pair
    handle = spawner.Handle(ours, 1, [1])
    handle.retire(linger=True)
    assert handle.flush()
    assert theirs.recv(512) == b"R wait"


@pytest.mark.parametrize("message, workers, stays", [
    (b"R", {4242}, False),          # exits at once: its workers are the supervisor's
    (b"R wait", {4242}, True),      # stays for its worker
    (b"R wait", set(), False),      # nothing to wait for
])
def test_a_retired_spawner_stays_only_when_asked_and_while_it_has_workers(
        pair, message, workers, stays):
    ours, theirs = pair
    worker = spawner.Spawner(theirs, cfg=None, broker_address=b"", tls_contexts=[None],
                             worker_main=lambda *args: None)
    worker.workers = set(workers)
    ours.send(message)
    worker.on_control()
    assert worker.retired and worker.still_running() is stays


def test_reports_are_parsed_until_the_spawner_closes(pair):
    ours, theirs = pair
    handle = spawner.Handle(ours, 1, [])
    assert handle.reports() == []
    for report in (b"S 3 4242", b"F 4 Cannot allocate memory", b"X 4242 -9"):
        theirs.send(report)
    assert handle.reports() == [("S", ["3", "4242"]),
                                ("F", ["4", "Cannot", "allocate", "memory"]),
                                ("X", ["4242", "-9"])]
    theirs.close()
    assert handle.reports() is None


def test_leftovers_of_a_dead_spawner_all_but_the_one_it_may_have_started(pair):
    ours, theirs = pair
    handle = spawner.Handle(ours, 1, [9])
    sockets = [socket.socketpair() for _ in range(4)]
    handle.request(request(1, sockets[0][1], 9))
    handle.request(request(2, sockets[1][1], 9))
    assert handle.flush()                        # 1 and 2 sent ...
    handle.request(request(3, sockets[2][1], 9))
    handle.request(request(4, sockets[3][1], 9))  # ... 3 and 4 not yet
    handle.answered(1)                           # the spawner reported on 1
    retry, maybe = handle.leftovers()
    assert maybe is not None and maybe.cid == 2  # the oldest sent and unanswered
    assert [r.cid for r in retry] == [3, 4]
    assert handle.requests == {} and not handle.queue
    for client, server_side in sockets:
        client.close()
        server_side.close()


def test_a_failed_fork_is_reported_for_the_supervisor_to_refuse(pair, monkeypatch):
    """The spawner closes its copy without a word: the supervisor refuses
    the client with its own (test_supervisor_accept, test_supervisor_stop),
    as only it knows whether the server is stopping."""
    ours, theirs = pair
    def no_fork(*args, **kwargs):
        raise BlockingIOError(11, "Resource temporarily unavailable")
    monkeypatch.setattr(spawner.children, "fork_from", no_fork)
    worker = spawner.Spawner(theirs, cfg=None, broker_address=b"", tls_contexts=[None],
                             worker_main=lambda *args: None)
    client, server_side = socket.socketpair()
    supervisors_copy = server_side.dup()
    worker.spawn(server_side.detach(), ["12", "irc", "0", "192.0.2.7"])
    kind, fields = spawner.parse_message(ours.recv(512))
    assert kind == "F" and fields[0] == "12" and "unavailable" in " ".join(fields)
    assert worker.workers == set()
    client.setblocking(False)
    with pytest.raises(BlockingIOError):         # nothing said, nothing closed
        client.recv(200)
    supervisors_copy.close()
    client.setblocking(True)
    assert client.recv(200) == b""               # the spawner's copy is closed
    client.close()


def test_the_worker_makes_its_client_socket_object_not_the_spawner(pair, monkeypatch):
    """The spawner passes the descriptor through the start and closes its
    own: a socket object made in the spawner between forks wrote pages that
    the worker forked before then owned a copy of."""
    ours, theirs = pair
    started = []
    made = []

    def fake_fork(process, args):
        assert all(not isinstance(arg, socket.socket) for arg in args)
        process._target(*args)                    # as the child would
        sentinel_r, sentinel_w = os.pipe()
        os.close(sentinel_w)
        started.append(process.name)
        return types.SimpleNamespace(pid=4242, sentinel=sentinel_r)

    def worker_main(sock, peer, proto, cid, cfg, broker_address, tls, supervisor_pid):
        made.append((sock.family, sock.type, peer, proto, cid, cfg, broker_address, tls))
        sock.detach()                             # the child's copy, not ours to close
    monkeypatch.setattr(spawner.children, "fork_from", fake_fork)
    worker = spawner.Spawner(theirs, cfg="cfg", broker_address=b"broker",
                             tls_contexts=[None], worker_main=worker_main)
    client, server_side = socket.socketpair()
    supervisors_copy = server_side.dup()
    worker.spawn(server_side.detach(), ["12", "irc", "0", "192.0.2.7"])
    assert started == ["forkchat-worker"]
    assert made == [(socket.AF_UNIX, socket.SOCK_STREAM, "192.0.2.7", "irc", 12, "cfg",
                     b"broker", None)]
    assert spawner.parse_message(ours.recv(512)) == ("S", ["12", "4242"])
    assert worker.workers == {4242}
    supervisors_copy.close()
    assert client.recv(200) == b""               # the spawner's copy is closed
    client.close()


def test_a_handle_whose_spawner_is_gone_is_broken_and_keeps_its_queue(pair):
    ours, theirs = pair
    theirs.close()
    handle = spawner.Handle(ours, 1, [3])
    client, server_side = socket.socketpair()
    handle.request(spawner.Request(2, server_side, "198.51.100.4", "irc", 3))
    assert handle.flush() is True and handle.broken     # nothing more can go
    retry, maybe = handle.leftovers()
    assert [r.cid for r in retry] == [2] and maybe is None   # never sent: safe to retry
    server_side.close()
    client.close()


def test_a_request_the_kernel_will_not_pass_is_set_aside_and_the_rest_go(pair, monkeypatch):
    ours, theirs = pair
    handle = spawner.Handle(ours, 1, [5])
    sockets = [socket.socketpair() for _ in range(2)]
    handle.request(request(1, sockets[0][1], 5))
    handle.request(request(2, sockets[1][1], 5))
    real_send_fds = socket.send_fds

    def refuse_the_first(sock, buffers, fds, *args):
        if buffers[0].startswith(b"W 1 "):
            raise OSError(errno.ETOOMANYREFS, "Too many references")
        return real_send_fds(sock, buffers, fds, *args)
    monkeypatch.setattr(socket, "send_fds", refuse_the_first)
    assert handle.flush() and not handle.broken
    assert [r.cid for r in handle.unsendable] == [1] and list(handle.requests) == [2]
    # the reason, for the supervisor's log line (which said only that it failed)
    assert handle.unsendable[0].unsent_because == "Too many references"
    data, fds, _f, _a = socket.recv_fds(theirs, 512, 1)
    assert data.startswith(b"W 2 ") and len(fds) == 1
    socket.socket(fileno=fds[0]).close()
    for client, server_side in sockets:
        client.close()
        server_side.close()


# (what children.merge_memory returns, whether KSM runs) -> the log line
@pytest.mark.parametrize(("problem", "running", "level", "text"), [
    (None, True, "INFO", "offered to same-page merging (KSM)"),
    (None, False, "WARNING", "same-page merging is not running"),
    (None, None, "WARNING", "same-page merging is not running"),
    ("Invalid argument", True, "WARNING", "cannot offer memory to same-page merging: "
                                          "Invalid argument (it needs Linux 6.4 or later)"),
])
def test_memory_merge_says_what_it_does_on_this_machine(monkeypatch, caplog, problem, running,
                                                        level, text):
    monkeypatch.setattr(spawner.children, "merge_memory", lambda: problem)
    monkeypatch.setattr(spawner.children, "ksm_running", lambda: running)
    with caplog.at_level("INFO", logger="forkchat.spawner"):
        spawner.offer_memory_for_merging()
    assert [(r.levelname, text in r.getMessage()) for r in caplog.records] == [(level, True)]


def test_a_request_whose_socket_did_not_arrive_is_reported_lost(pair):
    """Out of descriptors, the kernel delivers the request without its socket
    (MSG_CTRUNC); the spawner dropped it without a word, and the supervisor
    kept the client's socket, and counted it, for ever."""
    ours, theirs = pair
    worker = spawner.Spawner(theirs, cfg=None, broker_address=b"", tls_contexts=[None],
                             worker_main=lambda *args: None)
    ours.settimeout(5)
    ours.send(spawner.request_message(12, "irc", 0, "192.0.2.7"))    # no descriptor
    worker.on_control()
    assert spawner.parse_message(ours.recv(512)) == ("L", ["12"])
    assert not worker.done and worker.workers == set()


# A spawner retired at a stop ends as the supervisor SIGTERMs the workers,
# and a worker that ends just then sends it a SIGCHLD after its loop is over:
# the parent's end here has the stop's "R" waiting, and the spawner's last
# flush of its output is where that SIGCHLD comes.
ENDING_SCRIPT = r"""
import os, signal, socket, time, types
from forkchat import children, spawner

children.make_lifeline()
ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
real_flush = children._flush_quietly

def flush_as_a_worker_ends(*streams):
    os.kill(os.getpid(), signal.SIGCHLD)
    time.sleep(0.05)                 # the handler runs meanwhile
    real_flush(*streams)

children._flush_quietly = flush_as_a_worker_ends
cfg = types.SimpleNamespace(log=types.SimpleNamespace(level="info"),
                            server=types.SimpleNamespace(memory_merge=False))
ours.send(b"R")
child = children.start("forkchat-spawn", spawner.main, (theirs, cfg, b"", [None], None))
_, status = os.waitpid(child.pid, 0)
print(os.waitstatus_to_exitcode(status))
"""


def test_a_sigchld_as_a_retired_spawner_ends_writes_no_traceback():
    """The spawner's wakeup socket closed with its loop while Python still
    wrote each signal there: a worker ending at a stop made the spawner
    print "Exception ignored when trying to write to the signal wakeup fd"
    and a traceback (Bad file descriptor) into the server's log."""
    done = subprocess.run([sys.executable, "-c", ENDING_SCRIPT], capture_output=True,
                          text=True, timeout=30)
    assert done.stdout.strip() == "0", done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, \
        done.stderr[-2000:]
