"""A scan waiting for its turn at the broker when the broker is killed.

irssi and WeeChat send a WHO of each room they join, and irssi keeps the
query pending until its end numeric (315) comes: one that never comes
stops every later room's query.  A scan beyond the broker's share waits
up to 30 s for its turn (on a busy broker: an idle one runs it at once,
and broker.SPARE_TURNS off here makes it wait all the same); the broker
that dies meanwhile takes it along, and the next knows nothing of it.  The
worker asks the next broker again, once.
"""

import os
import signal

from tests.support.ircclient import IrcTestClient
from tests.support.server import broker_pid

# An operator's scans run at once but are charged to the scan credit all the
# same: 2000 LISTs of 6000 rooms (about 0.4 ms each) leave it 0.8 s spent.
CONFIG = """
[limits]
flood_burst = 100000
flood_rate = 100000.0
rooms_per_client = 6000
recvq_bytes = 1000000

[[operators]]
name = "admin"
password = "pw"
"""
ROOMS = 6000
OPER_LISTS = 2000
# Scans wait for the credit as on a broker busy with other work, and the
# credit comes back at a millionth of a second a second: a user's scan waits
# until the broker is killed.  At the real share (a quarter) it waited some
# 2.4 s, less the time the LISTs' gaps and the client took on a loaded
# machine, which refilled the credit: the WHO was answered at once (a test
# run of 16 s in a full suite beside others' benchmarks).
BUSY_BROKER = ("from forkchat import broker\nbroker.SPARE_TURNS = False\n"
               "broker.SCAN_SHARE = 1e-6")


def commands(got):
    return [msg.command for msg in got]


def kill_broker(server, pid: int) -> int:
    """SIGKILL the broker; the next one's pid, once it has started."""
    mark = server.log_length()
    os.kill(pid, signal.SIGKILL)
    return broker_pid(server, after=mark)


def test_a_scan_waiting_when_the_broker_is_killed_is_answered_after(make_server):
    """The WHO waits (the talk sent after it is answered first: 401 before
    any 315); the broker is killed; the client gets its 315 from the next
    broker, once, before the PONG it asks for after.  A WHO answered to its
    end before a kill is not asked again: no second 315."""
    server = make_server(config_text=CONFIG, prelude=BUSY_BROKER)
    oper = IrcTestClient(server.port, timeout=30)
    alice = IrcTestClient(server.port, timeout=30)
    try:
        oper.register("oper")
        for first in range(0, ROOMS, 40):
            oper.send("JOIN " + ",".join(f"#r{k}" for k in range(first, first + 40)))
        oper.sync("joined")
        oper.send("OPER admin pw")
        oper.expect("381")
        alice.register("alice")
        oper.send("LIST >100000\r\n" * OPER_LISTS + "PING :charged")
        oper.sync("charged")

        alice.send("WHO nobody\r\nPRIVMSG nobody :hi")
        assert "315" not in commands(alice.collect_until("401"))    # the WHO waits
        pid = kill_broker(server, broker_pid(server))
        alice.send("PING :after")
        got = commands(alice.collect_until("PONG", 20))
        assert got.count("315") == 1, got

        alice.send("WHO nobody")          # the new broker's credit is whole: at once
        alice.expect("315")
        kill_broker(server, pid)
        alice.send("PING :again")
        got = commands(alice.collect_until("PONG", 20))
        assert "315" not in got, got
    finally:
        oper.close()
        alice.close()
