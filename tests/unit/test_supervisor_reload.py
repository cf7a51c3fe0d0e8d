"""A SIGHUP whose reload fails in any way keeps the running configuration."""

import dataclasses
import logging
import os
import socket

import pytest

from forkchat import config, listeners, supervisor, warmup


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


# -- a reload's new TLS contexts are warmed before the spawner forks ------------------

def reload_tls(tmp_path, caplog, warm_tls, added: bool = False):
    """A supervisor serving one TLS listener reloads the same file (a
    renewal), with a second TLS listener if `added`; returns the handshakes
    each context had done when the new spawner was forked (stubbed), the
    contexts before, and the log lines."""
    from tests.unit.test_listeners import make_pair
    cert, key = make_pair(tmp_path, "reloaded")
    spec = config.Listener(address="127.0.0.1", port=0, tls_cert=cert, tls_key=key)
    bound = listeners.bind(spec)
    specs = (spec, dataclasses.replace(spec, protocol="tutorial")) if added else (spec,)
    targets = supervisor.Targets(broker=lambda *args: None, worker=lambda *args: None,
                                 warm_tls=warm_tls)
    boss = supervisor.Supervisor(config.Config(listen=(spec,)), targets,
                                 reload=lambda: config.Config(listen=specs), bound=[bound])
    old = bound.tls
    at_fork = []
    boss.start_spawner = lambda: at_fork.extend(
        b.tls.session_stats()["accept_good"] for b in boss.bound)
    boss._send_broker = lambda frame: None
    try:
        with caplog.at_level(logging.INFO, logger="forkchat.supervisor"):
            boss.handle_sighup()
    finally:
        for each in boss.bound:
            each.sock.close()
        boss.broker_listener.close()
        boss.selector.close()
    assert bound.tls is not old and at_fork
    return at_fork, old, [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("added", [False, True])
def test_a_reloads_new_tls_contexts_are_warmed_before_its_spawner_is_forked(
        tmp_path, caplog, added):
    """The start runs TLS handshakes through each listener's context so that
    the workers forked later share what that writes; a renewed certificate's
    new context, or an added listener's, served workers that each copied
    the pages of its first handshake (some 10-25 more than before the
    reload)."""
    at_fork, _old, lines = reload_tls(tmp_path, caplog, warmup.warm_reloaded, added)
    assert at_fork == [warmup.RELOAD_ROUNDS] * (2 if added else 1)
    assert lines[-1] == "configuration reloaded"


def test_a_failed_warm_up_does_not_fail_the_reload(tmp_path, caplog):
    """Only memory is at stake: the new certificate is served all the same."""
    def broken(contexts):
        raise RuntimeError("warm-up bug")
    at_fork, _old, lines = reload_tls(tmp_path, caplog, broken)
    assert at_fork == [0]
    assert lines == ["the warm-up of the new TLS contexts failed (the reload goes on)",
                     "configuration reloaded"]


def test_a_reload_to_an_empty_listen_of_a_server_that_binds_its_own_is_refused(caplog):
    """Without passed sockets `listen = []` names nothing to serve: the
    reload closed every listener and the server served nobody."""
    old = listeners.bind(config.Listener(port=0))
    try:
        boss, frames, _warnings = reload_to(caplog, config.Config(listen=()),
                                            running=config.Config(listen=(old.spec,)),
                                            bound=[old])
        assert boss.bound == [old] and old.sock.fileno() >= 0 and frames == []
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
            f"reload failed, keeping the running configuration: {listeners.EMPTY_LISTEN}"]
    finally:
        old.sock.close()


def test_a_reload_to_a_certificate_no_handshake_completes_with_says_so(tmp_path, caplog):
    """A DSA certificate loads (OpenSSL takes it), but TLS 1.2's ECDHE
    ciphers and TLS 1.3 sign with RSA or EC keys only: every client's
    handshake fails ("no shared cipher").  The reload's warm-up ran such a
    handshake and failed it, quietly, and the reload said "configuration
    reloaded" alone: the sysadmin learnt of it from the users."""
    import subprocess
    from tests.unit.test_listeners import make_pair
    params, cert, key = (str(tmp_path / name) for name in ("dsa.param", "dsa.crt", "dsa.key"))
    subprocess.run(["openssl", "dsaparam", "-out", params, "2048"], check=True,
                   capture_output=True, timeout=120)
    subprocess.run(["openssl", "req", "-x509", "-newkey", f"dsa:{params}", "-nodes", "-days", "2",
                    "-subj", "/CN=dsa", "-keyout", key, "-out", cert],
                   check=True, capture_output=True, timeout=60)
    good_cert, good_key = make_pair(tmp_path, "good")
    good = config.Listener(address="127.0.0.1", port=0, tls_cert=good_cert, tls_key=good_key)
    bound = listeners.bind(good)
    label = bound.label
    renewed = dataclasses.replace(good, port=bound.port, tls_cert=cert, tls_key=key)
    added = config.Listener(address="127.0.0.1", port=0, protocol="tutorial",
                            tls_cert=good_cert, tls_key=good_key)
    targets = supervisor.Targets(broker=lambda *args: None, worker=lambda *args: None,
                                 warm_tls=warmup.warm_reloaded)
    boss = supervisor.Supervisor(config.Config(listen=(good,)), targets,
                                 reload=lambda: config.Config(listen=(renewed, added)),
                                 bound=[bound])
    boss.start_spawner = lambda: True
    boss._send_broker = lambda frame: None
    try:
        with caplog.at_level(logging.INFO, logger="forkchat.supervisor"):
            boss.handle_sighup()
        # (a new certificate is a new listener on the same port: bound last)
        assert {b.spec.protocol: b.tls.session_stats()["accept_good"] for b in boss.bound} \
            == {"irc": 0, "tutorial": warmup.RELOAD_ROUNDS}
    finally:
        for each in boss.bound:
            each.sock.close()
        boss.broker_listener.close()
        boss.selector.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"{label}: no TLS handshake completes with its certificate {cert} "
                        f"(a test handshake failed: SSLV3_ALERT_HANDSHAKE_FAILURE); "
                        f"its TLS clients will fail"], warnings
