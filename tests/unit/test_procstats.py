"""procstats: the supervisor's memory census, against real processes."""

from __future__ import annotations

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
