"""forkchat.systemd against real AF_UNIX datagram sockets and real fds.

The notify tests bind the datagram socket systemd would own, so what is
checked is the bytes a real systemd would receive. Socket activation is
checked in a child interpreter, because the passed sockets must sit at fds
3 and 4 of the process whose pid is in LISTEN_PID.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest

from forkchat import systemd

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYSTEMD_VARIABLES = (
    "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_PID", "LISTEN_FDS",
    "LISTEN_FDNAMES", "JOURNAL_STREAM", "INVOCATION_ID",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test as if outside systemd, whatever ran pytest."""
    for name in SYSTEMD_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def path_receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket at a filesystem path, exported as NOTIFY_SOCKET."""
    directory = tempfile.mkdtemp(prefix="fc-notify-")  # short: sun_path holds 108 bytes
    path = os.path.join(directory, "notify")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield receiver
    receiver.close()
    os.unlink(path)
    os.rmdir(directory)


@pytest.fixture
def abstract_receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket with an abstract name, exported as NOTIFY_SOCKET=@name."""
    name = f"forkchat-test-{os.getpid()}-{os.urandom(4).hex()}"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(b"\0" + name.encode())
    receiver.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    yield receiver
    receiver.close()


def test_notify_path_socket_gets_one_datagram(path_receiver: socket.socket) -> None:
    assert systemd.notify("READY=1", "STATUS=3 clients, 1 room")
    assert path_receiver.recv(4096) == b"READY=1\nSTATUS=3 clients, 1 room"


def test_notify_abstract_socket(abstract_receiver: socket.socket) -> None:
    assert systemd.notify("STOPPING=1")
    assert abstract_receiver.recv(4096) == b"STOPPING=1"


def test_notify_sequence_arrives_in_order(path_receiver: socket.socket) -> None:
    sent = [("READY=1",), ("STATUS=idle",), systemd.reloading(), ("READY=1",),
            ("WATCHDOG=1",), ("STOPPING=1",)]
    for assignments in sent:
        assert systemd.notify(*assignments)
    received = [path_receiver.recv(4096).decode().split("\n") for _ in sent]
    assert [lines[0] for lines in received] == [
        "READY=1", "STATUS=idle", "RELOADING=1", "READY=1", "WATCHDOG=1", "STOPPING=1"]
    assert received[2][1].startswith("MONOTONIC_USEC=")


def test_notify_keeps_each_assignment_on_one_line(path_receiver: socket.socket) -> None:
    assert systemd.notify("STATUS=line one\nREADY=1\r")
    assert path_receiver.recv(4096) == b"STATUS=line one READY=1 "


def test_notify_utf8_status(path_receiver: socket.socket) -> None:
    assert systemd.notify("STATUS=caf\u00e9")
    assert path_receiver.recv(4096) == "STATUS=caf\u00e9".encode()


def test_notify_without_socket_does_nothing() -> None:
    assert systemd.notify("READY=1") is False


@pytest.mark.parametrize("value", ["relative/path", "vsock:2:1234", "@", ""])
def test_notify_unsupported_address_is_ignored(monkeypatch: pytest.MonkeyPatch,
                                               value: str) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert systemd.notify("READY=1") is False


def test_notify_send_error_is_not_raised(monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: os.PathLike[str]) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", os.path.join(tmp_path, "nobody-listens"))
    assert systemd.notify("READY=1") is False


@pytest.mark.parametrize("bad", ["READY", "=1", "BAD KEY=1", ""])
def test_notify_rejects_malformed_assignment(path_receiver: socket.socket, bad: str) -> None:
    with pytest.raises(ValueError, match="KEY=value"):
        systemd.notify(bad)


def test_monotonic_usec_is_monotonic_microseconds() -> None:
    first = systemd.monotonic_usec()
    second = systemd.monotonic_usec()
    assert 0 < first <= second
    assert abs(first / 1e6 - time.monotonic()) < 5


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "{pid}"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "-5"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
])
def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                           expected: float | None) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(pid=os.getpid()))
    assert systemd.watchdog_interval() == expected


def test_listen_fds_none_passed() -> None:
    assert systemd.listen_fds() == []


def test_listen_fds_for_another_pid_are_ignored_and_unset(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PID", "1")
    monkeypatch.setenv("LISTEN_FDS", "2")
    monkeypatch.setenv("LISTEN_FDNAMES", "irc:tutorial")
    assert systemd.listen_fds() == []
    assert not set(systemd.LISTEN_VARIABLES) & set(os.environ)


def test_listen_fds_can_keep_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PID", "1")
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert systemd.listen_fds(unset_env=False) == []
    assert os.environ["LISTEN_FDS"] == "1"


@pytest.mark.parametrize(("variable", "value"), [
    ("LISTEN_FDS", "two"), ("LISTEN_FDS", "-1"), ("LISTEN_PID", "me")])
def test_listen_fds_malformed_names_the_variable(monkeypatch: pytest.MonkeyPatch,
                                                variable: str, value: str) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=variable):
        systemd.listen_fds()
    assert "LISTEN_PID" not in os.environ


def test_listen_fds_promised_but_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """More fds promised than the process has: a clear error, not a traceback."""
    unused = os.open(os.devnull, os.O_RDONLY)
    os.close(unused)  # the lowest free fd, now surely closed
    monkeypatch.setattr(systemd, "SD_LISTEN_FDS_START", unused)
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "1")
    with pytest.raises(ValueError, match=f"LISTEN_FDS=1 but fd {unused} is not open"):
        systemd.listen_fds()


# Runs in a fresh interpreter: put the passed sockets at fds 3.., export the
# variables for our own pid, as systemd would, then report what listen_fds saw.
ACTIVATED_CHILD = r"""
import fcntl, json, os, socket, sys
from forkchat import systemd
passed = [fcntl.fcntl(int(fd), fcntl.F_DUPFD, 100) for fd in sys.argv[2:]]
for fd in sys.argv[2:]:
    os.close(int(fd))
for target, fd in enumerate(passed, start=3):
    os.dup2(fd, target)          # dup2 makes the copy inheritable, as systemd leaves it
    os.close(fd)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(len(passed)))
if sys.argv[1] != "-":
    os.environ["LISTEN_FDNAMES"] = sys.argv[1]
found = systemd.listen_fds()
report = []
for fd, name in found:
    sock = socket.socket(fileno=fd)
    report.append({"fd": fd, "name": name, "inheritable": os.get_inheritable(fd),
                   "listening": sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN),
                   "port": sock.getsockname()[1]})
    sock.detach()
left = sorted(set(systemd.LISTEN_VARIABLES) & set(os.environ))
print(json.dumps({"fds": report, "env_left": left}))
"""


def run_activated_child(names: str, count: int) -> tuple[dict[str, object], list[int]]:
    """Start ACTIVATED_CHILD with count listening sockets; return its report and the ports."""
    listeners = [socket.create_server(("127.0.0.1", 0)) for _ in range(count)]
    try:
        fds = [s.fileno() for s in listeners]
        result = subprocess.run(
            [sys.executable, "-c", ACTIVATED_CHILD, names, *map(str, fds)],
            pass_fds=fds, capture_output=True, text=True, timeout=30, check=True,
            env={**os.environ, "PYTHONPATH": REPO_ROOT})
        return json.loads(result.stdout), [s.getsockname()[1] for s in listeners]
    finally:
        for sock in listeners:
            sock.close()


def test_listen_fds_socket_activation_with_names() -> None:
    report, ports = run_activated_child("irc:tutorial", 2)
    assert report["env_left"] == []
    assert report["fds"] == [
        {"fd": 3, "name": "irc", "inheritable": False, "listening": 1, "port": ports[0]},
        {"fd": 4, "name": "tutorial", "inheritable": False, "listening": 1, "port": ports[1]},
    ]


def test_listen_fds_names_default_to_unknown() -> None:
    report, _ = run_activated_child("-", 1)
    assert [(e["fd"], e["name"]) for e in report["fds"]] == [(3, "unknown")]
    report, _ = run_activated_child("irc", 2)
    assert [(e["fd"], e["name"]) for e in report["fds"]] == [(3, "irc"), (4, "unknown")]


def test_under_journal_matches_stream_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    with tempfile.TemporaryFile() as stream, tempfile.TemporaryFile() as other:
        status = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{status.st_dev}:{status.st_ino}")
        assert systemd.under_journal(stream.fileno())
        assert not systemd.under_journal(other.fileno())


@pytest.mark.parametrize("value", [None, "", "garbage", "1:", ":2", "a:b"])
def test_under_journal_false_without_valid_variable(monkeypatch: pytest.MonkeyPatch,
                                                    value: str | None) -> None:
    if value is not None:
        monkeypatch.setenv("JOURNAL_STREAM", value)
    assert not systemd.under_journal()


def test_under_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not systemd.under_systemd()
    monkeypatch.setenv("INVOCATION_ID", "0123456789abcdef0123456789abcdef")
    assert systemd.under_systemd()


def test_notify_gives_up_when_the_receiver_is_full(path_receiver: socket.socket,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A receiver that never reads makes notify return False, not hang."""
    monkeypatch.setattr(systemd, "NOTIFY_TIMEOUT_S", 0.05)
    sent = 0
    while systemd.notify("STATUS=" + "x" * 1000):
        sent += 1
        assert sent < 100_000, "the receiver's queue never filled"
    assert sent > 0
