"""What real IRC clients (irssi, WeeChat) need from the server beyond the RFC,
found by running them against it, replayed over raw sockets."""

from __future__ import annotations

from tests.support.ircclient import IrcTestClient

MANY_ROOMS = """
[limits]
flood_burst = 1000
flood_rate = 1000.0
rooms_per_client = 6000
recvq_bytes = 1000000
"""


ROOMS = 6000
LISTERS = 5
ROUNDS = 4       # of 50 LISTs from each lister: 1000 of about 0.4 ms, eight times the burst


def test_lists_beyond_the_broker_share_wait_for_their_turn(make_server):
    """The broker gives whole-server scans a quarter of its time.  Beyond
    that they were answered 263 RPL_TRYAGAIN, which irssi never retries:
    its WHO of each room it joined went unanswered after a server restart,
    and its nick list kept no user@host.  Now they wait for their turn.
    Five clients at once send LISTs of 6000 rooms (a condition no room
    meets, so no output), far beyond the share: every LIST gets its 323,
    in order before the PONG that follows, and none a 263.  (A 263 still
    comes when the wait is full, and then ends with the 323 irssi waits
    for: test_broker_pace.py.)"""
    server = make_server(config_text=MANY_ROOMS)
    listers = [IrcTestClient(server.port, timeout=30) for _ in range(LISTERS)]
    client = listers[0]
    try:
        for number, lister in enumerate(listers):
            lister.register(f"lister{number}")
        for first in range(0, ROOMS, 40):
            client.send("JOIN " + ",".join(f"#r{k}" for k in range(first, first + 40)))
        client.sync("joined")
        for _ in range(ROUNDS):
            for lister in listers:
                lister.send("LIST >100000\r\n" * 50 + "PING :batch")
            for lister in listers:
                got = [msg.command for msg in lister.collect_until("PONG")]
                assert "263" not in got
                assert got.count("323") == 50
    finally:
        for lister in listers:
            lister.close()
