"""Refused broker links: any local user may try them, as fast as it likes,
so they cost the log one line per window, with a count of the others."""

from __future__ import annotations

import logging
import socket

from forkchat import broker, config


def test_refused_links_are_logged_once_a_window_with_a_count(tmp_path, caplog):
    socks = [*socket.socketpair(), *socket.socketpair()]
    made = broker.Broker(socks[0], socks[2], config.Config(
        server=config.Server(state_dir=str(tmp_path))), "today")
    made.supervisor_pid = -1        # no process descends from it: every peer is refused
    made.check_ancestry = True
    caplog.set_level(logging.WARNING, logger="forkchat.broker")
    peers = [socket.socketpair() for _ in range(50)]
    try:
        assert not any(made._peer_allowed(ours) for ours, _theirs in peers)
        refused = [r.getMessage() for r in caplog.records if "refused broker link" in r.getMessage()]
        assert len(refused) == 1 and refused[0].startswith("refused broker link from pid ")
        made._refused_link("uid 1234", made.refused_window.logged_at + broker.REFUSED_LINKS_WINDOW_S)
        refused = [r.getMessage() for r in caplog.records if "refused broker link" in r.getMessage()]
        assert refused[1] == "refused broker link from uid 1234 (49 more refused since the last such line)"
    finally:
        made.selector.close()
        for sock in [*socks, *(s for pair in peers for s in pair)]:
            sock.close()
