"""Process figures for STATS and status lines: the only psutil importer.

USS and PSS, not RSS: a forked CPython shows ~16 MiB RSS per worker either
way, while what a worker really costs is its unique (USS) or proportional
(PSS) share.
"""

from __future__ import annotations

import errno
import os
import time
from typing import Any

import psutil

# psutil passes some /proc read errors on as they are: EMFILE or ENFILE (out
# of descriptors) is an OSError, not a psutil.Error.  A status report or a
# census must not take its process down for it (the supervisor's is the
# whole server), so both are caught, as a process not to be read now.
UNREADABLE = (psutil.Error, OSError)


def tree(root_pid: int) -> list[psutil.Process]:
    """The root and all its descendants that still exist; [] when not even
    the root can be read (no /proc)."""
    try:
        root = psutil.Process(root_pid)
    except UNREADABLE:
        return []
    try:
        return [root, *root.children(recursive=True)]
    except UNREADABLE:
        # psutil finds children through the parent of every process on the
        # host, and the boot time in /proc/stat: systemd's ProcSubset=pid
        # (a hardened unit) has no /proc/stat, and the report said
        # "processes 0".  The kernel's list of each task's children needs
        # the process's own directory only.
        return [root, *_descendants(root_pid)]


def _descendants(root_pid: int) -> list[psutil.Process]:
    found: list[psutil.Process] = []
    waiting = [root_pid]
    while waiting:
        for pid in _children_of(waiting.pop()):
            try:
                found.append(psutil.Process(pid))
            except UNREADABLE:
                continue          # gone meanwhile
            waiting.append(pid)
    return found


def _children_of(pid: int) -> list[int]:
    pids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as listing:
                pids += [int(word) for word in listing.read().split()]
    except (OSError, ValueError):
        pass                      # gone meanwhile, or a kernel without the list
    return pids


NOTHING = {"rss": 0, "uss": 0, "pss": 0}


def memory(process: psutil.Process) -> dict[str, int] | None:
    """The figures, zeros for a process gone meanwhile, or None when the
    kernel will not show them (a process that changed user keeps its maps
    readable by root only): a report must not pass that off as 0 MiB."""
    try:
        info = process.memory_full_info()
        return {"rss": info.rss, "uss": getattr(info, "uss", 0), "pss": getattr(info, "pss", 0)}
    except psutil.AccessDenied:
        return None
    except psutil.Error:
        return dict(NOTHING)
    except OSError:                 # out of descriptors: not known, not zero
        return None


def summary(root_pid: int) -> dict[str, Any]:
    """Totals over the whole tree, and the supervisor, broker and spawner
    alone; `unreadable` counts the processes left out of the totals."""
    processes = tree(root_pid)
    totals = dict(NOTHING)
    roles: dict[str, dict[str, int] | None] = {}
    workers = unreadable = 0
    for process in processes:
        figures = memory(process)
        if figures is None:
            unreadable += 1
        for key in totals:
            totals[key] += (figures or NOTHING)[key]
        role = _role(process, root_pid)
        if role == "worker":
            workers += 1
        else:
            roles[role] = figures
    return {"processes": len(processes), "workers": workers, "total": totals, "roles": roles,
            "unreadable": unreadable}


def _role(process: psutil.Process, root_pid: int) -> str:
    if process.pid == root_pid:
        return "supervisor"
    try:
        name = process.name()
    except UNREADABLE:
        return "worker"
    for suffix, role in ROLE_SUFFIXES.items():
        if name.endswith(suffix):
            return role
    return "worker"


# The end of each process's name (15 bytes at most, so "spawn") -> its role.
ROLE_SUFFIXES = {"broker": "broker", "spawn": "spawner"}


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
        self._short = False     # a process could not be read: the sum is too low
        self._blind = False     # not even our own process: there is no /proc

    @property
    def running(self) -> bool:
        return self._next < len(self._pids)

    def start(self, pids: list[int]) -> None:
        self._pids, self._next, self._sum, self._short = list(pids), 0, 0, False
        self._blind = False

    def step(self) -> bool:
        """Read the next slice; True once the pass is done and `total` is new."""
        end = min(self._next + self.slice_size, len(self._pids))
        for pid in self._pids[self._next:end]:
            try:
                process = psutil.Process(pid)
                self._sum += (memory(process) or NOTHING)["pss"]
            except psutil.Error:
                # gone since the pass started: it costs nothing now; but the
                # reader itself is never gone, only /proc (STATUS= said 0 MiB)
                self._blind = self._blind or pid == os.getpid()
            except OSError:
                self._short = True    # out of descriptors
        self._next = end
        if self.running:
            return False
        if self._blind:
            self.total = None         # not known: left out of STATUS=
        elif not self._short or self.total is None:
            self.total = self._sum    # else the last whole figure stands
        return True


def uptime(root_pid: int, now: float) -> float:
    """Seconds since `root_pid` started (0.0 when that cannot be read)."""
    try:
        return max(0.0, now - psutil.Process(root_pid).create_time())
    except psutil.Error:
        pass
    except OSError as error:
        if error.errno in (errno.EMFILE, errno.ENFILE):
            return 0.0                # the reading below needs a descriptor too
    return _uptime_since_boot(root_pid)


def _uptime_since_boot(pid: int) -> float:
    """The uptime from the process's start in clock ticks since boot, for
    where psutil's needs the boot time in /proc/stat (ProcSubset=pid)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # the name in parentheses may hold spaces: count after the last ')'
            fields = stat.read().rsplit(b")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0
    return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)


def report_lines(summary: dict[str, Any]) -> list[str]:
    """Human lines for STATS p and the SIGUSR1 report."""
    if not summary["processes"]:
        # not even the root, which runs: /proc is not there to read
        return ["processes and memory not readable (no /proc)"]
    unreadable = summary.get("unreadable", 0)
    left_out = f" (without {unreadable} not readable)" if unreadable else ""
    lines = [f"processes {summary['processes']} workers {summary['workers']}",
             f"total {_figures(summary['total'])}{left_out}"]
    for role, figures in sorted(summary["roles"].items()):
        shown = _figures(figures) if figures is not None else "memory not readable"
        lines.append(f"{role} {shown}")
    return lines


def _figures(figures: dict[str, int]) -> str:
    mib = 1024 * 1024
    return (f"rss {figures['rss'] / mib:.1f} MiB uss {figures['uss'] / mib:.1f} MiB "
            f"pss {figures['pss'] / mib:.1f} MiB")
