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
