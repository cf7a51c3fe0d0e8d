"""What the members of a room see of quits at a broker's death, as found by
real clients (irssi, weechat, forkchat-client) in a room whose broker was
killed while some of them typed /quit.

The members learn of a quit from the broker alone, and the broker's output
to many workers waits for its flush window (FLUSH_WINDOW_S); the window is
made long here so that the moment a person hits by chance is there every
time.
"""

from __future__ import annotations

import os
import signal

import psutil

from tests.faults.test_recovery_quit import names, quits_seen, room_with
from tests.support.server import broker_pid, worker_pid

# The window made long as a BYE comes (a closing worker waits 6 s for its
# goodbye to be taken: longer than it).  Long from the start, it held the
# joins of q3 and q4 and the last words 3 s each, of their 5 s to come.
LONG_WINDOW = """
from forkchat import broker, ipc, worker
worker.CLOSE_FLUSH_S = 6.0
def _long_window(run):
    def on_bye(self, link, payload):
        broker.FLUSH_WINDOW_S = 3.0
        run(self, link, payload)
    return on_bye
broker._FRAME_HANDLERS[ipc.Kind.BYE] = _long_window(broker._FRAME_HANDLERS[ipc.Kind.BYE])
"""
# ... and the broker says when it has run a BYE (its QUIT queued to the
# members); the first broker then stops, to be killed with the QUIT held
# (killed within the window after the line, a test descheduled past the
# window killed it with the QUIT written, and passed without the case).
# The next broker, no workers awaited at its start, runs on.  No long
# window: the joins and the last words waited 3 s of their 5 s each.
BYE_RUN_SAID = """
import os, signal
from forkchat import broker, ipc, worker
worker.CLOSE_FLUSH_S = 6.0
def _said(run):
    def on_bye(self, link, payload):
        run(self, link, payload)
        broker.log.warning("test: BYE of conn %s run", link.cid)
        if self.test_first:
            os.kill(os.getpid(), signal.SIGSTOP)
    return on_bye
broker._FRAME_HANDLERS[ipc.Kind.BYE] = _said(broker._FRAME_HANDLERS[ipc.Kind.BYE])
def _noting(init):
    def first_or_not(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.test_first = not self.awaiting
    return first_or_not
broker.Broker.__init__ = _noting(broker.Broker.__init__)
"""
CONFIG = "[limits]\nmax_clients_per_ip = 100\n"


def test_a_quit_whose_worker_ended_reaches_the_members_though_the_broker_dies(make_server):
    """bob says a last line and quits; his worker takes the broker's close of
    its link as the goodbye taken and ends, and the broker is killed an
    instant later.  irssi, weechat and forkchat-client watching kept bob in
    their nick lists: his QUIT, queued to the members behind the flush
    window, died with the broker, while his link had been closed at once,
    and the next broker never knew him.  Every member sees the QUIT with its
    reason, and NAMES agrees."""
    server = make_server(config_text=CONFIG, prelude=LONG_WINDOW)
    alice, others = room_with(server, 5)          # a fan-out to more than 4 links waits
    bob = others[0]
    bob_worker = psutil.Process(worker_pid(server, "q0"))
    alice.sync()
    bob.send("PRIVMSG #room :last words")         # a large flush: the next waits the window
    alice.expect("PRIVMSG")
    bob.send("QUIT :gone for the night")
    bob.expect_closed(10)
    bob_worker.wait(10)                           # it took its goodbye as said
    mark = server.log_length()
    os.kill(broker_pid(server), signal.SIGKILL)
    broker_pid(server, after=mark)
    for member in [alice, *others[1:]]:
        assert quits_seen(member, 1) == {"q0": "Quit: gone for the night"}
    assert names(alice) == ["alice", "q1", "q2", "q3", "q4"]
    for client in [alice, *others]:
        client.close()


def test_a_quit_held_in_a_killed_brokers_output_is_said_to_the_next(make_server):
    """The broker is killed with bob's QUIT read but not yet written to the
    members (behind the flush window): its death closed bob's broker link
    as a broker closes it after a BYE, and his worker took that for its
    goodbye taken.  It now waits for the broker's answer, which comes after
    the QUIT is written, and says goodbye to the next broker without it."""
    server = make_server(config_text=CONFIG, prelude=BYE_RUN_SAID)
    alice, others = room_with(server, 5)
    bob = others[0]
    alice.sync()
    bob.send("PRIVMSG #room :last words")
    alice.expect("PRIVMSG")
    mark = server.log_length()
    bob.send("QUIT :gone for the night")
    server.wait_for_text("test: BYE of conn", start=mark)
    os.kill(broker_pid(server), signal.SIGKILL)
    broker_pid(server, after=mark)
    for member in [alice, *others[1:]]:
        assert quits_seen(member, 1) == {"q0": "Quit: gone for the night"}
    assert names(alice) == ["alice", "q1", "q2", "q3", "q4"]
    bob.expect_closed(10)
    for client in [alice, *others]:
        client.close()
