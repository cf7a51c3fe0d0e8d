"""The cgroup's task limit (systemd's TasksMax=, pids.max) below max_clients
is warned of at start, as RLIMIT_NOFILE and RLIMIT_NPROC are.

The reader takes the paths of /proc/self/cgroup and /sys/fs/cgroup, so it
is tried here on sample trees: this machine may have no pids controller.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from forkchat import config, supervisor


def tree(tmp_path: Path, cgroup: str, limits: dict[str, str]) -> tuple[str, str]:
    """A sample /proc/self/cgroup and a cgroup root with pids.max files,
    keyed by their directory under the root."""
    proc = tmp_path / "cgroup"
    proc.write_text(cgroup)
    root = tmp_path / "sys"
    root.mkdir()
    for directory, value in limits.items():
        (root / directory).mkdir(parents=True, exist_ok=True)
        (root / directory / "pids.max").write_text(value + "\n")
    return str(proc), str(root)


SERVICE = "system.slice/forkchat.service"


def test_a_services_own_limit_is_read(tmp_path):
    proc, root = tree(tmp_path, f"0::/{SERVICE}\n", {SERVICE: "1000", "system.slice": "max"})
    assert supervisor.cgroup_pids_max(proc, root) == (1000, f"{root}/{SERVICE}/pids.max")


def test_the_lowest_limit_above_the_cgroup_counts(tmp_path):
    """A login's user-UID.slice holds TasksMax=, its session scope none."""
    scope = "user.slice/user-1000.slice/session-3.scope"
    proc, root = tree(tmp_path, f"0::/{scope}\n", {scope: "max", "user.slice/user-1000.slice":
                                                   "700", "user.slice": "9000"})
    assert supervisor.cgroup_pids_max(proc, root) == \
        (700, f"{root}/user.slice/user-1000.slice/pids.max")


def test_cgroup_v1s_pids_hierarchy_is_read(tmp_path):
    """A hybrid layout: v2 holds no controller, v1's pids hierarchy the limit."""
    proc, root = tree(tmp_path, f"12:memory:/{SERVICE}\n5:pids:/{SERVICE}\n0::/{SERVICE}\n",
                      {f"pids/{SERVICE}": "42", f"memory/{SERVICE}": "1"})
    assert supervisor.cgroup_pids_max(proc, root) == (42, f"{root}/pids/{SERVICE}/pids.max")


@pytest.mark.parametrize("cgroup, limits", [
    (f"0::/{SERVICE}\n", {SERVICE: "max"}),              # TasksMax=infinity
    (f"0::/{SERVICE}\n", {}),                            # no pids controller
    ("0::/\n", {"": "max"}),
    ("garbage\n", {"": "10"}),
    ("", {"": "10"}),
])
def test_no_limit(tmp_path, cgroup, limits):
    proc, root = tree(tmp_path, cgroup, limits)
    assert supervisor.cgroup_pids_max(proc, root) is None


def test_no_proc_file_is_no_limit(tmp_path):
    assert supervisor.cgroup_pids_max(str(tmp_path / "none"), str(tmp_path)) is None


def test_a_path_cannot_climb_out_of_the_root(tmp_path):
    proc, root = tree(tmp_path, "0::/../../etc\n", {})
    (tmp_path / "pids.max").write_text("5\n")
    assert supervisor.cgroup_pids_max(proc, root) is None


def warnings_at_start(monkeypatch, caplog, proc: str, root: str, max_clients: int) -> list[str]:
    """What warn_os_limits says with the rlimits out of the way."""
    monkeypatch.setattr(supervisor.resource, "getrlimit",
                        lambda kind: (supervisor.resource.RLIM_INFINITY,) * 2)
    monkeypatch.setattr(supervisor, "PROC_CGROUP", proc)
    monkeypatch.setattr(supervisor, "CGROUP_ROOT", root)
    with caplog.at_level(logging.INFO, logger="forkchat.supervisor"):
        supervisor.warn_os_limits(config.Limits(max_clients=max_clients))
    return [record.getMessage() for record in caplog.records]


@pytest.mark.parametrize("euid", [0, 1000])
def test_a_task_limit_below_max_clients_is_said_at_start(tmp_path, monkeypatch, caplog, euid):
    """TasksMax=1000 with max_clients = 5000: the 998th client's fork failed
    and the rest were refused 'busy', and nothing had said why.  Root is
    held to it too (unlike RLIMIT_NPROC)."""
    monkeypatch.setattr(supervisor.os, "geteuid", lambda: euid)
    proc, root = tree(tmp_path, f"0::/{SERVICE}\n", {SERVICE: "1000"})
    assert warnings_at_start(monkeypatch, caplog, proc, root, 5000) == [
        f"max_clients = 5000, but the cgroup task limit (1000) leaves room for about 997 "
        f"clients: raise TasksMax= ({root}/{SERVICE}/pids.max) or lower max_clients"]


@pytest.mark.parametrize("max_clients, wanted", [(997, 0), (998, 1)])
def test_the_servers_own_processes_count_against_the_task_limit(
        tmp_path, monkeypatch, caplog, max_clients, wanted):
    """The supervisor, the broker and the spawner are tasks of the cgroup too."""
    proc, root = tree(tmp_path, f"0::/{SERVICE}\n", {SERVICE: "1000"})
    assert len(warnings_at_start(monkeypatch, caplog, proc, root, max_clients)) == wanted


def test_no_task_limit_no_warning(tmp_path, monkeypatch, caplog):
    proc, root = tree(tmp_path, f"0::/{SERVICE}\n", {SERVICE: "max"})
    assert warnings_at_start(monkeypatch, caplog, proc, root, 5000) == []
