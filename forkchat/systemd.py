"""The few systemd interfaces forkchat uses, spoken directly, without libsystemd.

systemd talks to a service through environment variables and one datagram
socket, all documented as stable interfaces (sd_notify(3), sd_listen_fds(3),
sd_watchdog_enabled(3), systemd.exec(5)):

    NOTIFY_SOCKET             where to send "KEY=value" lines (READY=1, STATUS=...)
    WATCHDOG_USEC/_PID        how often systemd wants WATCHDOG=1, and from whom
    LISTEN_PID/_FDS/_FDNAMES  sockets passed by socket activation, from fd 3 on
    JOURNAL_STREAM            "dev:ino" of stderr when it is connected to journald
    INVOCATION_ID             set for every process that systemd starts as a unit

Everything here is a no-op when the variables are absent, so the server calls
these functions unconditionally: outside systemd nothing is sent and nothing
fails. Only the supervisor uses this module.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("forkchat.supervisor")

SD_LISTEN_FDS_START = 3  # the first fd passed by socket activation (sd-daemon.h)
DEFAULT_FD_NAME = "unknown"  # sd_listen_fds_with_names(3)'s name when LISTEN_FDNAMES says none
LISTEN_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
# A datagram send blocks only while systemd's queue is full; the supervisor's
# single-threaded loop may wait this long for it, never longer.
NOTIFY_TIMEOUT_S = 1.0


def notify(*assignments: str) -> bool:
    """Send one notification datagram to systemd; return whether it was sent.

    Each argument is one "KEY=value" assignment (e.g. "READY=1",
    "STATUS=12 clients"); they travel together in a single datagram, so
    "RELOADING=1" and "MONOTONIC_USEC=..." arrive as one message. A newline
    inside a value would start a new assignment, so it is replaced by a space.
    Without $NOTIFY_SOCKET nothing is sent. A failed send is logged at debug
    level and never raised: losing a status update must not stop the server.
    The send waits at most NOTIFY_TIMEOUT_S, so a stuck systemd cannot stall
    the caller's event loop.

    Raises:
        ValueError: an argument is not of the form KEY=value (a programming error).
    """
    address = _notify_address(os.environ.get("NOTIFY_SOCKET", ""))
    if address is None:
        return False
    payload = "\n".join(_clean_assignment(a) for a in assignments).encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(NOTIFY_TIMEOUT_S)
            sock.sendto(payload, address)
    except OSError as exc:
        log.debug("sd_notify to %r failed: %s", address, exc)
        return False
    return True


def _notify_address(value: str) -> str | bytes | None:
    """Turn $NOTIFY_SOCKET into a sendto() address: a path, or an abstract name.

    "@name" is systemd's spelling of a Linux abstract socket, which on the wire
    starts with a NUL byte instead of the "@". Anything other than an absolute
    path or "@name" (systemd also knows "vsock:", for VMs) is not for us.
    """
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode("utf-8")
    if value.startswith("/"):
        return value
    if value:
        log.debug("ignoring unsupported NOTIFY_SOCKET=%r", value)
    return None


def _clean_assignment(assignment: str) -> str:
    """Check that one assignment reads KEY=value and keep it on one line."""
    key, sep, _ = assignment.partition("=")
    if not sep or not key or not key.replace("_", "").isalnum():
        raise ValueError(f"not a KEY=value assignment: {assignment!r}")
    return assignment.replace("\r", " ").replace("\n", " ")


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, for "RELOADING=1" "MONOTONIC_USEC=...".

    systemd 253+ requires the timestamp with RELOADING=1 for Type=notify-reload;
    Debian 12's systemd 252 ignores it, so sending it is harmless and ready for both.
    """
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def reloading() -> tuple[str, str]:
    """The assignments that announce a configuration reload: notify(*reloading())."""
    return ("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}")


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings, or None when systemd wants none.

    systemd sets $WATCHDOG_USEC from WatchdogSec=; pinging at half of it leaves
    a full half period of slack (sd_watchdog_enabled(3) advises at most half).
    $WATCHDOG_PID, when set, names the one process meant to ping: a forked
    child that inherited the variable must not believe it is watched.
    """
    watched_pid = os.environ.get("WATCHDOG_PID")
    if watched_pid and watched_pid != str(os.getpid()):
        return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000


def listen_fds(unset_env: bool = True) -> list[tuple[int, str]]:
    """The sockets passed by systemd socket activation, as (fd, name) pairs.

    Fds start at 3 (SD_LISTEN_FDS_START). Names come from LISTEN_FDNAMES
    (systemd.socket's FileDescriptorName=, by default the socket unit's name,
    such as "forkchat.socket"); a name LISTEN_FDNAMES does not give is
    "unknown", as sd_listen_fds_with_names(3) has it. The fds are returned with close-on-exec set, as
    sd_listen_fds(3) does. Nothing is returned unless LISTEN_PID is our pid:
    the variables may have been inherited from a parent they were meant for.

    With unset_env (the default) the three variables are removed, whatever
    they held, so that no child process (broker, workers) inherits them and
    mistakes fd 3 for a listening socket of its own.

    Raises:
        ValueError: LISTEN_FDS or LISTEN_PID is not a number, or a promised
            fd is not open (a broken unit or a hand-made environment); the
            message names the variable.
    """
    try:
        return _parse_listen_env(os.environ)
    finally:
        if unset_env:
            for name in LISTEN_VARIABLES:
                os.environ.pop(name, None)


def _parse_listen_env(env: Mapping[str, str]) -> list[tuple[int, str]]:
    """Read LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES; see listen_fds()."""
    pid_text = env.get("LISTEN_PID", "")
    if not pid_text:
        return []
    pid = _parse_count("LISTEN_PID", pid_text)
    if pid != os.getpid():
        return []
    count = _parse_count("LISTEN_FDS", env.get("LISTEN_FDS", "0"))
    names = env.get("LISTEN_FDNAMES", "").split(":") if env.get("LISTEN_FDNAMES") else []
    names += [DEFAULT_FD_NAME] * (count - len(names))
    fds = range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count)
    for fd in fds:
        _close_on_exec(fd, count)
    return [(fd, name or DEFAULT_FD_NAME) for fd, name in zip(fds, names)]


def bound_address(fd: int) -> tuple[str, int]:
    """The (address, port) a passed TCP listening socket is bound to.

    systemd gives every ListenStream= of one unit the same name, so the
    address is what tells a unit's sockets apart: the server matches each
    with the [[listen]] entry of its port.  The fd stays open and ours.

    Raises:
        ValueError: fd is not a socket (a broken unit or a hand-made
            environment), or not a TCP stream socket: a Unix socket
            (ListenStream=/path) was announced as "listening on /:r" and its
            first client stopped the server with a traceback, since clients
            are told apart by their IP address.
    """
    try:
        sock = socket.socket(fileno=fd)
    except OSError as error:
        raise ValueError(f"fd {fd} passed by systemd is not a socket "
                         f"({error.strerror or error})") from None
    try:
        family, kind, name = sock.family, sock.type, sock.getsockname()
    finally:
        sock.detach()
    if family not in (socket.AF_INET, socket.AF_INET6) or kind != socket.SOCK_STREAM:
        raise ValueError(f"fd {fd} passed by systemd is not a TCP socket ({family.name} "
                         f"{kind.name}): forkchat serves TCP only, give the .socket unit "
                         f"ListenStream=PORT or ListenStream=ADDRESS:PORT")
    return name[0], name[1]


def _close_on_exec(fd: int, count: int) -> None:
    """Keep a passed fd from leaking into exec'd programs; it must be open."""
    try:
        os.set_inheritable(fd, False)
    except OSError:
        raise ValueError(f"LISTEN_FDS={count} but fd {fd} is not open") from None


def _parse_count(variable: str, text: str) -> int:
    """Parse a non-negative integer from the environment, or say which variable is wrong."""
    if not text.strip().isdigit():
        raise ValueError(f"{variable}={text!r} is not a non-negative integer")
    return int(text)


def under_journal(fd: int = 2) -> bool:
    """Whether fd (stderr by default) is a stream to journald.

    systemd sets $JOURNAL_STREAM to "device:inode" of the stream it connected
    to stderr/stdout. Checking that stderr still is that stream (not redirected
    by a shell later) is what the journal's documentation recommends before
    emitting "<N>" priority prefixes.
    """
    expected = os.environ.get("JOURNAL_STREAM", "")
    device, sep, inode = expected.partition(":")
    if not sep or not device.isdigit() or not inode.isdigit():
        return False
    try:
        status = os.fstat(fd)
    except OSError:
        return False
    return (status.st_dev, status.st_ino) == (int(device), int(inode))


def under_systemd() -> bool:
    """Whether systemd started this process as (part of) a unit.

    systemd sets $INVOCATION_ID for every unit it starts (since v232); a
    notify socket is a second sign. Used to decide privilege policy: under
    systemd the unit's User=/DynamicUser= decides who we run as.
    """
    return bool(os.environ.get("INVOCATION_ID") or os.environ.get("NOTIFY_SOCKET"))
