"""procstats: the supervisor's memory census, against real processes."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import psutil

from forkchat import procstats


def test_census_reads_a_slice_per_step_and_sums_the_pass():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        census = procstats.PssCensus(slice_size=1)
        census.start([os.getpid(), child.pid])
        assert census.running and census.total is None
        assert census.step() is False          # one process read, one to go
        assert census.step() is True and not census.running
        ours = psutil.Process().memory_full_info().pss
        assert census.total is not None and census.total > ours / 2
    finally:
        child.stdin.close()
        child.wait(10)


def test_census_counts_a_vanished_process_as_nothing():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(10)
    census = procstats.PssCensus()
    census.start([gone.pid])
    assert census.step() is True and census.total == 0


class Unreadable:
    """A process whose maps the kernel keeps from us, as after a change of user."""
    pid = 1

    def memory_full_info(self):
        raise psutil.AccessDenied(self.pid)


def test_memory_the_kernel_hides_is_not_passed_off_as_nothing():
    assert procstats.memory(Unreadable()) is None


def test_a_report_says_which_figures_it_could_not_read(monkeypatch):
    """Started as root and switched to nobody, the supervisor could read only
    itself: the report said 'broker rss 0.0 MiB' and a 'total' of one process."""
    ours = os.getpid()
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        real = psutil.Process.memory_full_info

        def hidden_for_children(process):
            if process.pid != ours:
                raise psutil.AccessDenied(process.pid)
            return real(process)

        monkeypatch.setattr(psutil.Process, "memory_full_info", hidden_for_children)
        summary = procstats.summary(ours)
        assert summary["unreadable"] >= 1
        lines = procstats.report_lines(summary)
        assert f"(without {summary['unreadable']} not readable)" in lines[1], lines
        assert "supervisor rss " in "\n".join(lines)
    finally:
        child.stdin.close()
        child.wait(10)


class Named:
    pid = 2

    def __init__(self, name: str) -> None:
        self._name = name

    def name(self) -> str:
        return self._name


def test_the_spawner_is_named_in_full():
    """Its process name is cut to 15 bytes ('...-spawn'); the report says 'spawner'."""
    assert procstats._role(Named("forkchat-spawn"), 1) == "spawner"
    assert procstats._role(Named("forkchat-broker"), 1) == "broker"
    summary = {"processes": 2, "workers": 0, "unreadable": 1,
               "total": dict(procstats.NOTHING),
               "roles": {"spawner": None, "supervisor": dict(procstats.NOTHING)}}
    assert "spawner memory not readable" in procstats.report_lines(summary)


def _out_of_descriptors(monkeypatch):
    """psutil at EMFILE: the OSError of the /proc open, as it is."""
    def no_descriptor(*args, **kwargs):
        raise OSError(errno.EMFILE, "Too many open files")
    monkeypatch.setattr(procstats.psutil, "Process", no_descriptor)


def test_out_of_descriptors_the_census_keeps_its_last_total_and_raises_nothing(monkeypatch):
    """The OSError escaped the supervisor's memory timer and ended the server."""
    census = procstats.PssCensus()
    census.start([os.getpid()])
    assert census.step() is True
    before = census.total
    assert before
    _out_of_descriptors(monkeypatch)
    census.start([os.getpid()])
    assert census.step() is True and census.total == before


def test_out_of_descriptors_a_status_report_and_uptime_raise_nothing(monkeypatch):
    """SIGUSR1 (the supervisor) and STATS u (a worker) died of it."""
    _out_of_descriptors(monkeypatch)
    assert procstats.summary(os.getpid())["processes"] == 0
    assert procstats.uptime(os.getpid(), 0.0) == 0.0
