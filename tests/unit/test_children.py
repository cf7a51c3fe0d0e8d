"""children.start: what a child inherits in its first moments."""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import sys

import pytest

from forkchat import children

pytestmark = pytest.mark.timeout(60)

# A parent with the supervisor's signal wiring (a Python handler and a wakeup
# fd) starts a child whose start-up is held at a gate, signals it there,
# then opens the gate: the child's role sets its handler as a worker does
# and says whether the SIGTERM reached it.  It reports how the child ended
# and whether the parent's own loop was woken.
SCRIPT = r"""
import os, select, signal
from forkchat import children, signals

read_end, write_end = signals.install([signal.SIGTERM])
children.make_lifeline()
reached, gate = os.pipe(), os.pipe()
real_bootstrap = children._bootstrap

def held_bootstrap(process, lifeline_r):
    os.write(reached[1], b"x")
    os.read(gate[0], 1)
    return real_bootstrap(process, lifeline_r)

def role():
    mine, _keep = signals.install([signal.SIGTERM])
    children.take_sigterm()
    select.select([mine], [], [], 5)
    os._exit(42 if signal.SIGTERM in signals.received(mine) else 1)

children._bootstrap = held_bootstrap
child = children.start("forkchat-test", role, ())
os.read(reached[0], 1)
os.kill(child.pid, signal.SIGTERM)
os.write(gate[1], b"x")
if not select.select([child.sentinel], [], [], 5)[0]:
    os.kill(child.pid, signal.SIGKILL)  # it never heard of the SIGTERM
_, status = os.waitpid(child.pid, 0)
print(os.waitstatus_to_exitcode(status), signals.received(read_end))
"""


def test_a_signal_to_a_new_child_is_held_for_its_own_handler_not_the_parents():
    """A SIGTERM before the child's role has its handler (a stop amid a
    burst of connections) once killed a new worker outright, so its client
    never heard "Server shutting down"; before that it woke the parent."""
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr[-2000:]
    code, woken = done.stdout.split(maxsplit=1)
    assert woken.strip() == "b''", "the child's signal woke the parent's loop"
    assert int(code) == 42, "the SIGTERM did not wait for the child's own handler"


# -- same-page merging (memory_merge) -------------------------------------------

MERGE_SCRIPT = r"""
import os
from forkchat import children

def merge_any():
    try:
        with open("/proc/self/ksm_stat") as stat:
            for line in stat:
                if line.startswith("ksm_merge_any:"):
                    return line.split()[1]
    except OSError:
        pass
    return "unknown"

before = merge_any()
problem = children.merge_memory()
read_end, write_end = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(write_end, merge_any().encode())
    os._exit(0)
os.waitpid(pid, 0)
print(before, os.read(read_end, 100).decode(), problem or "")
"""


def _kernel_shows_merge_any() -> bool:
    try:
        with open("/proc/self/ksm_stat") as stat:
            return any(line.startswith("ksm_merge_any:") for line in stat)
    except OSError:
        return False


def test_merge_memory_opts_in_this_process_and_the_children_it_forks():
    done = subprocess.run([sys.executable, "-c", MERGE_SCRIPT], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr[-2000:]
    before, child, *problem = done.stdout.split(maxsplit=2)
    if not _kernel_shows_merge_any():
        pytest.skip("this kernel shows no ksm_merge_any in /proc/PID/ksm_stat (Linux < 6.8)")
    assert (before, child, problem) == ("no", "yes", [])


def test_merge_memory_says_why_the_kernel_refused(monkeypatch):
    def refusing_prctl(*args: object) -> int:
        ctypes.set_errno(errno.EINVAL)
        return -1
    monkeypatch.setattr(children, "_libc_prctl", refusing_prctl)
    assert children.merge_memory() == os.strerror(errno.EINVAL)
    monkeypatch.setattr(children, "_libc_prctl", None)
    assert children.merge_memory() == "prctl is not available"


@pytest.mark.parametrize(("content", "expected"), [("1\n", True), ("0\n", False),
                                                   ("2\n", False), (None, None)])
def test_ksm_running_reads_the_kernel_switch(tmp_path, content, expected):
    flag = tmp_path / "run"
    if content is not None:
        flag.write_text(content)
    assert children.ksm_running(str(flag)) is expected


def test_descends_from_walks_up_the_parents():
    me = os.getpid()
    assert children.parent_pid(me) == os.getppid()
    assert children.descends_from(me, me)
    assert children.descends_from(me, os.getppid())
    assert not children.descends_from(os.getppid(), me)
    assert not children.descends_from(1, me)
    assert children.parent_pid(2 ** 22 + 1) is None          # above pid_max: no such process
    assert not children.descends_from(2 ** 22 + 1, me)


def test_proc_of_another_pid_namespace_is_not_read(monkeypatch):
    """A /proc whose 'self' is not our pid is another namespace's: its pids
    name other processes, so descends_from could only refuse our own."""
    assert children.proc_readable()
    monkeypatch.setattr(children.os, "readlink", lambda path: str(os.getpid() + 1))
    assert not children.proc_readable()


def test_descends_from_pid_1(monkeypatch):
    """A server that is a container's first process is pid 1: its worker
    (a spawner's child, or its own once adopted) descends from it."""
    parents = {30: 20, 20: 1, 21: 1, 1: 0}
    monkeypatch.setattr(children, "parent_pid", parents.get)
    assert children.descends_from(30, 1) and children.descends_from(21, 1)
    assert children.descends_from(1, 1)
    assert not children.descends_from(30, 21)


def test_descends_from_a_parent_reaped_during_the_walk(monkeypatch):
    """A retired spawner exits as soon as it has reported its last worker:
    read between the worker's parent (the spawner) and the spawner's
    (gone, reaped), the worker was refused as a stranger to the server."""
    looks = iter([20, None, 1, 0])    # 30 -> 20; 20 reaped; 30 -> 1 (adopted)
    monkeypatch.setattr(children, "parent_pid", lambda pid: next(looks))
    assert children.descends_from(30, 1)
    monkeypatch.setattr(children, "parent_pid", {30: 20, 1: 0}.get)
    assert not children.descends_from(30, 1)      # still a stranger once looked at again
    assert not children.descends_from(40, 1)      # no such process


# -- a fork the kernel refuses ----------------------------------------------------

# The parent asks for a child with fork() failing (EAGAIN: RLIMIT_NPROC or
# TasksMax reached), then with the child's pidfd failing (EMFILE), and prints
# what each start raised, whether the handled signals are still blocked, and
# whether any child is left running or unreaped.
FORK_FAILS_SCRIPT = r"""
import errno, os, signal, time
from forkchat import children

children.make_lifeline()
real_fork, real_pidfd_open = os.fork, os.pidfd_open

def no_fork():
    raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

def no_pidfd(pid, *args):
    raise OSError(errno.EMFILE, "Too many open files")

def attempt():
    try:
        children.start("forkchat-test", time.sleep, (3,))
    except Exception as error:
        return type(error).__name__
    return "started"

os.fork = no_fork
first = attempt()
os.fork = real_fork
os.pidfd_open = no_pidfd
second = attempt()
os.pidfd_open = real_pidfd_open
blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
try:
    left = os.waitpid(-1, os.WNOHANG)[0]
except ChildProcessError:
    left = "none"
print(first, second, signal.SIGTERM in blocked, left)
"""


def test_a_refused_fork_raises_oserror_and_leaves_no_child_behind():
    """A failed fork() raised AttributeError (no pid) from the cleanup, which
    crashed the spawner at every connection until the server gave up."""
    done = subprocess.run([sys.executable, "-c", FORK_FAILS_SCRIPT], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["BlockingIOError", "OSError", "False", "none"]


# -- the child's end -------------------------------------------------------------

# A child whose standard error has no reader (journald restarted) writes a
# line past logging, as Python's "Exception ignored" messages do; the line
# stays in sys.stderr's buffer.  The parent prints the child's exit code.
BROKEN_STDERR_SCRIPT = r"""
import sys
from forkchat import children

def role():
    try:
        sys.stderr.write("a line with no reader\n")
    except OSError:
        pass
    return 3

children.make_lifeline()
child = children.start("forkchat-test", children.run_child, ("forkchat-test", set(), role))
child.join(10)
print(child.exitcode)
"""


def test_a_child_with_a_broken_standard_error_exits_with_its_own_status():
    """run_child's last flush of a standard error whose reader is gone
    failed, and the child exited 1, not with its own status."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    try:
        done = subprocess.run([sys.executable, "-c", BROKEN_STDERR_SCRIPT], stdout=subprocess.PIPE,
                              stderr=write_end, text=True, timeout=30, env=env)
    finally:
        os.close(write_end)
    assert done.stdout.strip() == "3"


# A child's start: multiprocessing's own bootstrap made to fail, the child
# reports what it knows of its parent (the lifeline) and of its own start.
LEAN_START_SCRIPT = r"""
import multiprocessing, multiprocessing.process, os, sys
from forkchat import children

def role(write_end):
    parent = multiprocessing.parent_process()
    text = (f"{children.lifeline_fd() == children._lifeline[0]} {parent.pid == os.getppid()} "
            f"{multiprocessing.current_process().name} {os.readlink(f'/proc/self/fd/{sys.stdin.fileno()}')}")
    os.write(write_end, text.encode())
    os._exit(5)

def broken(*args, **kwargs):
    os._exit(9)

children.make_lifeline()
multiprocessing.process.BaseProcess._bootstrap = broken
read_end, write_end = os.pipe()
child = children.start("forkchat-test", role, (write_end,))
child.join(10)
os.close(write_end)
print(child.exitcode, os.read(read_end, 200).decode())
"""


def test_a_child_starts_without_multiprocessings_bootstrap():
    """Its work (imports at each call, registries nothing of ours fills)
    was some 25 pages every worker copied from its spawner.  The child
    still knows its parent's sentinel (the lifeline), its own name, and
    has standard input on /dev/null."""
    done = subprocess.run([sys.executable, "-c", LEAN_START_SCRIPT], capture_output=True,
                          text=True, timeout=30, stdin=subprocess.PIPE)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["5", "True", "True", "forkchat-test", "/dev/null"]


FAILING_START_SCRIPT = r"""
from forkchat import children

def role():
    raise LookupError("no such thing")

children.make_lifeline()
child = children.start("forkchat-test", role, ())
child.join(10)
print(child.exitcode)
"""


def test_an_error_before_the_role_runs_is_shown_and_exits_1():
    """An error that escapes a child's target (before run_child catches the
    role's) is printed with its traceback, as multiprocessing did."""
    done = subprocess.run([sys.executable, "-c", FAILING_START_SCRIPT], capture_output=True,
                          text=True, timeout=30)
    assert done.stdout.strip() == "1"
    assert "Process forkchat-test:" in done.stderr
    assert "LookupError: no such thing" in done.stderr


# One process object forks three children, each with its own arguments;
# each says what multiprocessing tells it of itself and its parent, and
# exits with its argument.  The parent, with gc disabled as the spawner
# runs, reports the exit codes, whether multiprocessing's own sets of
# processes grew, and whether a cycle dropped before each fork was
# collected rather than frozen for good.
FORK_FROM_SCRIPT = r"""
import gc, multiprocessing, multiprocessing.process, os, sys, weakref
from forkchat import children

class Node:
    pass

def role(code, out):
    me, parent = multiprocessing.current_process(), multiprocessing.parent_process()
    os.write(out, f"{code} {me.name} {parent.pid == os.getppid()}\n".encode())
    os._exit(code)

children.make_lifeline()
read_end, write_end = os.pipe()
process = children.template("forkchat-test", role)
known = len(multiprocessing.process._children), len(multiprocessing.process._dangling)
gc.disable()
gc.freeze()
codes, collected = [], []
for code in (3, 4, 5):
    cycle = Node()
    cycle.me = cycle
    dropped = weakref.ref(cycle)
    del cycle
    started = children.fork_from(process, (code, write_end))
    collected.append(dropped() is None)
    os.close(started.sentinel)
    codes.append(os.waitstatus_to_exitcode(os.waitpid(started.pid, 0)[1]))
os.close(write_end)
print(sorted(os.read(read_end, 4096).decode().splitlines()))
print(codes, known == (len(multiprocessing.process._children),
                       len(multiprocessing.process._dangling)), collected)
"""


def test_one_process_object_forks_children_each_with_its_own_arguments():
    """The spawner forks every worker from one process object (fork_from):
    each child is a multiprocessing process as start() would make it."""
    done = subprocess.run([sys.executable, "-c", FORK_FROM_SCRIPT], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines == ["['3 forkchat-test True', '4 forkchat-test True', '5 forkchat-test True']",
                     "[3, 4, 5] True [True, True, True]"]


# keep_threads_at_fork, then two forks: one from a parent of one thread,
# one while a second thread runs.  Each child says whether threading's
# module lock is the parent's own object (not re-made), whether it is its
# own main thread with its identity, and whether a thread of its own
# starts, logs and is joined; then how many threads threading knows.
KEEP_THREADS_SCRIPT = r"""
import logging, os, sys, threading
from forkchat import children

logging.basicConfig(stream=sys.stdout, format="%(message)s")
children.keep_threads_at_fork()
children.keep_threads_at_fork()          # once is enough: no wrapper of a wrapper

def fork_and_report(tag):
    lock = id(threading._active_limbo_lock)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        me = threading.current_thread()
        mine = threading.Thread(target=logging.getLogger("t").warning, args=(tag,))
        mine.start()
        mine.join(5)
        report = (f"{tag} {id(threading._active_limbo_lock) == lock} "
                  f"{me is threading.main_thread()} {me.ident == threading.get_ident()} "
                  f"{not mine.is_alive()} {threading.active_count()}")
        sys.stdout.flush()
        os.write(write_end, report.encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    print(os.read(read_end, 200).decode())

fork_and_report("alone")
stop = threading.Event()
other = threading.Thread(target=stop.wait)
other.start()
fork_and_report("two")
stop.set()
other.join()
"""


def test_a_parent_of_one_thread_forks_a_child_that_keeps_threadings_state():
    """Its child does not re-make threading's locks (pages of every worker
    it wrote, copied from the spawner), and threads still work there; a
    parent of two threads gets threading's full reset in its child."""
    done = subprocess.run([sys.executable, "-c", KEEP_THREADS_SCRIPT], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["alone", "alone True True True True 1",
                                        "two", "two False True True True 1"]


def test_threadings_after_fork_is_the_one_keep_threads_at_fork_knows():
    """keep_threads_at_fork swaps the code of threading._after_fork, the
    callback os.fork runs in every child, and is right only for what that
    function did when it was written (CPython 3.11): resets of locks and
    tables of threads, nothing else.  A CPython whose function uses other
    names, or takes arguments, fails here: read it again, then update."""
    import threading
    code = children._thread_reset_unless_alone.__code__
    original = threading._after_fork
    if original.__code__ is code:           # swapped in this process already
        original = original.__defaults__[0]
    assert original.__code__.co_argcount == 0 and not original.__code__.co_freevars
    assert frozenset(original.__code__.co_names) == children._AFTER_FORK_NAMES
    # the names our code reads are threading's
    assert {"_active", "_limbo", "get_ident"} <= set(vars(threading))


def test_a_threading_reset_of_other_names_is_left_as_it_is(monkeypatch):
    """Another CPython's threading._after_fork (other names) keeps its code:
    what it resets may be more than ours skips."""
    import threading

    def _after_fork():
        return _main_thread, _active, _limbo, _thread_handles   # noqa: F821 (names only)

    monkeypatch.setattr(threading, "_after_fork", _after_fork)
    code = _after_fork.__code__
    children.keep_threads_at_fork()
    assert threading._after_fork.__code__ is code


EXITING_START_SCRIPT = r"""
import sys
from forkchat import children

def role():
    sys.exit("no room at the inn")

children.make_lifeline()
child = children.start("forkchat-test", role, ())
child.join(10)
print(child.exitcode)
"""


def test_a_child_that_exits_with_a_text_says_it_and_exits_1():
    """sys.exit("text") in a child's target: the text on standard error
    and status 1, as multiprocessing's own start did."""
    done = subprocess.run([sys.executable, "-c", EXITING_START_SCRIPT], capture_output=True,
                          text=True, timeout=30)
    assert done.stdout.strip() == "1"
    assert done.stderr == "no room at the inn\n"


# A role run by run_child writes a line to standard output (a pipe: block
# buffered) and to standard error, then leaves as argv[1] says; the parent
# prints the child's exit code after what the child wrote.
LEAVING_ROLE_SCRIPT = r"""
import sys
from forkchat import children

how = sys.argv[1]

def role():
    print("written before the end")
    sys.stderr.write("said before the end\n")
    if how == "int":
        sys.exit(4)
    if how == "none":
        sys.exit()
    raise KeyboardInterrupt

children.make_lifeline()
child = children.start("forkchat-test", children.run_child, ("forkchat-test", set(), role))
child.join(10)
print(child.exitcode)
"""


@pytest.mark.parametrize("how, code", [("int", 4), ("none", 0), ("interrupt", 1)])
def test_a_role_that_leaves_through_systemexit_or_an_interrupt_keeps_what_it_wrote(how, code):
    """SystemExit and other BaseExceptions pass run_child's flush (it
    catches Exception): the lean start exited with the child's standard
    output still in its buffer, where multiprocessing's flushed it."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    done = subprocess.run([sys.executable, "-c", LEAVING_ROLE_SCRIPT, how], capture_output=True,
                          text=True, timeout=30, env=env)
    assert done.stdout.splitlines() == ["written before the end", str(code)]
    assert done.stderr.startswith("said before the end\n")
