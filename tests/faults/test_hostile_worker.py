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

import logging
import os
import socket
import time

import pytest

from forkchat import ipc
from tests.unit.test_broker_cid import Harness, hello


@pytest.fixture
def harness(tmp_path):
    made = Harness(tmp_path)
    made.bind((2, os.getpid()))          # the test process serves conn 2
    yield made
    made.close()


def closed_soon(harness: Harness, sock: socket.socket) -> bool:
    """Turn the broker's loop until it closes `sock` (True) or 5 s pass:
    a frame of 100 kB takes it two reads."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        harness.turn(0.05)
        sock.setblocking(False)
        try:
            if sock.recv(65536) == b"":
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
