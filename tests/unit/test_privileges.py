"""forkchat.privileges: the root policy as a table, the drop itself in a forked child.

The drop cannot be undone, so it runs in a child made with os.fork() that
reports what it became through a pipe and then _exits; the test process keeps
its own identity. Those tests need root (CI runs as root) and skip otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pwd
import shutil
import tempfile
from collections.abc import Callable

import pytest

from forkchat import privileges

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
NOBODY = pwd.getpwnam("nobody")


def in_child(action: Callable[[], object]) -> object:
    """Run action in a forked child; return its JSON result or raise its error text."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            os.close(read_end)
            try:
                result = {"ok": action()}
            except Exception as exc:  # reported to the parent, which asserts on it
                result = {"error": f"{type(exc).__name__}: {exc}"}
            os.write(write_end, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        report = json.loads(reader.read() or b'{"error": "child died"}')
    os.waitpid(pid, 0)
    if "error" in report:
        raise AssertionError(report["error"])
    return report["ok"]


def identity() -> dict[str, object]:
    """What the process is now, and whether root can be regained."""
    try:
        os.setuid(0)
        regained = True
    except PermissionError:
        regained = False
    return {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(),
            "egid": os.getegid(), "groups": sorted(os.getgroups()), "regained": regained}


@needs_root
def test_drop_to_nobody() -> None:
    def drop() -> object:
        return {"dropped": privileges.drop_privileges("nobody"), **identity()}
    report = in_child(drop)
    assert report == {"dropped": True, "uid": NOBODY.pw_uid, "euid": NOBODY.pw_uid,
                      "gid": NOBODY.pw_gid, "egid": NOBODY.pw_gid,
                      "groups": sorted(os.getgrouplist("nobody", NOBODY.pw_gid)),
                      "regained": False}


@needs_root
def test_drop_with_explicit_group_by_number() -> None:
    def drop() -> object:
        privileges.drop_privileges(str(NOBODY.pw_uid), "0")
        return identity()
    report = in_child(drop)
    assert (report["uid"], report["gid"], report["regained"]) == (NOBODY.pw_uid, 0, False)


@needs_root
def test_not_root_any_more_is_a_warning_not_an_error() -> None:
    def drop_twice() -> object:
        first = privileges.drop_privileges("nobody")
        same = privileges.drop_privileges("nobody")
        other = privileges.drop_privileges("root")
        unknown = privileges.drop_privileges("no-such-user-forkchat")
        return [first, same, other, unknown, os.getuid()]
    assert in_child(drop_twice) == [True, False, False, False, NOBODY.pw_uid]


def test_not_root_warns_when_the_user_differs(caplog: pytest.LogCaptureFixture) -> None:
    if os.geteuid() == 0:
        def drop_then_ask_for_root() -> object:
            privileges.drop_privileges("nobody")
            return privileges.drop_privileges("root")
        assert in_child(drop_then_ask_for_root) is False
        return
    with caplog.at_level(logging.WARNING, logger="forkchat.supervisor"):
        assert privileges.drop_privileges("root") is False
    assert "ignoring user" in caplog.text


@pytest.mark.parametrize(("user", "group", "message"), [
    ("no-such-user-forkchat", None, "unknown user 'no-such-user-forkchat'"),
    ("nobody", "no-such-group-forkchat", "unknown group 'no-such-group-forkchat'"),
    ("4000000000", None, "unknown user '4000000000'"),
])
def test_unknown_account_is_a_clear_error(user: str, group: str | None, message: str) -> None:
    with pytest.raises(privileges.PrivilegeError, match=message):
        privileges.resolve(user, group)


@needs_root
def test_drop_to_unknown_user_fails_and_keeps_root() -> None:
    def drop() -> object:
        try:
            privileges.drop_privileges("no-such-user-forkchat")
        except privileges.PrivilegeError as error:
            return [str(error), os.getuid()]
        return "dropped?"
    assert in_child(drop) == [
        "unknown user 'no-such-user-forkchat': not in the system's user database", 0]


def test_resolve_defaults_to_login_group() -> None:
    found = privileges.resolve("nobody")
    assert (found.user, found.uid, found.gid) == ("nobody", NOBODY.pw_uid, NOBODY.pw_gid)


# (euid, user, allow_root, under_systemd) -> the user to become
BECOME_CASES = [
    (1000, None, False, False, None),          # not root: nothing to decide
    (1000, "forkchat", False, False, "forkchat"),  # asked for: drop_privileges warns
    (0, "forkchat", False, False, "forkchat"),  # root, will drop after binding
    (0, None, False, True, None),              # systemd's User= decided
    (0, None, True, False, None),              # explicitly allowed to stay root
    (0, None, False, False, "nobody"),         # accidental root: drop to nobody
    (0, "", False, False, "nobody"),           # empty user counts as none
]


@pytest.mark.parametrize(("euid", "user", "allow_root", "under_systemd", "expected"),
                         BECOME_CASES)
def test_user_to_become_policy(euid: int, user: str | None, allow_root: bool,
                               under_systemd: bool, expected: str | None) -> None:
    assert privileges.user_to_become(user, allow_root, under_systemd=under_systemd,
                                     euid=euid) == expected


def test_allow_root_and_default_drop_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="forkchat.supervisor"):
        privileges.user_to_become(None, True, under_systemd=False, euid=0)
        privileges.user_to_become(None, False, under_systemd=False, euid=0)
    assert "serving as root" in caplog.text
    assert "dropping to 'nobody'" in caplog.text


def test_a_group_without_a_user_to_switch_to_is_said_to_be_ignored(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
        tmp_path) -> None:
    """group = "daemon" with allow_root (or started as another user, or by
    systemd without user =) switched to nothing, without a word; with a
    user to switch to, nothing is said of the group."""
    from forkchat import cli, config
    switched: list[tuple[str, str | None]] = []
    monkeypatch.setattr(privileges, "drop_privileges",
                        lambda user, group=None: switched.append((user, group)) or True)
    monkeypatch.setattr(privileges, "resolve", lambda user, group=None: None)
    for user, expected in ((None, None), ("someone", "someone")):
        monkeypatch.setattr(privileges, "user_to_become", lambda *_a, _u=user, **_k: _u)
        cfg = config.Config()
        cfg = dataclasses.replace(cfg, server=dataclasses.replace(
            cfg.server, group="daemon", state_dir=str(tmp_path)))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="forkchat.supervisor"):
            cli.become_unprivileged(cfg)
        said = "ignoring group = 'daemon': there is no user to switch to" in caplog.text
        assert said == (expected is None)
    assert switched == [("someone", "daemon")]


def test_files_read_on_reload_are_the_config_and_what_it_names() -> None:
    from forkchat import cli, config
    cfg = config.Config()
    cfg = dataclasses.replace(
        cfg, server=dataclasses.replace(cfg.server, motd_file="/etc/motd"),
        listen=[config.Listener(), config.Listener(tls_cert="/c.pem", tls_key="/k.pem"),
                config.Listener(tls_cert="/c.pem", tls_key="/k.pem")])
    assert cli.files_read_on_reload(cfg, "/etc/forkchat.toml") == \
        ["/etc/forkchat.toml", "/etc/motd", "/c.pem", "/k.pem"]
    assert cli.files_read_on_reload(config.Config(), None) == []


@needs_root
def test_a_file_the_new_user_cannot_read_is_named_at_start() -> None:
    """A root-only configuration works at start and fails the first SIGHUP
    after the switch: the start says so while someone is looking."""
    from forkchat import cli
    folder = tempfile.mkdtemp(prefix="forkchat-priv-")
    try:
        os.chmod(folder, 0o755)
        private, public = os.path.join(folder, "private.toml"), os.path.join(folder, "motd")
        for path, mode in ((private, 0o600), (public, 0o644)):
            with open(path, "w") as handle:
                handle.write("x\n")
            os.chmod(path, mode)

        def drop_then_check() -> object:
            seen: list[str] = []
            # warnings only: drop_privileges logs 'running as user nobody' at
            # info, which reaches the handler whenever an earlier test left
            # the logger at info (the whole unit suite run as root)
            handler = logging.Handler(logging.WARNING)
            handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
            logging.getLogger("forkchat.supervisor").addHandler(handler)
            privileges.drop_privileges("nobody")
            cli.warn_unreadable([private, public], "nobody")
            return seen
        seen = in_child(drop_then_check)
    finally:
        shutil.rmtree(folder)
    assert len(seen) == 1, seen
    assert seen[0].startswith(f"{private} is not readable as nobody (Permission denied)")
    assert seen[0].endswith("a reload will fail")
