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
ROUNDS = 20      # of 50 LISTs from each lister: far beyond the broker's share


def test_a_list_refused_263_still_ends_with_323(make_server):
    """The broker answers 263 RPL_TRYAGAIN to whole-server scans beyond its
    share; irssi, whose LIST/WHO query waits for the end numeric, showed
    nothing of a bare 263 and kept the query pending.  Scans of 6000 rooms
    (a condition no room meets, so no output) are sent by five clients at
    once until one is refused: every LIST gets its 323, the refused ones
    right after the 263.  (One client's LISTs follow one another, each
    reply held up to the broker's 8 ms flush window, and a LIST became
    cheap enough that one client alone stayed within the share.)"""
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
            answers = [lister.collect_until("PONG") for lister in listers]
            for got in answers:
                assert [msg.command for msg in got].count("323") == 50
            refused = [(lister, got) for lister, got in zip(listers, answers)
                       if any(msg.command == "263" for msg in got)]
            if refused:
                break
        else:
            raise AssertionError(f"no LIST of {ROUNDS * LISTERS * 50} was refused")
        lister, got = refused[0]
        where = next(i for i, msg in enumerate(got) if msg.command == "263")
        assert got[where].params[1:] == ["LIST", "Please wait a while and try again."]
        assert (got[where + 1].command, got[where + 1].params) == \
            ("323", [lister.nick, "End of /LIST"])
    finally:
        for lister in listers:
            lister.close()
