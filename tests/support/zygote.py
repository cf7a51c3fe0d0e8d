"""Start test servers by forking a process that has imported forkchat already.

Each test server used to be a new interpreter (`python -m forkchat`) that
spent some 0.15-0.3 s starting Python and importing forkchat before it
bound anything; the suite starts several hundred.  The zygote is one such
interpreter, started once per test run: it imports what the server's
start imports (cli, then broker, supervisor and worker, as cli.main does
before it binds) and nothing else, then forks a server for each request.
The child is set up as subprocess.Popen with start_new_session would set
up a new interpreter: its own session, the caller's stdin, stdout and
stderr on 0, 1 and 2 and no other descriptor, the caller's working
directory and environment, sys.argv as `python -c` gives it; then it runs
the same script the server's command line would (runpy of forkchat as
__main__, after the test's prelude if any) and exits as Python would.

Only the server's plain command lines come here (ServerProcess decides):
one with another program in front (unshare, a launcher that passes
sockets or lowers a limit) or an environment unlike the zygote's (which
is read at import: FORKCHAT_TEST_HOOKS) starts a new interpreter as
before.  FORKCHAT_TEST_ZYGOTE=0 turns the zygote off.

The zygote reaps its children and tells each caller its child's exit
code (as Popen.returncode: negative for a signal) on the socket pair
that came with the request; ZygoteProc is the caller's Popen stand-in.
"""

from __future__ import annotations

import array
import builtins
import json
import locale
import os
import selectors
import socket
import subprocess
import sys
import threading
import types

RUN_MODULE = ("import runpy\n"
              "runpy.run_module('forkchat', run_name='__main__', alter_sys=True)\n")
PRELOAD = ("forkchat.cli", "forkchat.broker", "forkchat.supervisor", "forkchat.worker")
MAX_REQUEST = 1 << 20
FDS_PER_REQUEST = 4          # the reply socket, stdin, stdout, stderr
VOLATILE = ("PYTEST_CURRENT_TEST",)   # set by pytest for each test: not the server's


# -- the zygote process ------------------------------------------------------------------

def serve(control_fd: int) -> None:
    """The zygote's loop: fork a server per request, report each exit."""
    import importlib
    for name in PRELOAD:
        importlib.import_module(name)
    control = socket.socket(fileno=control_fd)
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ, None)
    while True:
        for key, _ in selector.select():
            if key.data is None:
                if not _take_request(control, selector):
                    return          # the test run is over
            else:
                _report_exit(selector, key.fileobj, *key.data)


def _take_request(control: socket.socket, selector: selectors.BaseSelector) -> bool:
    fds = array.array("i")
    data, ancillary, _, _ = control.recvmsg(MAX_REQUEST, socket.CMSG_SPACE(
        FDS_PER_REQUEST * fds.itemsize))
    if not data:
        return False
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    reply_fd, stdin_fd, stdout_fd, stderr_fd = fds
    request = json.loads(data)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _leave_zygote(control, selector, reply_fd)
        _child(request, stdin_fd, stdout_fd, stderr_fd)     # ends in SystemExit
    for fd in (stdin_fd, stdout_fd, stderr_fd):
        os.close(fd)
    reply = socket.socket(fileno=reply_fd)
    reply.sendall(json.dumps({"pid": pid}).encode())
    pidfd = os.pidfd_open(pid)
    selector.register(pidfd, selectors.EVENT_READ, (pid, reply))
    return True


def _report_exit(selector: selectors.BaseSelector, pidfd: int, pid: int,
                 reply: socket.socket) -> None:
    selector.unregister(pidfd)
    os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    try:
        reply.sendall(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode())
    except OSError:
        pass                # the caller has gone: nobody to tell
    reply.close()


def _leave_zygote(control: socket.socket, selector: selectors.BaseSelector,
                  reply_fd: int) -> None:
    """In a new child: close the zygote's own descriptors through their
    objects (a bare close of the numbers left objects that would close
    them again, at exit, when the server may have reused the numbers)."""
    try:
        for key in list(selector.get_map().values()):
            if key.data is not None:
                os.close(key.fileobj)
                key.data[1].close()
        selector.close()
        control.close()
        os.close(reply_fd)
    except BaseException:
        os._exit(127)


def _child(request: dict, stdin_fd: int, stdout_fd: int, stderr_fd: int) -> None:
    """Become the server, as a new `python -c SCRIPT ARGS...` would: the
    script's SystemExit (or any exception) ends this process through the
    interpreter's own exit, never back in the zygote's loop."""
    try:
        if request["session"]:
            os.setsid()
        for target, fd in enumerate((stdin_fd, stdout_fd, stderr_fd)):
            os.dup2(fd, target)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["-c", *request["argv"]]
        script = (request["prelude"] + "\nimport sys\nsys.argv[0] = 'forkchat'\n" + RUN_MODULE
                  if request["prelude"] else RUN_MODULE)
        main = types.ModuleType("__main__")
        main.__dict__["__builtins__"] = builtins
        sys.modules["__main__"] = main
    except BaseException:
        os._exit(127)
    exec(compile(script, "<string>", "exec"), main.__dict__)
    raise SystemExit(0)


# -- the caller's side -------------------------------------------------------------------

class ZygoteProc:
    """The part of subprocess.Popen that ServerProcess and the tests use."""

    def __init__(self, args: list[str], reply: socket.socket, pid: int, stderr) -> None:
        self.args = args
        self.pid = pid
        self.stderr = stderr
        self.returncode: int | None = None
        self._reply = reply

    def poll(self) -> int | None:
        self._read(0.0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._read(timeout)
        if self.returncode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        import signal
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        import signal
        self.send_signal(signal.SIGTERM)

    def _read(self, timeout: float | None) -> None:
        if self.returncode is not None:
            return
        self._reply.settimeout(timeout)
        try:
            data = self._reply.recv(4096)
        except (BlockingIOError, socket.timeout):
            return
        if not data:            # the zygote died: the exit code is lost
            raise RuntimeError(f"the test zygote ended before server {self.pid} did")
        self.returncode = json.loads(data)["exit"]
        self._reply.close()


class Zygote:
    """The zygote process, started at the first request of the run."""

    def __init__(self) -> None:
        self.env = dict(os.environ)
        self.cwd = os.getcwd()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        boot = (f"import sys\nsys.path.insert(0, {root!r})\nfrom tests.support import zygote\n"
                f"sys.path.remove({root!r})\nzygote.serve({theirs.fileno()})\n")
        self.proc = subprocess.Popen([sys.executable, "-c", boot], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, start_new_session=True,
                                     pass_fds=[theirs.fileno()], env=self.env, cwd=self.cwd)
        theirs.close()
        self.control = ours
        self.lock = threading.Lock()

    def fits(self, env: dict[str, str]) -> bool:
        """Whether a server with this environment may come from the zygote:
        the same environment it was started with (modules read some at
        import), but for the name of the test pytest keeps in it."""
        return _stable(env) == _stable(self.env) and self.proc.poll() is None

    def spawn(self, argv: list[str], prelude: str, env: dict[str, str],
              args: list[str]) -> ZygoteProc:
        """A server in its own session, its stderr a pipe (ZygoteProc.stderr)."""
        read_end, write_end = os.pipe()
        stdin = os.open(os.devnull, os.O_RDONLY)
        try:
            proc = self._fork(argv, prelude, env, args, os.getcwd(), True,
                              (stdin, 1, write_end))
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(stdin)
            os.close(write_end)
        proc.stderr = os.fdopen(read_end, "rb")
        return proc

    def run(self, argv: list[str], env: dict[str, str], args: list[str], cwd: str,
            timeout: float, data: bytes | None) -> subprocess.CompletedProcess:
        """`python -m forkchat ARGV` to its end, as subprocess.run with
        capture_output and text: no session of its own (the zygote's,
        which has no terminal), `data` on its standard input (an empty
        pipe without), its output read whole."""
        ends = [os.pipe() for _ in range(3)]
        try:
            proc = self._fork(argv, "", env, args, cwd, False,
                              (ends[0][0], ends[1][1], ends[2][1]))
        finally:
            for fd in (ends[0][0], ends[1][1], ends[2][1]):
                os.close(fd)
        outputs: dict[int, bytes] = {}
        readers = [threading.Thread(target=_read_all, args=(ends[n][0], outputs, n), daemon=True)
                   for n in (1, 2)]
        for reader in readers:
            reader.start()
        try:
            if data:
                os.write(ends[0][1], data)
        except BrokenPipeError:
            pass
        finally:
            os.close(ends[0][1])
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            raise
        for reader in readers:
            reader.join(timeout)
        return subprocess.CompletedProcess(args, code, _text(outputs.get(1, b"")),
                                           _text(outputs.get(2, b"")))

    def _fork(self, argv: list[str], prelude: str, env: dict[str, str], args: list[str],
              cwd: str, session: bool, stdio: tuple[int, int, int]) -> ZygoteProc:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        request = json.dumps({"argv": argv, "prelude": prelude, "env": env, "cwd": cwd,
                              "session": session}).encode()
        try:
            with self.lock:
                self.control.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                  array.array("i", [theirs.fileno(), *stdio]))])
        finally:
            theirs.close()
        ours.settimeout(30)
        answer = ours.recv(4096)
        if not answer:
            ours.close()
            raise RuntimeError("the test zygote did not fork")
        return ZygoteProc(args, ours, json.loads(answer)["pid"], None)

    def close(self) -> None:
        self.control.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _read_all(fd: int, into: dict[int, bytes], key: int) -> None:
    with os.fdopen(fd, "rb") as stream:
        into[key] = stream.read()


def _text(data: bytes) -> str:
    """Output as subprocess's text mode gives it: decoded, universal newlines."""
    return data.decode(locale.getpreferredencoding(False)).replace("\r\n", "\n") \
        .replace("\r", "\n")


def _stable(env: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in env.items() if name not in VOLATILE}


_zygote: Zygote | None = None
_zygote_lock = threading.Lock()


def _pidfds() -> bool:
    """Whether this kernel has pidfd_open (Linux 5.3), which the zygote waits with."""
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True


def zygote() -> Zygote | None:
    """The run's zygote (started now if need be), or None when turned off."""
    global _zygote
    if os.environ.get("FORKCHAT_TEST_ZYGOTE", "1") == "0" or not _pidfds():
        return None
    with _zygote_lock:
        if _zygote is None:
            import atexit
            _zygote = Zygote()
            atexit.register(_zygote.close)
        return _zygote
