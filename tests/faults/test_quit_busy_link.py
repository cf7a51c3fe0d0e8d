"""A client whose worker is behind a busy room quits once, quietly.

The broker answers a quitter's BYE before it closes the link; a worker
that sees the end without the answer takes the broker for dead, reconnects
and re-registers its client.  The broker wrote once and closed: a worker
behind by more than its link's socket takes lost the answer, and the live
broker refused the REREGISTER of a client it never lost (an error in its
log).  It now closes the link once what it holds is written.
"""

import os
import signal

from tests.faults.test_recovery_quit import names, quits_seen, room_with
from tests.support.server import worker_pid

CONFIG = ("[limits]\nmax_clients_per_ip = 100\nflood_burst = 5000\nflood_rate = 5000.0\n"
          "sendq_bytes = 16777216\n")
LINE = "PRIVMSG #room :" + "z" * 440


def test_a_quitter_behind_a_busy_room_is_answered_by_the_live_broker(make_server):
    server = make_server(config_text=CONFIG)
    alice, (bob,) = room_with(server, 1)
    bob.sync()
    stopped = worker_pid(server, "q0")
    os.kill(stopped, signal.SIGSTOP)          # bob's worker falls behind the room
    try:
        for _ in range(15):                   # some 750 kB for bob: under the broker's bound
            alice.send("\r\n".join([LINE] * 100))
            alice.sync()
        bob.send("QUIT :leaving")
    finally:
        os.kill(stopped, signal.SIGCONT)
    bob.expect_closed(10)
    assert quits_seen(alice, 1) == {"q0": "Quit: leaving"}
    assert names(alice) == ["alice"]
    alice.sync()
    assert "REREGISTER refused" not in server.log_text()
    assert "closing: Server error" not in server.log_text()
    bob.close()
    alice.close()
