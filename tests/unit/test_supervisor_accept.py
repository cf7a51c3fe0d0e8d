"""The supervisor's accept loop when accept() fails for want of descriptors."""

from __future__ import annotations

import errno
import logging
import socket

import pytest

from forkchat import config, listeners, supervisor

pytestmark = pytest.mark.timeout(30)


class Starved:
    """A listening socket whose accept() fails with EMFILE while `starved`."""

    def __init__(self) -> None:
        self.real = socket.create_server(("127.0.0.1", 0))
        self.real.setblocking(False)
        self.starved = True

    def fileno(self) -> int:
        return self.real.fileno()

    def accept(self) -> tuple[socket.socket, tuple[str, int]]:
        if self.starved:
            raise OSError(errno.EMFILE, "Too many open files")
        return self.real.accept()

    def close(self) -> None:
        self.real.close()


@pytest.fixture
def boss():
    targets = supervisor.Targets(broker=lambda *args: None, worker=lambda *args: None)
    made = supervisor.Supervisor(config.Config(), targets)
    yield made
    made.broker_listener.close()
    made.selector.close()


def test_emfile_pauses_the_listener_logs_once_and_it_accepts_once_a_descriptor_frees(
        boss, caplog, monkeypatch):
    """The queued connection kept the listener readable: every turn of the
    loop failed again at once, at 100 % CPU, with an error line each."""
    sock = Starved()
    bound = listeners.Bound(sock, config.Listener("127.0.0.1", 0))    # type: ignore[arg-type]
    boss.bound = [bound]
    boss._watch_listener(bound)
    admitted: list[str] = []
    monkeypatch.setattr(boss, "_admit", lambda conn, address, bound: (admitted.append(address),
                                                                       conn.close()))
    client = socket.create_connection(sock.real.getsockname())
    try:
        with caplog.at_level(logging.INFO, logger="forkchat.supervisor"):
            for _ in range(5):
                boss._turn(0)
            assert [r.getMessage() for r in caplog.records] == \
                ["accept failed: Too many open files; paused, retried every 0.5 s"]
            assert "accept" in boss.timers and admitted == []
            sock.starved = False
            boss.timers["accept"] = 0.0          # the pause is over
            boss._run_timers()
            boss._turn(1.0)
        assert admitted == ["127.0.0.1"]
        assert caplog.records[-1].getMessage() == "accepting connections again"
    finally:
        client.close()
        sock.close()


def test_a_listener_removed_by_a_reload_while_paused_is_not_watched_again(boss):
    sock = Starved()
    bound = listeners.Bound(sock, config.Listener("127.0.0.1", 0))    # type: ignore[arg-type]
    boss.bound = [bound]
    boss._watch_listener(bound)
    client = socket.create_connection(sock.real.getsockname())
    try:
        boss._turn(0)
        boss._unwatch_listener(bound)             # as a reload removing it does
        boss.bound.remove(bound)
        boss.on_accept_timer()
        with pytest.raises(KeyError):
            boss.selector.get_key(sock)
    finally:
        client.close()
        sock.close()
