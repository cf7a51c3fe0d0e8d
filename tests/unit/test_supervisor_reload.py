"""A SIGHUP whose reload fails in any way keeps the running configuration."""

import logging
import os
import socket

import pytest

from forkchat import config, listeners, supervisor


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


# -- a reload that succeeds: what each key becomes -------------------------------------

def reload_to(caplog, new: config.Config, running: config.Config = config.Config(),
              bound=None, spawned=None):
    """Run a SIGHUP that loads `new` on a supervisor running `running`;
    returns (the supervisor, the broker's CONFIG frames, warning texts).
    No process is started: the spawner and the broker are stubbed, and
    `spawned` gets the configuration each new spawner would start with."""
    targets = supervisor.Targets(broker=lambda *args: None, worker=lambda *args: None)
    boss = supervisor.Supervisor(running, targets, reload=lambda: new, bound=bound)
    frames = []
    boss.start_spawner = lambda: (spawned if spawned is not None else []).append(boss.cfg)
    boss._send_broker = frames.append
    try:
        with caplog.at_level(logging.INFO, logger="forkchat.supervisor"):
            caplog.clear()
            original = logging.getLogger().level
            try:
                boss.handle_sighup()
            finally:
                logging.getLogger().setLevel(original)
    finally:
        boss.broker_listener.close()
        boss.selector.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    return boss, frames, warnings


def passed_socket():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return listeners.adopt(sock.detach(), config.Listener())


def test_a_changed_listen_entry_under_socket_activation_is_said_to_wait(caplog):
    """forkchat-server(8): a changed [[listen]] entry applies to passed sockets
    at the next start; the reload said only 'configuration reloaded'."""
    bound = passed_socket()
    try:
        changed = config.Config(listen=(config.Listener(port=6697, protocol="tutorial"),))
        boss, _frames, warnings = reload_to(caplog, changed, bound=[bound])
        assert warnings == [f"{supervisor.PASSED_SOCKETS_KEY} changed in the file: "
                            f"takes effect at the next start"]
        assert boss.cfg.listen == config.Config().listen     # the running entries kept
        assert boss.bound == [bound] and bound.sock.fileno() >= 0
        # the same file again: still said, as for the [server] keys a start applies
        assert reload_to(caplog, changed, running=boss.cfg, bound=[bound])[2] == warnings
        assert reload_to(caplog, config.Config(), bound=[bound])[2] == []
    finally:
        bound.sock.close()


def test_a_reload_whose_listeners_clash_keeps_the_running_configuration(caplog):
    """Two equal entries were merged without a word, and an entry on a port
    another one takes failed its bind as 'Address already in use'."""
    clashing = config.Config(listen=(config.Listener(port=7000), config.Listener(port=7000)),
                             server=config.Server(motd="new"))
    running = config.Config(listen=())
    boss, frames, _warnings = reload_to(caplog, clashing, running=running)
    assert boss.cfg is running and frames == [] and boss.bound == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        "reload failed, keeping the running configuration: listen[1] (127.0.0.1:7000) "
        f"clashes with listen[0] (127.0.0.1:7000): {listeners.CLASH}"]


def test_a_listener_a_child_still_holds_is_closed_for_all_at_a_reload(caplog):
    """A child forked just before (the spawner of the last reload, before it
    closes what it inherited) holds a copy of each listening socket: the
    supervisor's close left the port listening in the child, the entry that
    took it over failed with 'Address already in use', and connections
    queued on a socket no one accepted from."""
    old = listeners.bind(config.Listener(port=0))
    port = old.port
    childs_copy = os.dup(old.sock.fileno())
    try:
        moved = config.Config(listen=(config.Listener(port=port, protocol="tutorial"),))
        boss, _frames, _warnings = reload_to(caplog, moved, running=config.Config(listen=()),
                                             bound=[old])
        try:
            assert [(b.spec.protocol, b.port) for b in boss.bound] == [("tutorial", port)]
            assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        finally:
            for bound in boss.bound:
                bound.sock.close()
    finally:
        os.close(childs_copy)


def test_a_port_handed_over_is_not_taken_back_for_another_failure(caplog):
    """The irc listener's port goes to a tutorial entry (bound once the irc
    one was out of the way) while a new irc entry fails for reasons of its
    own: the supervisor tried to re-bind the old irc listener on the port
    the tutorial one now held, and logged 'Address already in use' for a
    port that had been handed over as asked."""
    old = listeners.bind(config.Listener(port=0))
    port = old.port
    holder = socket.create_server(("127.0.0.1", 0))       # another program's port
    try:
        new = config.Config(listen=(config.Listener(port=port, protocol="tutorial"),
                                    config.Listener(port=holder.getsockname()[1])))
        boss, _frames, warnings = reload_to(caplog, new, running=config.Config(listen=()),
                                            bound=[old])
        try:
            assert [(b.spec.protocol, b.port) for b in boss.bound] == [("tutorial", port)]
            errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            assert len(errors) == 1 and f":{holder.getsockname()[1]}" in errors[0], errors
            assert not [w for w in warnings if w.startswith("still listening")], warnings
        finally:
            for bound in boss.bound:
                bound.sock.close()
    finally:
        holder.close()
