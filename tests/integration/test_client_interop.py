"""What real IRC clients (irssi, WeeChat) need from the server beyond the RFC,
found by running them against it, replayed over raw sockets."""

from __future__ import annotations

from tests.support.ircclient import IrcTestClient

MANY_ROOMS = """
[limits]
flood_burst = 1000
flood_rate = 1000.0
rooms_per_client = 2000
recvq_bytes = 1000000
"""


def test_a_list_refused_263_still_ends_with_323(make_server):
    """The broker answers 263 RPL_TRYAGAIN to whole-server scans beyond its
    share; irssi, whose LIST/WHO query waits for the end numeric, showed
    nothing of a bare 263 and kept the query pending.  Scans of 2000 rooms
    (a condition no room meets, so no output) are sent until one is
    refused: every LIST gets its 323, the refused ones right after the 263."""
    server = make_server(config_text=MANY_ROOMS)
    client = IrcTestClient(server.port, timeout=30)
    try:
        client.register("lister")
        for first in range(0, 2000, 40):
            client.send("JOIN " + ",".join(f"#r{k}" for k in range(first, first + 40)))
        client.sync("joined")
        got: list = []
        while not any(msg.command == "263" for msg in got):
            client.send("LIST >100000\r\n" * 50 + "PING :batch")
            got = client.collect_until("PONG")
            assert [msg.command for msg in got].count("323") == 50
        where = next(i for i, msg in enumerate(got) if msg.command == "263")
        assert got[where].params[1:] == ["LIST", "Please wait a while and try again."]
        assert (got[where + 1].command, got[where + 1].params) == ("323", ["lister", "End of /LIST"])
    finally:
        client.close()
