"""The shipped systemd units pass `systemd-analyze verify --recursive-errors=yes`.

verify refuses an ExecStart= binary that does not exist, and the unit names
where pip installs forkchat-server on a server (/usr/local/bin), not where it
is in this checkout; so the units are copied to a temporary directory with
ExecStart pointing at this Python interpreter. Nothing else is changed.
--recursive-errors=yes matters: without it systemd 252 exits 0 on a misspelt
directive. --man=no, because the Documentation= pages are checked against
man/ directly (verify would ask man(1), which needs them installed).

systemd-analyze comes with Debian's `systemd` package; .ci/run installs it.
A missing tool fails these tests rather than skipping them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "scripts" / "systemd"
MAN = ROOT / "man"
INSTALLED_SERVER = "/usr/local/bin/forkchat-server"
TUTORIAL_EXAMPLE_START = "forkchat-tutorial.socket:"


def systemd_analyze() -> str:
    """Path of systemd-analyze, or a failure that says what to install."""
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze not found: apt-get install -y systemd")
    return path


def verify(directory: Path, *names: str) -> subprocess.CompletedProcess[str]:
    """Run systemd-analyze verify on unit files in directory."""
    return subprocess.run(
        [systemd_analyze(), "verify", "--man=no", "--recursive-errors=yes",
         *(str(directory / name) for name in names)],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"})


def install_copies(target: Path) -> Path:
    """Copy the shipped units to target with ExecStart= on a binary that exists."""
    service = (UNITS / "forkchat.service").read_text()
    assert f"ExecStart={INSTALLED_SERVER} " in service
    real_binary = os.path.realpath(sys.executable)
    (target / "forkchat.service").write_text(service.replace(INSTALLED_SERVER, real_binary))
    shutil.copy(UNITS / "forkchat.socket", target / "forkchat.socket")
    return target


def directives(path: Path) -> dict[str, list[str]]:
    """KEY -> values of a unit file, comments skipped, repeated keys kept in order."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith(("#", ";", "[")):
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_units_verify_cleanly(tmp_path: Path) -> None:
    result = verify(install_copies(tmp_path), "forkchat.service", "forkchat.socket")
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_verify_catches_a_misspelt_directive(tmp_path: Path) -> None:
    """Guards the guard: a typo must fail, as it does with --recursive-errors=yes."""
    install_copies(tmp_path)
    service = tmp_path / "forkchat.service"
    service.write_text(service.read_text().replace("ProtectHome=yes", "ProtectHom=yes"))
    result = verify(tmp_path, "forkchat.service")
    assert result.returncode != 0
    assert "ProtectHom" in result.stderr


def test_commented_tutorial_socket_example_verifies(tmp_path: Path) -> None:
    """The example in forkchat.socket's comments is a working unit once uncommented."""
    lines = (UNITS / "forkchat.socket").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith(TUTORIAL_EXAMPLE_START))
    example = []
    for line in lines[start + 1:]:
        if not line.startswith("#   "):
            break
        example.append(line[4:])
    assert "FileDescriptorName=tutorial" in example
    install_copies(tmp_path)
    (tmp_path / "forkchat-tutorial.socket").write_text("\n".join(example) + "\n")
    result = verify(tmp_path, "forkchat-tutorial.socket", "forkchat.service")
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


# Directives the design and the server rely on, with their required values.
REQUIRED_SERVICE = {
    "Type": "notify",
    "ExecStart": f"{INSTALLED_SERVER} -c /etc/forkchat/forkchat.toml",
    "ExecReload": "/bin/kill -HUP $MAINPID",
    "Restart": "on-failure",
    "KillMode": "mixed",
    "DynamicUser": "yes",
    "StateDirectory": "forkchat",
    "ConfigurationDirectory": "forkchat",
    "ProtectSystem": "strict",
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "LimitNOFILE": "65536",
    "MemoryDenyWriteExecute": "yes",
}


@pytest.mark.parametrize(("key", "value"), sorted(REQUIRED_SERVICE.items()))
def test_service_directive(key: str, value: str) -> None:
    assert directives(UNITS / "forkchat.service")[key] == [value]


def test_service_limits_fit_a_process_per_client_server() -> None:
    found = directives(UNITS / "forkchat.service")
    from forkchat import config, supervisor
    clients = config.Limits().max_clients
    assert int(found["TasksMax"][0]) > clients + supervisor.SERVER_OWN_PROCESSES
    assert int(found["LimitNOFILE"][0]) > clients + supervisor.BROKER_OWN_FDS
    assert float(found["WatchdogSec"][0]) > 0
    assert float(found["TimeoutStopSec"][0]) > 0


def test_restart_is_prevented_for_the_statuses_a_restart_cannot_cure() -> None:
    """RestartPreventExitStatus= names the server's configuration error and
    its halt after a broker kept dying, and nothing else, as
    forkchat-server(8) says ("not after status 2 or 3"): status 1, a port in
    use say, is worth a restart."""
    from forkchat import cli, supervisor
    found = directives(UNITS / "forkchat.service")["RestartPreventExitStatus"]
    assert " ".join(found).split() == [str(cli.EXIT_USAGE), str(supervisor.BROKER_BOOT_ERROR)]
    text = " ".join((MAN / "forkchat-server.8").read_text().split())
    assert (f"but not after status {cli.EXIT_USAGE} or {supervisor.BROKER_BOOT_ERROR}, which "
            f"a restart would not cure") in text


def test_the_stop_timeout_outlasts_the_servers_own_stop() -> None:
    """TimeoutStopSec= leaves the supervisor its whole stop (the workers'
    grace, then the refusals of connections still queued) before systemd's
    SIGKILL, so that clients get their ERROR line; and the watchdog's
    interval exceeds the broker silence after which the pings stop."""
    from forkchat import supervisor
    found = directives(UNITS / "forkchat.service")
    assert float(found["TimeoutStopSec"][0]) > 2 * (supervisor.STOP_GRACE_S
                                                     + supervisor.STOP_REFUSALS_S)
    assert float(found["WatchdogSec"][0]) > supervisor.BROKER_SILENT_S


def test_socket_passes_an_irc_socket() -> None:
    found = directives(UNITS / "forkchat.socket")
    assert found["ListenStream"] == ["6667"]
    assert found["FileDescriptorName"] == ["irc"]


@pytest.mark.parametrize("unit", ["forkchat.service", "forkchat.socket"])
def test_documentation_pages_are_shipped(unit: str) -> None:
    documentation = " ".join(directives(UNITS / unit)["Documentation"])
    pages = re.findall(r"man:([\w.+-]+)\((\d)\)", documentation)
    assert pages
    missing = [f"{name}.{section}" for name, section in pages
               if not (MAN / f"{name}.{section}").is_file()]
    assert missing == []


def test_exec_reload_sends_the_signal_the_supervisor_reloads_on() -> None:
    """ExecReload= signals the main process, the supervisor, whose SIGHUP
    action reloads (and tells systemd RELOADING=1, then READY=1)."""
    import signal

    from forkchat import supervisor
    command = directives(UNITS / "forkchat.service")["ExecReload"][0].split()
    assert command[0] == "/bin/kill" and command[-1] == "$MAINPID"
    signum = getattr(signal, "SIG" + command[1].removeprefix("-").removeprefix("SIG"))
    assert supervisor.SIGNAL_ACTIONS[signum] is supervisor.Supervisor.handle_sighup
    assert directives(UNITS / "forkchat.service")["NotifyAccess"] == ["main"]


def commands(block: str) -> set[str]:
    """The shell commands of a code block: comments and line continuations
    undone, `a && b` counted as two."""
    joined = block.replace("\\\n", " ")
    found = set()
    for line in joined.splitlines():
        line = line.partition(" #")[0].strip()
        found.update(" ".join(part.split()) for part in line.split(" && ") if part.strip())
    return found


def test_readme_installs_as_the_man_page_does() -> None:
    """The README's install steps were the man page's less the copy of the
    man pages: `man forkchat-server` and the units' Documentation= found
    nothing, and `systemd-analyze verify` failed on those pages."""
    page = (MAN / "forkchat-server.8").read_text()
    examples = page.split("\n.SH EXAMPLES\n", 1)[1]
    install = examples.split("Install as a systemd service", 1)[1]
    block = install.split("\n.EX\n", 1)[1].split("\n.EE\n", 1)[0]
    wanted = commands(block.replace("\\-", "-").replace("\\e\n", "\\\n"))
    assert any(command.startswith("cp -r /opt/forkchat/share/man/") for command in wanted)
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Running as a systemd service", 1)[1].split("\n## ", 1)[0]
    shown = commands("\n".join(line[4:] for line in section.splitlines()
                               if line.startswith("    ")))
    assert sorted(wanted - shown) == []


def test_the_directories_the_service_makes_are_the_servers() -> None:
    """StateDirectory= is the default state_dir and ConfigurationDirectory=
    holds the file ExecStart= reads; the unit made a RuntimeDirectory= too,
    said to hold "private runtime files", where the server keeps none (its
    processes meet on an abstract socket), so it stayed empty."""
    from forkchat import config
    found = directives(UNITS / "forkchat.service")
    assert f"/var/lib/{found['StateDirectory'][0]}" == config.Server().state_dir
    assert f" -c /etc/{found['ConfigurationDirectory'][0]}/" in found["ExecStart"][0]
    package = (ROOT / "forkchat").rglob("*.py")
    uses_run = any("RUNTIME_DIRECTORY" in path.read_text() for path in package)
    assert ("RuntimeDirectory" in found) == uses_run


def comment_drop_ins(unit: Path) -> list[list[str]]:
    """The drop-ins a unit's comments show: a `#   [Service]` line and the
    `#   Key=value` lines under it."""
    blocks, current = [], None
    for line in unit.read_text().splitlines():
        body = line[4:] if line.startswith("#   ") else None
        if body == "[Service]":
            current = [body]
            blocks.append(current)
        elif current is not None and body is not None and re.match(r"\w+=", body):
            current.append(body)
        else:
            current = None
    return blocks


def test_commented_drop_ins_verify(tmp_path: Path) -> None:
    """Each drop-in forkchat.service's comments offer (another ExecStart=, a
    low port, a group that may read the TLS key) is a valid one."""
    blocks = comment_drop_ins(UNITS / "forkchat.service")
    assert any("SupplementaryGroups=ssl-cert" in block for block in blocks)
    assert len(blocks) >= 3
    real_binary = os.path.realpath(sys.executable)
    install_copies(tmp_path)
    for index, block in enumerate(blocks):
        drop_ins = tmp_path / "forkchat.service.d"
        shutil.rmtree(drop_ins, ignore_errors=True)
        drop_ins.mkdir()
        text = "\n".join(block).replace("/opt/forkchat/bin/forkchat-server", real_binary)
        (drop_ins / f"{index}.conf").write_text(text + "\n")
        result = verify(tmp_path, "forkchat.service")
        assert (result.returncode, result.stdout + result.stderr) == (0, ""), block


def test_the_socket_units_reach_is_stated() -> None:
    """forkchat.socket listens on every address, where the server's default
    listener is 127.0.0.1 only: the pages say which the socket binds."""
    found = directives(UNITS / "forkchat.socket")["ListenStream"]
    assert found == ["6667"]          # a bare port: every IPv4 and IPv6 address
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "socket activation on port 6667 of every address" in readme
    page = " ".join((MAN / "forkchat-server.8").read_text().split())
    assert "listens on port 6667 of every IPv4 and IPv6 address .RB ( ListenStream=6667 )" in page
