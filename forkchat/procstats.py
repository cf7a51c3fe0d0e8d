"""Process figures for STATS and status lines: the only psutil importer.

USS and PSS, not RSS: a forked CPython shows ~16 MiB RSS per worker either
way, while what a worker really costs is its unique (USS) or proportional
(PSS) share.
"""

from __future__ import annotations

from typing import Any

import psutil


def tree(root_pid: int) -> list[psutil.Process]:
    """The root and all its descendants that still exist."""
    try:
        root = psutil.Process(root_pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def memory(process: psutil.Process) -> dict[str, int]:
    try:
        info = process.memory_full_info()
        return {"rss": info.rss, "uss": getattr(info, "uss", 0), "pss": getattr(info, "pss", 0)}
    except psutil.Error:
        return {"rss": 0, "uss": 0, "pss": 0}


def summary(root_pid: int) -> dict[str, Any]:
    """Totals over the whole tree, and the supervisor and broker alone."""
    processes = tree(root_pid)
    totals = {"rss": 0, "uss": 0, "pss": 0}
    roles: dict[str, dict[str, int]] = {}
    workers = 0
    for process in processes:
        figures = memory(process)
        for key in totals:
            totals[key] += figures[key]
        role = _role(process, root_pid)
        if role == "worker":
            workers += 1
        else:
            roles[role] = figures
    return {"processes": len(processes), "workers": workers, "total": totals, "roles": roles}


def _role(process: psutil.Process, root_pid: int) -> str:
    if process.pid == root_pid:
        return "supervisor"
    try:
        name = process.name()
    except psutil.Error:
        return "worker"
    for role in ("broker", "spawn"):
        if name.endswith(role):
            return role
    return "worker"


class PssCensus:
    """The total PSS of a set of processes, read a slice at a time.

    One smaps read costs a fraction of a millisecond, so a whole pass over
    thousands of workers would stall the supervisor's accept loop for
    seconds; the supervisor calls `step()` from a short timer instead.
    """

    def __init__(self, slice_size: int = 16) -> None:
        self.slice_size = slice_size
        self.total: int | None = None     # bytes, from the last finished pass
        self._pids: list[int] = []
        self._next = 0
        self._sum = 0

    @property
    def running(self) -> bool:
        return self._next < len(self._pids)

    def start(self, pids: list[int]) -> None:
        self._pids, self._next, self._sum = list(pids), 0, 0

    def step(self) -> bool:
        """Read the next slice; True once the pass is done and `total` is new."""
        end = min(self._next + self.slice_size, len(self._pids))
        for pid in self._pids[self._next:end]:
            try:
                self._sum += memory(psutil.Process(pid))["pss"]
            except psutil.Error:
                pass              # gone since the pass started: it costs nothing now
        self._next = end
        if self.running:
            return False
        self.total = self._sum
        return True


def uptime(root_pid: int, now: float) -> float:
    try:
        return max(0.0, now - psutil.Process(root_pid).create_time())
    except psutil.Error:
        return 0.0


def report_lines(summary: dict[str, Any]) -> list[str]:
    """Human lines for STATS p and the SIGUSR1 report."""
    mib = 1024 * 1024
    total = summary["total"]
    lines = [f"processes {summary['processes']} workers {summary['workers']}",
             f"total rss {total['rss'] / mib:.1f} MiB uss {total['uss'] / mib:.1f} MiB "
             f"pss {total['pss'] / mib:.1f} MiB"]
    for role, figures in sorted(summary["roles"].items()):
        lines.append(f"{role} rss {figures['rss'] / mib:.1f} MiB uss "
                     f"{figures['uss'] / mib:.1f} MiB pss {figures['pss'] / mib:.1f} MiB")
    return lines
