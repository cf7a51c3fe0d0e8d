"""The certificates a running server serves are looked at once a day: a
renewal that failed, or a renewed file never reloaded, would otherwise let
the served one expire unannounced while the server runs for weeks."""

import logging
import os
import time

from forkchat import config, listeners, supervisor

from tests.unit.test_listeners import make_pair


def serving(tmp_path, name: str) -> tuple[supervisor.Supervisor, listeners.Bound]:
    cert, key = make_pair(tmp_path, name)            # valid for two days from now
    bound = listeners.bind(config.Listener(address="127.0.0.1", port=0,
                                           tls_cert=cert, tls_key=key))
    targets = supervisor.Targets(broker=lambda *args: None, worker=lambda *args: None)
    boss = supervisor.Supervisor(config.Config(), targets, reload=config.Config, bound=[bound])
    return boss, bound


def close(boss: supervisor.Supervisor) -> None:
    for bound in boss.bound:
        bound.sock.close()
    boss.broker_listener.close()
    boss.selector.close()


def daily_warnings(boss, monkeypatch, caplog, hours_on: float) -> list[str]:
    later = time.time() + hours_on * 3600
    monkeypatch.setattr(supervisor.time, "time", lambda: later)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="forkchat.supervisor"):
        boss.on_certificates_timer()
    monkeypatch.undo()
    return [record.getMessage() for record in caplog.records]


def test_the_served_certificate_is_warned_of_daily_even_when_its_file_was_renewed(
        tmp_path, monkeypatch, caplog):
    boss, bound = serving(tmp_path, "served")
    try:
        assert daily_warnings(boss, monkeypatch, caplog, hours_on=1) == []
        # renewed on disk, as certbot does, but never reloaded: the old one is served
        (tmp_path / "renewal").mkdir()
        renewed, renewed_key = make_pair(tmp_path / "renewal", "renewed", days="90")
        os.replace(renewed, bound.spec.tls_cert)
        os.replace(renewed_key, bound.spec.tls_key)
        soon = daily_warnings(boss, monkeypatch, caplog, hours_on=40)
        assert len(soon) == 1 and "(CN=served) expires soon, on " in soon[0], soon
        gone = daily_warnings(boss, monkeypatch, caplog, hours_on=49)
        assert len(gone) == 1 and "(CN=served) expired on " in gone[0], gone
        # the reload serves the renewed file, and the daily look is then content
        assert boss._reload_tls(bound, bound.spec)
        assert daily_warnings(boss, monkeypatch, caplog, hours_on=49) == []
    finally:
        close(boss)


def test_the_daily_look_is_a_timer_that_comes_back(tmp_path, monkeypatch, caplog):
    boss, _ = serving(tmp_path, "timer")
    try:
        boss._start_timers()
        assert boss.timers["certificates"] - time.monotonic() > supervisor.CERTIFICATES_EVERY_S - 60
        boss.timers["certificates"] = 0.0
        boss._run_timers()
        assert boss.timers["certificates"] - time.monotonic() > supervisor.CERTIFICATES_EVERY_S - 60
    finally:
        close(boss)
