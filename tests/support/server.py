"""Start the real forkchat-server on port 0 and learn its ports from its log."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

import psutil

from tests.support import zygote

LISTEN_RE = re.compile(r"listening on \[?([^\]\s]+?)\]?:(\d+) \((\w+)\)( with TLS)?")
START_TIMEOUT_S = 15.0


class ServerProcess:
    """A forkchat-server child in its own session, with its stderr collected."""

    def __init__(self, extra_args: list[str] | None = None, config_text: str | None = None,
                 listen: list[str] | None = None, env: dict[str, str] | None = None,
                 prelude: str = "") -> None:
        """`prelude`: Python run in the server's process before forkchat's
        main, to lower a wait that no setting reaches (a module constant);
        the server forks and never execs, so every child has it too."""
        self.extra_args = list(extra_args or [])
        self.prelude = prelude
        self.config_text = config_text
        self.listen = listen if listen is not None else ["127.0.0.1:0"]
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: list[tuple[str, int, str]] = []
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self.config_path = ""
        self._tmpdir = tempfile.TemporaryDirectory(prefix="forkchat-test-")
        os.chmod(self._tmpdir.name, 0o755)   # readable after a drop to nobody
        self.state_dir = os.path.join(self._tmpdir.name, "state")

    @property
    def port(self) -> int:
        return next(port for _, port, proto in self.ports if proto == "irc")

    def port_of(self, proto: str) -> int:
        return next(port for _, port, p in self.ports if p == proto)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def write_config(self, text: str) -> str:
        self.config_path = os.path.join(self._tmpdir.name, "forkchat.toml")
        with open(self.config_path, "w") as handle:
            handle.write(text)
        os.chmod(self.config_path, 0o644)
        return self.config_path

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "forkchat"]
        if self.prelude:
            cmd[1:] = ["-c", self.prelude_script()]
        if self.config_text is not None:
            cmd += ["-c", self.write_config(self.config_text)]
        for spec in self.listen:
            cmd += ["-l", spec]
        if "--state-dir" not in self.extra_args:
            cmd += ["--state-dir", self.state_dir]
        return cmd + self.extra_args

    def prelude_script(self) -> str:
        return (self.prelude + "\nimport runpy, sys\nsys.argv[0] = 'forkchat'\n"
                "runpy.run_module('forkchat', run_name='__main__', alter_sys=True)")

    def _forked(self, cmd: list[str], env: dict[str, str]) -> zygote.ZygoteProc | None:
        """The server forked by the zygote, when `cmd` is the plain
        `python -m forkchat ...` (or the prelude's `python -c ...`) that the
        zygote runs the same way; None for any other command line."""
        plain = ["-c", self.prelude_script()] if self.prelude else ["-m", "forkchat"]
        if cmd[0] != sys.executable or cmd[1:3] != plain:
            return None
        spawner = zygote.zygote()
        if spawner is None or not spawner.fits(env):
            return None
        return spawner.spawn(cmd[3:], self.prelude, env, cmd)

    def start(self, expect_listeners: int | None = None) -> "ServerProcess":
        env = dict(os.environ, **(self.env or {}))
        cmd = self.command()
        self.proc = self._forked(cmd, env) or subprocess.Popen(
            cmd, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True)
        threading.Thread(target=self._read_stderr, daemon=True).start()
        wanted = expect_listeners or max(
            1, len(self.listen) + self.extra_args.count("--tutorial-listen"))
        try:
            self.wait_for_log(lambda: len(self.ports) >= wanted, "listening on")
        except BaseException:
            self.stop()         # no caller holds a server that failed to start
            raise
        return self

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                self._lines.append(line)
                match = LISTEN_RE.search(line)
                if match:
                    proto = match.group(3) + ("+tls" if match.group(4) else "")
                    self.ports.append((match.group(1), int(match.group(2)), proto))
                self._cond.notify_all()
        with self._cond:
            self._lines.append("<eof>")
            self._cond.notify_all()

    def log_text(self) -> str:
        with self._cond:
            return "\n".join(self._lines)

    def wait_for_log(self, predicate, what: str, timeout: float = START_TIMEOUT_S) -> None:
        """Wait until `predicate()` holds (checked at each new log line)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0 or (self._lines and self._lines[-1] == "<eof>"):
                    raise AssertionError(f"server never logged {what!r}; log:\n"
                                         + "\n".join(self._lines))
                self._cond.wait(left)

    def wait_for_text(self, text: str, timeout: float = 10.0, start: int = 0) -> str:
        """Wait for a log line containing `text` (at or after line `start`)."""
        found: list[str] = []

        def seen() -> bool:
            found[:] = [line for line in self._lines[start:] if text in line]
            return bool(found)
        self.wait_for_log(seen, text, timeout)
        return found[0]

    def log_length(self) -> int:
        with self._cond:
            return len(self._lines)

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def settle_children(self, keep: set[int], timeout: float) -> list[psutil.Process]:
        """Wait until the only children left are `keep`; returns the others still there."""
        deadline = time.monotonic() + timeout
        while True:
            extra = [p for p in self.descendants() if p.pid not in keep]
            left = deadline - time.monotonic()
            if not extra or left <= 0:
                return extra
            psutil.wait_procs(extra, timeout=left)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 8.0) -> int | None:
        """SIGTERM, wait, then SIGKILL the whole group; returns the exit code."""
        if self.proc is None:
            return None
        kids = self.descendants()
        code = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if code is None:
            self.proc.wait(5)
        psutil.wait_procs(kids, timeout=5)
        self._tmpdir.cleanup()
        return code


def run_forkchat(*args: str, cwd: str | None = None,
                 timeout: float = 30.0) -> subprocess.CompletedProcess:
    """`python -m forkchat ARGS` run to its end with its output captured as
    text, as subprocess.run(capture_output=True, text=True) gives it (a
    --check-config, a start that fails); forked by the zygote when it may
    (see zygote.py), a new interpreter otherwise."""
    cmd = [sys.executable, "-m", "forkchat", *args]
    env = dict(os.environ)
    spawner = zygote.zygote()
    if spawner is None or not spawner.fits(env):
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                              stdin=subprocess.DEVNULL)
    return spawner.run(list(args), env, cmd, cwd or os.getcwd(), timeout, None)


def left_behind(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those of `processes` still running (a zombie does not count).

    A process may be reaped between any two psutil calls on it, so the
    status is read once, and a process gone meanwhile counts as gone."""
    running = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
        except psutil.NoSuchProcess:
            pass
    return running


def _started_pid(server: ServerProcess, role: str, after: int) -> int:
    """The pid in the supervisor's "<role> started (pid N)" line."""
    line = server.wait_for_text(f"{role} started (pid", start=after)
    match = re.search(rf"{role} started \(pid (\d+)\)", line)
    assert match, line
    return int(match.group(1))


def spawner_pid(server: ServerProcess, after: int = 0) -> int:
    """The pid of the spawner that forks new workers."""
    return _started_pid(server, "spawner", after)


def broker_pid(server: ServerProcess, after: int = 0) -> int:
    return _started_pid(server, "broker", after)


WORKER_RE = r"worker\[(\d+)\] INFO conn \d+ registered as {nick}!"


def worker_pid(server: ServerProcess, nick: str) -> int:
    """The pid of the worker serving `nick`, from its registration log line."""
    line = server.wait_for_text(f"registered as {nick}!")
    match = re.search(WORKER_RE.format(nick=re.escape(nick)), line)
    assert match, line
    return int(match.group(1))
