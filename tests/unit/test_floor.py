"""Smoke test of scripts/floor.py: it runs, reports sane figures, leaves nothing behind.

No assertion on speed: the figures describe the machine, not forkchat.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psutil
import pytest

FLOOR = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "floor.py")

pytestmark = pytest.mark.timeout(120)


def test_floor_reports_each_measure_and_cleans_up():
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    done = subprocess.run([sys.executable, FLOOR, "--children", "4", "--frames", "20",
                           "--forks", "5"], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    results = {r["measure"]: r for r in map(json.loads, done.stdout.splitlines())}
    assert sorted(results) == ["cow", "direct", "fork", "wake"]
    assert results["fork"]["rounds"] == 5
    assert results["fork"]["child_private_dirty_kib_at_first_line"] > 0
    assert results["cow"]["us_per_fault"] > 0
    wake = results["wake"]
    assert (wake["children"], wake["frames"]) == (4, 20)
    assert wake["child_cpu_us_per_wake"] > 0
    assert 0 < wake["to_last_receiver_ms"]["p50"] <= wake["to_last_receiver_ms"]["p99"]
    direct = results["direct"]
    assert (direct["receivers"], direct["frames"]) == (4, 20)
    assert direct["sender_cpu_us_per_delivery"] > 0
    assert 0 < direct["to_last_receiver_ms"]["p50"] <= direct["to_last_receiver_ms"]["p99"]
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert not left, f"floor.py left processes behind: {left}"


def test_floor_refuses_unbounded_loads():
    done = subprocess.run([sys.executable, FLOOR, "--children", "100000"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "--children 1-1000" in done.stderr


def test_floor_out_of_descriptors_is_a_clear_error_and_leaves_nothing_behind():
    """--children 100 under a hard limit of 64 descriptors: a message, not a traceback."""
    import resource

    def few_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    done = subprocess.run([sys.executable, FLOOR, "--children", "100", "--frames", "3",
                           "--forks", "2"], capture_output=True, text=True, timeout=90,
                          preexec_fn=few_descriptors)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Too many open files" in done.stderr and "ulimit -n" in done.stderr
    assert "Traceback" not in done.stderr
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert not left, f"floor.py left processes behind: {left}"


def load_floor(monkeypatch):
    """scripts/floor.py as a module."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("floor_under_test", FLOOR)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("count, p50, p99", [
    (1, 1, 1), (2, 1, 2), (20, 10, 20), (100, 50, 99), (300, 150, 297), (1000, 500, 990)])
def test_floor_percentiles_are_nearest_rank(monkeypatch, count, p50, p99):
    """Samples 1..count ms: p99 of 100 frames is the 99th, not the largest."""
    floor = load_floor(monkeypatch)
    result = floor._percentiles_ms([k / 1000 for k in range(count, 0, -1)])
    assert result == {"p50": p50, "p99": p99}


def test_wake_reads_the_childrens_cpu_before_they_exit(monkeypatch):
    """The CPU per wake-up is read while every child is still alive: a child that
    exited after its last frame put its exit (about 1 ms) into the figure."""
    floor = load_floor(monkeypatch)
    real = floor._schedstat_s
    states: list[str] = []

    def schedstat_and_state(pid: int) -> float:
        if len(states) == 3:        # the read after the last frame: give exits time
            import time
            time.sleep(0.3)
        with open(f"/proc/{pid}/stat") as handle:
            states.append(handle.read().rsplit(")", 1)[1].split()[0])
        return real(pid)
    monkeypatch.setattr(floor, "_schedstat_s", schedstat_and_state)
    result = floor.measure_wake(3, 4, 0.0)
    assert result["frames"] == 4 and len(states) == 6
    assert "Z" not in states[3:], states
