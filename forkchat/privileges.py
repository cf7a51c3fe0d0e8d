"""Who the server runs as: never root by accident, and root dropped after binding.

The supervisor binds its listeners first (ports below 1024 need root, or
CAP_NET_BIND_SERVICE), then calls drop_privileges() before it accepts a
single connection or starts a child, so that no code that touches client
bytes ever runs as root. The order inside is the classic one: supplementary
groups, then the group, then the user; once the uid is gone the process
could no longer change its groups.

After the switch the process can import only what the new user may read.
A Python installed under /root (pyenv, a root-only virtual environment)
cannot be read by "nobody", so cli imports every module the processes run
before the drop.

Under systemd the unit decides (User=, DynamicUser=): the server is started
as the right user already and nothing here has work to do. Outside systemd,
user_to_become() picks the configured user, or "nobody" unless allow_root
says to stay root.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger("forkchat.supervisor")

ROOT_UID = 0
Entry = TypeVar("Entry")


class PrivilegeError(Exception):
    """The server cannot, or must not, run as the requested user; the message says why."""


@dataclass(frozen=True)
class Identity:
    """A resolved target account: the names are kept for messages and initgroups."""

    user: str
    uid: int
    group: str
    gid: int


def resolve(user: str, group: str | None = None) -> Identity:
    """Look up user (and group, default the user's login group) in the system databases.

    Numeric strings are accepted as ids, as chown(1) does.

    Raises:
        PrivilegeError: the user or the group does not exist.
    """
    entry = _lookup(pwd.getpwnam, pwd.getpwuid, user, "user")
    if group is None:
        login_group = _group_name(entry.pw_gid)
        return Identity(entry.pw_name, entry.pw_uid, login_group, entry.pw_gid)
    group_entry = _lookup(grp.getgrnam, grp.getgrgid, group, "group")
    return Identity(entry.pw_name, entry.pw_uid, group_entry.gr_name, group_entry.gr_gid)


def _lookup(by_name: Callable[[str], Entry], by_id: Callable[[int], Entry],
            key: str, kind: str) -> Entry:
    """Find a pwd/grp entry by name, or by number when key is all digits."""
    try:
        return by_id(int(key)) if key.isdigit() else by_name(key)
    except KeyError:
        raise PrivilegeError(f"unknown {kind} {key!r}: not in the system's {kind} database") from None


def _group_name(gid: int) -> str:
    """Name of a user's login group, or the number when the group has no entry."""
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def drop_privileges(user: str, group: str | None = None) -> bool:
    """Become user (and group) for good; return True if privileges were dropped.

    Call it after binding the listeners and before accepting or forking.
    Supplementary groups become the user's own (initgroups), so a user put in a
    group that may read the TLS key keeps that access across reloads.

    When not running as root there is nothing to drop: if we already are that
    user this is quietly fine, otherwise a warning says the setting is ignored
    (as nginx does for its "user" directive) and False is returned, even for
    a user unknown here. That lets one config file serve both a root start
    and a DynamicUser= unit, whose user exists only while it runs.

    Raises:
        PrivilegeError: (as root) the user or group does not exist, or the
            switch failed.
    """
    if os.geteuid() != ROOT_UID:
        if not _is_current_user(user):
            log.warning("not running as root: ignoring user = %r", user)
        return False
    target = resolve(user, group)
    try:
        os.initgroups(target.user, target.gid)
        os.setgid(target.gid)
        os.setuid(target.uid)
    except OSError as exc:
        raise PrivilegeError(f"cannot switch to user {target.user!r} "
                             f"group {target.group!r}: {exc.strerror}") from None
    _check_dropped(target)
    log.info("running as user %s (uid %d), group %s (gid %d)",
             target.user, target.uid, target.group, target.gid)
    return True


def _is_current_user(user: str) -> bool:
    """Whether user (a name or a number) is who we already run as."""
    euid = os.geteuid()
    if user == str(euid):
        return True
    try:
        return pwd.getpwuid(euid).pw_name == user
    except KeyError:
        return False


def _check_dropped(target: Identity) -> None:
    """Make sure root cannot be regained: the one mistake that must not pass silently."""
    if target.uid == ROOT_UID:
        return
    try:
        os.setuid(ROOT_UID)
    except PermissionError:
        return
    raise PrivilegeError(f"switched to user {target.user!r} but could still regain root")


DEFAULT_USER = "nobody"


def user_to_become(user: str | None, allow_root: bool, *, under_systemd: bool,
                   euid: int | None = None) -> str | None:
    """Whom to drop to after binding, so clients are never served as root by accident.

    Policy, in order:
      - a user configured (config user = / --user): that one;
      - not root: nobody to become;
      - started by systemd: the unit's User=/DynamicUser= decided;
      - allow_root = true in the config: stay root, logged as a warning;
      - otherwise: nobody (DEFAULT_USER), logged as a warning.

    Raises:
        PrivilegeError: the default user does not exist here.
    """
    euid = os.geteuid() if euid is None else euid
    if user:
        return user
    if euid != ROOT_UID or under_systemd:
        return None
    if allow_root:
        log.warning("serving as root because allow_root = true; "
                    "set user = \"...\" in [server] to drop privileges")
        return None
    resolve(DEFAULT_USER)
    log.warning("started as root with no user configured: dropping to %r "
                "(set user = ... or allow_root = true in [server])", DEFAULT_USER)
    return DEFAULT_USER
