"""A client that quits during a broker restart's recovery quits with its
own reason.

Until the listed workers are back, frames other than HELLO and REREGISTER
are held (broker.Broker._on_frame); a worker that exits meanwhile has its
link closed, and its held BYE was then skipped at the end of the recovery:
its rooms were told "Connection closed", not the client's quit reason.
"""

from __future__ import annotations

import os
import selectors

import pytest

from forkchat import ipc
from tests.unit.test_broker_cid import PEER, Harness, hello

REASON = "QUIT: off to lunch"


@pytest.fixture
def recovering(tmp_path):
    """A new broker that awaits two workers: the test process (conn 1) and
    one that never comes (conn 2), so the recovery lasts."""
    made = Harness(tmp_path, expected=((1, os.getpid(), PEER), (2, 0, PEER)))
    quits: list[tuple[int, str]] = []
    disconnect = made.broker.state.disconnect

    def recorded(cid, reason, out):
        quits.append((cid, reason))
        disconnect(cid, reason, out)

    made.broker.state.disconnect = recorded
    yield made, quits
    made.close()


def back_and_quitting(made: Harness):
    sock = made.worker(hello(1, reregister=True),
                       ipc.encode_json(ipc.Kind.REREGISTER,
                                       {"nick": "alice", "user": "a", "rooms": {"#r": ""}}),
                       ipc.encode(ipc.Kind.BYE, REASON.encode()))
    assert made.broker.state.clients[1].nick == "alice"
    assert made.broker.awaiting == {2}          # still recovering: the BYE is held
    return sock


def test_a_worker_that_exits_after_its_held_bye_quits_with_its_reason(recovering):
    made, quits = recovering
    sock = back_and_quitting(made)
    sock.close()
    made.turn(0.5)                              # its end of file
    assert quits == [(1, REASON)]
    assert 1 not in made.broker.links


def test_a_worker_gone_with_its_bye_held_quits_with_its_reason(recovering):
    made, quits = recovering
    back_and_quitting(made)
    made.supervisor_end.sendall(ipc.encode_json(
        ipc.Kind.CONTROL, {"op": "gone", "cid": 1, "pid": os.getpid()}))
    made.broker.on_control(selectors.EVENT_READ)
    assert quits == [(1, REASON)]
