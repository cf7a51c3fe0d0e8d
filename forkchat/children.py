"""What every child process does first, before its role's main loop.

With the fork start method a child inherits every descriptor of the
supervisor: listening sockets, other workers' pipes, pidfds.  A child that
kept them would hold other links open, and EOF would never tell the broker
that a worker died.  So each child closes everything but what it owns,
resets the supervisor's signal handling and names itself for `ps`.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # the C half of signal: no stub
import ctypes
import gc
import logging
import multiprocessing
import multiprocessing.context
import multiprocessing.popen_fork
import multiprocessing.process
import multiprocessing.util
import os
import signal
import sys
import threading
import traceback
import types
from typing import Callable, TextIO

EX_SOFTWARE = 70
_PR_SET_NAME = 15
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_MEMORY_MERGE = 67
KSM_RUN = "/sys/kernel/mm/ksm/run"
# Every signal a forkchat process handles in Python (the others keep their
# default action throughout); SIGINT is ignored by every child.
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1,
                   signal.SIGCHLD)


def close_inherited(keep: set[int]) -> None:
    """Close every descriptor above 2 that is not in `keep`."""
    keep = set(keep) | {0, 1, 2}
    if sys.stdin is not None:
        try:
            keep.add(sys.stdin.fileno())
        except (OSError, ValueError):
            pass
    highest = os.sysconf("SC_OPEN_MAX")
    start = 3
    for fd in sorted(fd for fd in keep if fd >= 3):
        os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, highest)


_lifeline: tuple[int, int] | None = None      # (read end, write end)


def make_lifeline() -> None:
    """One pipe shared by all children: only the supervisor keeps its write
    end (children close it with everything else), so the supervisor's death
    is EOF on every child's read end."""
    global _lifeline
    _lifeline = os.pipe()


class _LeanPopen(multiprocessing.popen_fork.Popen):
    """multiprocessing's fork, without its two pipes and finalizer per child,
    and with a leaner start in the child (_bootstrap).

    Those would leave three descriptors per client in the supervisor, which
    every later child inherits and must close, and a finalizer registry that
    every child rewrites at start, copying pages that stay shared otherwise.
    The child's parent sentinel is the shared lifeline; the parent's sentinel
    is a pidfd, readable when the child exits.
    """

    def _launch(self, process_obj: multiprocessing.process.BaseProcess) -> None:
        if _lifeline is None:
            raise RuntimeError("make_lifeline() first")
        lifeline_r = _lifeline[0]
        # Until the child has reset them, it has the parent's signal handlers
        # and wakeup fd: a signal sent to it then would wake the parent's
        # loop as if sent to the parent (a SIGTERM to a new worker stopped
        # the server).  Those signals wait, blocked, until the child has reset.
        # _signal's masks are sets of numbers: signal.pthread_sigmask makes
        # each an enum member, whose lookups wrote some 25 pages of the
        # spawner at each fork, pages the worker forked before then owned.
        blocked = _signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            self.pid = os.fork()
        except BaseException:
            # No child (EAGAIN at the process limit, ENOMEM): the caller
            # gets the OSError and refuses one client, nothing more.
            _signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            raise
        if self.pid == 0:
            code = 1
            try:
                reset_signals()
                # SIGTERM stays blocked (held, not lost) until the role has
                # set its own handler (take_sigterm): a worker SIGTERMed in
                # its first milliseconds, a stop amid a burst of connections,
                # died without telling its client "Server shutting down".
                _signal.pthread_sigmask(signal.SIG_SETMASK, {*blocked, signal.SIGTERM})
                code = _bootstrap(process_obj, lifeline_r)
            finally:
                os._exit(code)
        _signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        try:
            self.sentinel = os.pidfd_open(self.pid)
        except OSError:
            # Out of descriptors: a child nobody could watch must not run
            # on (a worker would serve a client already told 'busy').
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            raise


def _bootstrap(process: multiprocessing.process.BaseProcess, lifeline_r: int) -> int:
    """multiprocessing's Process._bootstrap, less what no child of ours uses.

    Its import statements (run at each call), the start method forced
    again, a new process counter, the main thread's native id, and a walk
    of the after-fork registries, which nothing of ours fills: some 25
    pages that every worker wrote, and so copied from its spawner.  What a
    child needs is kept: multiprocessing's view of who it and its parent
    are (lifeline_fd reads the parent's sentinel), no children of its own,
    standard input on /dev/null, a traceback for an error that escapes
    its target (run_child catches those of the role itself), and its
    standard output and error flushed however it ends.
    """
    mp = multiprocessing.process
    util = multiprocessing.util
    mp._children = set()                                    # type: ignore[attr-defined]
    util._close_stdin()                                     # type: ignore[attr-defined]
    mp._current_process = process                          # type: ignore[attr-defined]
    mp._parent_process = mp._ParentProcess(                 # type: ignore[attr-defined]
        process._parent_name, process._parent_pid, lifeline_r)  # type: ignore[attr-defined]
    if util._finalizer_registry or util._afterfork_registry:  # type: ignore[attr-defined]
        process._after_fork()                               # type: ignore[attr-defined]
    try:
        process.run()
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        sys.stderr.write(f"{stop.code}\n")      # sys.exit("why"): said, and status 1
        return 1
    except BaseException:
        sys.stderr.write(f"Process {process.name}:\n")
        traceback.print_exc()
        return 1
    finally:
        # What the child wrote is flushed however it ends (os._exit flushes
        # nothing): a role that left through SystemExit or another
        # BaseException passed run_child's flush, and lost its buffered output.
        _flush_quietly(sys.stdout, sys.stderr)
    return 0


class LeanForkProcess(multiprocessing.context.ForkProcess):
    """The fork start method, named explicitly (3.14 makes forkserver the
    Linux default): a worker must start in about a millisecond, and fork from
    the lean, frozen-heap supervisor shares its memory copy-on-write, where
    forkserver would pickle the arguments for every client."""

    @staticmethod
    def _Popen(process_obj: multiprocessing.process.BaseProcess) -> _LeanPopen:  # type: ignore[override]
        return _LeanPopen(process_obj)


def start(name: str, target: Callable[..., None], args: tuple) -> LeanForkProcess:
    """Start a child; its `sentinel` is a pidfd the caller watches and closes.

    The process is taken out of multiprocessing's own child set, which every
    start() would otherwise poll with one waitpid per live child: the
    supervisor reaps its children itself.
    """
    # Collect first: the supervisor runs with gc disabled, and whatever is
    # frozen now is never collected, so cycles made since the last fork
    # (few, and cheap to find) must go before they become permanent.
    gc.collect()
    gc.freeze()
    process = LeanForkProcess(target=target, args=args, name=name)
    process.start()
    multiprocessing.process._children.discard(process)  # type: ignore[attr-defined]
    return process


def template(name: str, target: Callable[..., None]) -> LeanForkProcess:
    """A process object that forks any number of children of one kind
    (fork_from), each running `target` with its own arguments."""
    return LeanForkProcess(target=target, name=name)


def fork_from(process: LeanForkProcess, args: tuple) -> _LeanPopen:
    """Fork a child that runs `process`'s target with `args`, as start()
    would start it (multiprocessing's Popen, then _bootstrap in the child);
    the result has its `pid` and `sentinel`, a pidfd the caller closes.

    start() makes a process object per child: a copy of the parent's
    configuration, the next value of a counter, a name, an entry in
    multiprocessing's weak set of processes that its release removes.
    In the spawner, each page written so between two forks is copied
    once more, for the worker forked before, which still shares it: one
    object made once saves some 30 of the 175 pages the spawner copied
    per fork (measured).  The child sees what start() would give it.

    For a parent that runs with gc disabled and forks only through here
    (the spawner): what it made since the last fork is all in the youngest
    generation, which is collected before it is frozen.  A collection of
    the oldest, as start() makes, finds nothing more there, but it also
    empties the interpreter's free lists (frames, tuples, lists, dicts),
    which are then refilled from the allocator's pages: 13 more pages
    copied per fork.
    """
    gc.collect(0)
    gc.freeze()
    process._args = args  # type: ignore[attr-defined]
    return _LeanPopen(process)


def _thread_reset_unless_alone(_reset: Callable[[], None] | None = None) -> None:
    """threading._after_fork's code once keep_threads_at_fork() ran: it runs
    with threading's globals, and `_reset` (its default) is the original.

    The reset only runs when the parent had more threads than the one
    that forked: for that one alone it would re-make its locks as they
    were and give it the identity it already has.
    """
    # (threading's names: _active and _limbo, its tables of running and
    # starting threads; a thread that ended holds no lock)
    running, starting = _active, _limbo                  # type: ignore[name-defined]
    if len(running) != 1 or starting or get_ident() not in running:  # type: ignore[name-defined]
        assert _reset is not None
        _reset()


# The names threading._after_fork uses in the CPython (3.11) whose reset
# _thread_reset_unless_alone may skip; any other is left as it is.
_AFTER_FORK_NAMES = frozenset({
    "RLock", "_active_limbo_lock", "_active", "get_ident", "KeyError", "_MainThread",
    "_main_thread", "_allocate_lock", "_shutdown_locks_lock", "set", "_shutdown_locks",
    "_enumerate", "update", "_dangling", "_reset_internal_locks", "_ident", "_stop",
    "_limbo", "clear", "len"})


def keep_threads_at_fork() -> None:
    """Skip threading's reset in each child forked from now on, when the
    parent forking it has but one thread (the spawner: see design.md §1).

    os.fork runs threading._after_fork in every child: new locks for the
    module and for each Thread it knows, a new set of shutdown locks, its
    table of threads rebuilt.  For a parent of one thread that gives the
    child what it had, and it wrote some 55 pages of every worker at its
    start, copied from the spawner; some 25 of them nothing the worker
    does later writes (page counts, measured).  The callback os.fork holds
    is that function object, so its code is swapped for one that resets
    only when there is something to reset.  It is swapped only if
    threading's function is still the one this was written for (its
    names, _AFTER_FORK_NAMES): a CPython whose threading resets more, or
    otherwise, keeps its own.
    """
    after_fork = threading._after_fork               # type: ignore[attr-defined]
    code = after_fork.__code__
    if code is _thread_reset_unless_alone.__code__:
        return
    if code.co_argcount or code.co_freevars or frozenset(code.co_names) != _AFTER_FORK_NAMES:
        return       # another CPython's function: it resets as its threading needs
    original = types.FunctionType(code, after_fork.__globals__, after_fork.__name__,
                                  after_fork.__defaults__, after_fork.__closure__)
    after_fork.__code__ = _thread_reset_unless_alone.__code__
    after_fork.__defaults__ = (original,)


def lifeline_fd() -> int:
    """A descriptor that reads EOF when the supervisor dies."""
    parent = multiprocessing.parent_process()
    if parent is None:
        raise RuntimeError("not a multiprocessing child")
    return parent.sentinel


def _find_prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl   # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


# Looked up once, before any fork: a child that loaded libc through ctypes
# itself would write some fifty pages it otherwise shares with its parent.
_libc_prctl = _find_prctl()


def _prctl(option: int, arg: int | bytes) -> bool:
    return _libc_prctl is not None and _libc_prctl(option, arg, 0, 0, 0) == 0


def merge_memory() -> str | None:
    """Offer this process's anonymous memory, and that of every child it
    forks from now on, to the kernel's same-page merging (KSM, Linux 6.4+).

    Workers forked from one parent write mostly the same bytes to the same
    pages (reference counts, allocator state), so an idle worker's private
    pages are largely identical to its siblings'.  None on success, else
    why not."""
    if _libc_prctl is None:
        return "prctl is not available"
    if _libc_prctl(_PR_SET_MEMORY_MERGE, 1, 0, 0, 0) == 0:
        return None
    return os.strerror(ctypes.get_errno())


def ksm_running(path: str = KSM_RUN) -> bool | None:
    """Whether the kernel's merging daemon runs; None where there is none."""
    try:
        with open(path) as flag:
            return flag.read().strip() == "1"
    except OSError:
        return None


def set_name(name: str) -> None:
    """Name the process (comm) so `ps` and STATS can tell roles apart."""
    _prctl(_PR_SET_NAME, name.encode()[:15])


def unknown_children(known: set[int]) -> list[int] | None:
    """Our children (zombies included) that are not in `known`: as a
    subreaper we inherit the children of a child that dies.  None where the
    kernel has no /proc/PID/task/TID/children."""
    pid = os.getpid()
    found: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as listing:
                found += [int(word) for word in listing.read().split()]
    except (OSError, ValueError):
        return None
    return [child for child in found if child not in known]


def parent_pid(pid: int) -> int | None:
    """The parent of `pid` from /proc (None: gone, or /proc unreadable)."""
    # os.open and one read: the broker asks this for every new link, and a
    # Python file object cost a third more than the kernel's own work.
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        # the name in parentheses may hold spaces and ')': split after the last one
        return int(os.read(fd, 4096).rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None
    finally:
        os.close(fd)


# A worker is the child of a spawner, or of the supervisor itself once
# its spawner has retired (at a reload) or died (we are a subreaper): two
# steps up at most.
_MAX_GENERATIONS = 4


def descends_from(pid: int, ancestor: int) -> bool:
    """Whether process `pid` is `ancestor` or one of its descendants.

    The walk ends at a parent of 0 (above init), not at init itself: the
    ancestor may be pid 1, as a server started as a container's first
    process is, and then every worker of its own was refused.

    A parent that exits and is reaped while we walk (a spawner retiring at
    a reload, as its newest worker connects) leaves its children to the
    supervisor: the walk is taken again once, and finds them there.
    """
    for _ in range(2):
        found = _walk_up(pid, ancestor)
        if found is not None:
            return found
    return False


def _walk_up(pid: int, ancestor: int) -> bool | None:
    """descends_from's walk; None when a parent vanished on the way."""
    for step in range(_MAX_GENERATIONS):
        if pid == ancestor:
            return True
        parent = parent_pid(pid)
        if parent is None and step:
            return None
        if not parent:
            return False
        pid = parent
    return pid == ancestor


def proc_readable() -> bool:
    """Whether /proc tells us process parents (descends_from can answer).

    It must be the /proc of our own PID namespace: one mounted for another
    (a PID namespace made without its own /proc mount) names other
    processes by our pids, and every worker was refused as a stranger.
    """
    try:
        if os.readlink("/proc/self") != str(os.getpid()):
            return False
    except OSError:
        return False
    return parent_pid(os.getpid()) is not None


def become_subreaper() -> bool:
    """Adopt grandchildren whose parent dies: the workers of a retired or dead spawner
    then become our children, and we learn how each one ends."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def reset_signals() -> None:
    """Undo the parent's signal wiring; the role sets its own.

    Through _signal: signal.signal makes each old handler an enum member,
    and the parent's Python handler is none, so each lookup failed through
    an exception; with the enum machinery, 30 pages of every worker copied.
    """
    _signal.set_wakeup_fd(-1)
    for signum in HANDLED_SIGNALS:
        _signal.signal(signum, _signal.SIG_DFL)
    # Ctrl+C, a terminal hangup, `systemctl kill -s HUP` (every process of
    # the unit) and `pkill -USR1 forkchat` reach the children too: the
    # supervisor decides, and no child acts on them.
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        _signal.signal(signum, _signal.SIG_IGN)


def take_sigterm() -> None:
    """Let a SIGTERM through, once this child's role has set what it does
    with one (a SIGTERM held since the fork is acted on now)."""
    _signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def run_child(name: str, keep: set[int], main: Callable[[], int]) -> None:
    """Bootstrap a child and run `main`; an unexpected error exits 70."""
    gc.enable()
    keep = set(keep) | {lifeline_fd()}
    close_inherited(keep)
    set_name(name)
    try:
        code = main()
    except Exception:
        logging.getLogger(f"forkchat.{name.rsplit('-', 1)[-1]}").exception(
            "%s crashed", name)
        code = EX_SOFTWARE
    _flush_quietly(sys.stdout, sys.stderr)
    os._exit(code)


def _flush_quietly(*streams: TextIO | None) -> None:
    """Flush what a child wrote, as far as its streams take it.

    A standard error with no reader (journald restarted) keeps in its
    buffer a line that failed to go, one written past logging (Python's
    "Exception ignored" messages): its flush at the end failed again, and
    the child exited 1 instead of its own status, a worker's clean end
    taken for a crash.
    """
    for stream in streams:
        if stream is None:
            continue
        try:
            stream.flush()
        except (OSError, ValueError):     # (ValueError: closed)
            pass
