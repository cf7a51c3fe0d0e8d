"""A reload whose new spawner cannot be forked (at the process limit, the
very moment an operator reloads to lower max_clients) is said in its
outcome, and the fork is tried again until new clients get the new
configuration; the previous spawner serves meanwhile."""

from __future__ import annotations

import dataclasses
import errno
import logging
import socket

from forkchat import config, supervisor
from forkchat.supervisor import spawner


def test_a_reload_whose_spawner_cannot_be_forked_says_so_and_tries_again(caplog, monkeypatch):
    # port 0: the default 6667 may be another server's, and its bind's
    # failure then joined the outcome checked below
    new = dataclasses.replace(config.Config(), listen=(config.Listener(port=0),))
    targets = supervisor.Targets(broker=lambda *args: None, worker=lambda *args: None)
    boss = supervisor.Supervisor(config.Config(), targets, reload=lambda: new)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    previous = spawner.Handle(ours, 1234, [])
    boss.spawners[1234] = previous
    boss.spawner = previous
    monkeypatch.setattr(boss, "_send_broker", lambda frame: None)
    started: list[int] = []

    def fork(kind, target, args, *rest):
        if not started:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        child = supervisor.Child(kind, started[0], None, -1)
        boss.children[child.pid] = child
        return child
    monkeypatch.setattr(boss, "_start", fork)
    level = logging.getLogger().level
    try:
        with caplog.at_level(logging.INFO, logger="forkchat.supervisor"):
            boss.handle_sighup()
        assert boss.cfg is new and boss.spawner is previous
        outcomes = [r.getMessage() for r in caplog.records if "reloaded" in r.getMessage()]
        assert outcomes == ["configuration reloaded, but new connections get the previous "
                            "configuration until a spawner starts"]
        assert "spawner" in boss.timers
        boss.on_spawner_timer()               # still at the limit
        assert boss.spawner is previous and "spawner" in boss.timers
        started.append(5678)                  # a process ended: the fork works
        boss.on_spawner_timer()
        assert boss.spawner is not previous and boss.spawner.pid == 5678
        assert previous.retired and theirs.recv(512) == b"R"
        assert not boss.spawner_stale
    finally:
        logging.getLogger().setLevel(level)
        boss.broker_listener.close()
        for bound in boss.bound:
            bound.sock.close()
        boss.selector.close()
        for sock in (ours, theirs, *(h.sock for h in boss.spawners.values())):
            sock.close()
