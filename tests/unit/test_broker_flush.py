"""The broker's flush window: output waits at most FLUSH_WINDOW_S, in order."""

from __future__ import annotations

import socket
import time
import types

import pytest

from forkchat import broker, config, ipc


@pytest.fixture
def one_link(tmp_path):
    """A Broker with no loop running and one worker link (cid 1) on a socket pair."""
    socks = [*socket.socketpair(), *socket.socketpair(), *socket.socketpair()]
    cfg = config.Config(server=config.Server(state_dir=str(tmp_path)))
    made = broker.Broker(socks[0], socks[2], cfg, "today")
    mine, theirs = socks[4], socks[5]
    mine.setblocking(False)
    theirs.setblocking(False)
    link = broker.Link(mine, 1 << 20)
    made.selector.register(mine, broker.selectors.EVENT_READ,
                           lambda mask: made.on_link(link, mask))
    made._dispatch(link, ipc.Kind.HELLO, b'{"cid": 1, "host": "h", "proto": "irc"}')
    yield made, theirs
    made.selector.close()
    for sock in socks:
        sock.close()


def received(peer: socket.socket) -> list[tuple[int, bytes]]:
    try:
        return ipc.FrameReader().feed(peer.recv(1 << 20))
    except BlockingIOError:
        return []


@pytest.fixture
def eight_links(tmp_path):
    """A Broker with no loop running, worker links for cids 1..8, and the
    workers' ends of them."""
    socks = [*socket.socketpair(), *socket.socketpair()]
    cfg = config.Config(server=config.Server(state_dir=str(tmp_path)))
    made = broker.Broker(socks[0], socks[2], cfg, "today")
    peers = []
    for cid in range(1, 9):
        mine, theirs = socket.socketpair()
        socks += [mine, theirs]
        mine.setblocking(False)
        theirs.setblocking(False)
        peers.append(theirs)
        link = broker.Link(mine, 1 << 20)
        made.selector.register(mine, broker.selectors.EVENT_READ,
                               lambda mask, link=link: made.on_link(link, mask))
        made._dispatch(link, ipc.Kind.HELLO,
                       b'{"cid": %d, "host": "h", "proto": "irc"}' % cid)
    made.last_flush -= broker.FLUSH_WINDOW_S
    made._maybe_flush()                  # the welcome of each, out of the way
    yield made, peers
    made.selector.close()
    for sock in socks:
        sock.close()


def received_by(peers: list[socket.socket]) -> list[list[tuple[int, bytes]]]:
    """What each of eight_links' workers has been sent since the last look."""
    return [received(peer) for peer in peers]


def test_output_held_by_the_window_sets_the_select_timeout(eight_links, monkeypatch):
    """Output to many workers queued just after a flush waits, but the loop
    wakes for it within the window: nothing gathered can wait for the next
    unrelated event.  The broker's clock moves only when told: on the real
    one, a test preempted for more than the 8 ms window between the two
    flushes found the window passed and the second output sent at once."""
    made, peers = eight_links
    clock = types.SimpleNamespace(now=made.last_flush + broker.FLUSH_WINDOW_S,
                                  thread_time=time.thread_time)
    clock.monotonic = lambda: clock.now
    monkeypatch.setattr(broker, "time", clock)
    made.next_beat = clock.now + broker.HEARTBEAT_S
    many = range(1, broker.FLUSH_AT_ONCE_LINKS + 2)
    for cid in many:
        made.outbox.send(cid, b"zero\r\n")
    made._maybe_flush()                              # after a quiet spell: at once
    assert received_by(peers)[:len(many)] == [[(ipc.Kind.DELIVER, b"zero\r\n")]] * len(many)
    clock.now += broker.FLUSH_WINDOW_S / 2
    for cid in many:
        made.outbox.send(cid, b"one\r\n")
    made._maybe_flush()                              # within the window: held
    assert received_by(peers) == [[]] * 8 and made.dirty
    assert 0.0 <= made._timeout() <= broker.FLUSH_WINDOW_S
    made.last_flush -= broker.FLUSH_WINDOW_S          # the window has passed
    assert made._timeout() == 0.0
    made._maybe_flush()
    assert received_by(peers)[:len(many)] == [[(ipc.Kind.DELIVER, b"one\r\n")]] * len(many)
    assert not made.dirty


def test_output_to_a_few_workers_goes_within_the_window(eight_links):
    """The answer to a command, or a message to a small room, wakes a few
    workers: held for the window, a client's commands that wait for their
    answers (JOIN, LIST, WHO) took 8 ms each."""
    made, peers = eight_links
    for cid in range(1, 9):
        made.outbox.send(cid, b"zero\r\n")
    made._maybe_flush()
    received_by(peers)
    flushed_at = made.last_flush
    few = range(1, broker.FLUSH_AT_ONCE_LINKS + 1)
    for cid in few:
        made.outbox.send(cid, b"one\r\n")
    made._maybe_flush()                              # within the window, all the same
    assert received_by(peers)[:len(few)] == [[(ipc.Kind.DELIVER, b"one\r\n")]] * len(few)
    assert not made.dirty
    assert made.last_flush == flushed_at             # the window of the large flush stays


def test_frames_to_one_link_keep_their_order_across_the_window(one_link):
    made, peer = one_link
    made.outbox.send(1, b"a\r\n")
    made.outbox.update(1, {"away": "x"})
    made.outbox.drop(1, "Killed")
    made.last_flush -= broker.FLUSH_WINDOW_S
    made._maybe_flush()
    assert [kind for kind, _ in received(peer)] == [ipc.Kind.DELIVER, ipc.Kind.UPDATE,
                                                    ipc.Kind.DROP]


def test_the_lines_gathered_for_a_link_leave_as_one_deliver(one_link):
    """A room's messages of one flush window, and a private one between
    them, reach the worker as one frame, in the order they were sent."""
    made, peer = one_link
    made.outbox.fanout([1, 2], b"a\r\n")
    made.outbox.send(1, b"b\r\n")
    made.outbox.fanout([2, 1], b"c\r\n")
    made.last_flush -= broker.FLUSH_WINDOW_S
    made._maybe_flush()
    assert received(peer) == [(ipc.Kind.DELIVER, b"a\r\nb\r\nc\r\n")]


def test_the_next_heartbeat_bounds_the_select_timeout(one_link):
    """The counts the supervisor shows come with the heartbeat: a wait that
    began 1.9 s after one must not run a full HEARTBEAT_S past it."""
    made, _peer = one_link
    made.dirty.clear()
    made.next_beat = broker.time.monotonic() + 0.1
    assert made._timeout() <= 0.1
    made.next_beat = broker.time.monotonic() - 1.0     # overdue
    assert made._timeout() == 0.0


def test_a_worker_gone_after_its_bye_quits_with_its_reason_though_a_write_failed_first(one_link):
    """The write to a link whose worker has exited fails before the broker
    has read that worker's last frames: they are read all the same, so the
    rooms hear the client's own quit reason, not "Connection closed"."""
    made, peer = one_link
    quits = []
    made.state.disconnect = lambda cid, reason, out: quits.append((cid, reason))
    peer.sendall(ipc.encode(ipc.Kind.BYE, b"Quit: see you"))
    peer.close()
    made.outbox.send(1, b"too late\r\n")
    made.last_flush -= broker.FLUSH_WINDOW_S
    made._maybe_flush()
    assert quits == [(1, "Quit: see you")]


def test_the_answer_to_a_command_is_written_after_the_rest(eight_links):
    """A client that has its answer knows that what its earlier lines sent
    to others was written: a broker killed between two writes had answered
    ISON while the room messages sent before it were still unwritten."""
    made, _peers = eight_links
    written = []
    flush = made._flush
    made._flush = lambda link: (written.append(link.cid), flush(link))
    for asker in range(1, 9):
        written.clear()
        for cid in range(1, 9):
            made.outbox.send(cid, b"room message\r\n")
        made.replying = asker                # the answer to its own command
        made.outbox.send(asker, b"303 answer\r\n")
        made.replying = None
        made.last_flush -= broker.FLUSH_WINDOW_S
        made._maybe_flush()
        assert sorted(written) == list(range(1, 9)) and written[-1] == asker
