"""A SIGHUP whose reload fails in any way keeps the running configuration."""

import logging

import pytest

from forkchat import config, supervisor


def make_supervisor(reload):
    targets = supervisor.Targets(broker=lambda *args: None, worker=lambda *args: None)
    return supervisor.Supervisor(config.Config(), targets, reload=reload)


@pytest.mark.parametrize("failure", [
    config.ConfigInvalid([config.ConfigError("f.toml", 2, "limits.nicklen", "must be int")]),
    AttributeError("'str' object has no attribute 'items'"),     # a loader bug
])
def test_a_failed_reload_keeps_the_running_configuration(caplog, failure):
    def reload() -> config.Config:
        raise failure
    boss = make_supervisor(reload)
    running = boss.cfg
    try:
        with caplog.at_level(logging.INFO, logger="forkchat.supervisor"):
            boss.handle_sighup()
    finally:
        boss.broker_listener.close()
        boss.selector.close()
    assert boss.cfg is running
    assert [r.getMessage().split(":")[0] for r in caplog.records if r.levelno >= logging.ERROR] \
        == ["reload failed, keeping the running configuration"]
