"""The server's entry points a user of a checkout may try: both run the CLI."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tomllib

import pytest

from forkchat import __version__, cli, config, privileges
from tests.support import signals

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", ["forkchat", "forkchat.cli"])
def test_python_dash_m_runs_the_server_cli(module):
    """`python3 -m forkchat.cli` used to import the module and exit 0 silently."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", module, "--version"],
                          capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"forkchat-server {__version__}"


@pytest.mark.parametrize("name", ["a b", "tab\there", "new\nline"])
def test_a_server_name_the_file_refuses_is_refused_on_the_command_line_too(name):
    """--name 'a b' bypassed the file's check and served ':a b 001 ...'."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "forkchat", "--name", name, "--check-config"],
                          capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 2, done.stdout
    assert "--name" in done.stderr and "without spaces" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_server_name_over_63_bytes_is_refused_on_the_command_line_too():
    args = cli.build_parser().parse_args(["--name", "s" * 64])
    with pytest.raises(ValueError) as caught:
        cli.apply_flags(config.Config(), args)
    assert str(caught.value) == (f"--name {'s' * 64!r}: must be at most 63 bytes (RFC 2812's "
                                 f"bound on a host name; it prefixes every line the server "
                                 f"sends)")
    args = cli.build_parser().parse_args(["--name", "s" * 63])
    assert cli.apply_flags(config.Config(), args).server.name == "s" * 63


@pytest.mark.parametrize("owner", [None, "root"])
def test_a_state_dir_that_is_a_file_is_named_so(tmp_path, caplog, owner):
    """It was reported as 'cannot prepare state_dir ...: File exists' (as root)
    or not at all."""
    path = tmp_path / "afile"
    path.write_text("")
    identity = privileges.Identity("root", 0, "root", 0) if owner else None
    with caplog.at_level("WARNING", logger="forkchat.supervisor"):
        cli.prepare_state_dir(str(path), identity)
    assert f"state_dir {path} is not a directory" in caplog.text


@pytest.mark.parametrize("owner", [None, "root"])
def test_a_state_dir_linked_to_nowhere_is_named_so(tmp_path, caplog, owner):
    """A state_dir that is a symbolic link to a directory not there (on a disk
    not mounted yet) was reported as 'cannot prepare state_dir ...: File
    exists' (as root) or not at all; the target is not made behind it."""
    path = tmp_path / "state"
    path.symlink_to(tmp_path / "unmounted" / "forkchat")
    identity = privileges.Identity("root", 0, "root", 0) if owner else None
    with caplog.at_level("WARNING", logger="forkchat.supervisor"):
        cli.prepare_state_dir(str(path), identity)
    assert (f"state_dir {path} is a symbolic link to {tmp_path}/unmounted/forkchat, "
            "which does not exist: rooms will not persist") in caplog.text
    assert "cannot prepare" not in caplog.text
    assert not (tmp_path / "unmounted").exists()


def test_parents_made_for_the_state_dir_can_be_walked_through(tmp_path):
    """Under the server's umask (077) makedirs made the parents 0700 too, and
    the user root switches to (given only the last directory) could not
    reach it: 'room store ... unavailable' for --state-dir /srv/new/forkchat."""
    path = tmp_path / "srv" / "new" / "forkchat"
    old = os.umask(0o077)
    try:
        cli.prepare_state_dir(str(path), None)
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o700
    assert [(tmp_path / p).stat().st_mode & 0o777 for p in ("srv", "srv/new")] == [0o755, 0o755]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("key", "status", "message"), [
    (b"\x03", cli.EXIT_INTERRUPTED, b""),               # Ctrl+C
    (b"\x04", cli.EXIT_USAGE, b"empty password"),        # Ctrl+D
])
def test_hash_password_question_ends_without_a_traceback(key, status, message):
    """Ctrl+C or Ctrl+D at --hash-password's 'Password: ' printed getpass's
    KeyboardInterrupt or EOFError traceback on the terminal."""
    import pty
    import select
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    pid, master = pty.fork()
    if pid == 0:                                        # the child, on the terminal
        signals.as_started_by_hand()
        os.execve(sys.executable, [sys.executable, "-m", "forkchat", "--hash-password"], env)
    seen = b""
    try:
        while b"Password: " not in seen:
            assert select.select([master], [], [], 20)[0], seen
            seen += os.read(master, 1024)
        os.write(master, key)
        while True:
            if not select.select([master], [], [], 20)[0]:
                break
            try:
                chunk = os.read(master, 1024)
            except OSError:                              # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(master)
        _, wait_status = os.waitpid(pid, 0)
    assert b"Traceback" not in seen, seen.decode(errors="replace")
    assert os.waitstatus_to_exitcode(wait_status) == status
    assert message in seen


@pytest.mark.parametrize("columns, expected", [("100", 100), ("", 80), ("0", 80), ("wide", 80)])
def test_help_is_as_wide_as_shutil_would_make_it(monkeypatch, columns, expected):
    """The help formatter takes the width without shutil (see cli.HelpFormatter):
    $COLUMNS, else standard output's terminal (none here), else 80."""
    import shutil
    monkeypatch.setenv("COLUMNS", columns)
    monkeypatch.setattr(sys, "__stdout__", None)
    assert cli.terminal_columns() == shutil.get_terminal_size().columns == expected
    assert cli.build_parser()._get_formatter()._width == expected - 2


OUTPUT_COMMANDS = [(["--check-config"], ""), (["--hash-password"], "secret\n"),
                   (["--version"], ""), (["--help"], "")]


def run_with_stdout(args: list[str], given: str, stdout) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "forkchat", *args], input=given,
                          stdout=stdout, stderr=subprocess.PIPE, text=True, env=env,
                          timeout=30)


@pytest.mark.parametrize(("args", "given"), OUTPUT_COMMANDS)
def test_a_full_disk_under_standard_output_is_one_line_and_status_1(args, given):
    """--check-config > /dev/full (and --hash-password's) ended in an OSError
    traceback; --version and --help lost their text and exited 0."""
    with open("/dev/full", "w") as full:
        done = run_with_stdout(args, given, full)
    assert (done.returncode, done.stderr) == (
        cli.EXIT_FAILURE, "forkchat-server: cannot write to standard output: "
                          "No space left on device\n")


@pytest.mark.parametrize(("args", "given"), OUTPUT_COMMANDS)
def test_a_reader_gone_from_standard_output_is_one_line_and_status_1(args, given):
    """`forkchat-server --hash-password | cmd` where cmd exited first: EPIPE."""
    reader, writer = os.pipe()
    os.close(reader)
    with os.fdopen(writer, "w") as gone:
        done = run_with_stdout(args, given, gone)
    assert (done.returncode, done.stderr) == (
        cli.EXIT_FAILURE, "forkchat-server: cannot write to standard output: Broken pipe\n")


# A server that signals itself while it binds, in the start's window before
# the supervisor has its handlers: the signal is sent at a known point, not
# raced against the start.
SIGNALLED_START = """
import os, signal, sys
from forkchat import cli
bind = cli.open_listeners
def open_listeners(cfg):
    os.kill(os.getpid(), signal.{name})
    return bind(cfg)
cli.open_listeners = open_listeners
sys.exit(cli.main(["-l", "127.0.0.1:0", "--state-dir", sys.argv[1]]))
"""


def start_signalled(name: str, tmp_path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", SIGNALLED_START.format(name=name),
                             str(tmp_path)], stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_stop_asked_for_during_the_start_is_a_clean_stop(tmp_path, name):
    """Between the start of main() and the supervisor's handlers (the imports
    of its roles, the binds, the warm-up: some 0.1 s), Ctrl+C printed a
    KeyboardInterrupt traceback and SIGTERM killed the server (status -15).
    Held until the handlers exist, either is a stop like any other."""
    server = start_signalled(name, tmp_path)
    _, err = server.communicate(timeout=20)
    assert "Traceback" not in err
    assert server.returncode == 0, err
    assert "listening on 127.0.0.1:" in err and err.rstrip().endswith("INFO stopped")


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("name", "line"), [
    ("SIGHUP", "SIGHUP: no configuration file to reload"),
    ("SIGUSR1", "status: "),
])
def test_a_reload_or_report_asked_for_during_the_start_does_not_kill_it(tmp_path, name, line):
    """SIGHUP and SIGUSR1 in that window ended the server (their default
    action), which a log rotation's `kill -HUP` right after a start can do."""
    server = start_signalled(name, tmp_path)
    seen = ""
    try:
        while line not in seen:
            got = server.stderr.readline()
            assert got, seen
            seen += got
        assert server.poll() is None
    finally:
        server.terminate()
        server.communicate(timeout=20)
    assert server.returncode == 0


def test_the_signals_held_during_the_start_are_those_the_supervisor_acts_on():
    from forkchat import __main__, supervisor
    assert set(cli.HELD_SIGNALS) == set(supervisor.SIGNAL_ACTIONS) \
        == set(__main__._HELD_SIGNALS)


# A server that signals itself while Python imports the CLI, before main()
# runs (some 50-70 ms of the start: config, listeners and the rest), as
# `python -m forkchat` and the forkchat-server command start it.
SIGNALLED_IMPORT = """
import os, runpy, signal, sys
class Signaller:
    def find_spec(self, name, path=None, target=None):
        if name == "forkchat.config":
            os.kill(os.getpid(), signal.{name})
        return None
sys.meta_path.insert(0, Signaller())
sys.argv = ["forkchat-server", "-l", "127.0.0.1:0", "--state-dir", sys.argv[1]]
runpy.run_module("forkchat", run_name="__main__", alter_sys=True)
"""


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("name", "line"), [
    ("SIGTERM", "INFO stopped"), ("SIGINT", "INFO stopped"),
    ("SIGHUP", "SIGHUP: no configuration file to reload"), ("SIGUSR1", "status: "),
])
def test_a_signal_while_the_cli_is_imported_is_held_too(tmp_path, name, line):
    """Before main() held them, while the CLI's own modules loaded, SIGHUP
    and SIGUSR1 ended the server by their default action (status -1,
    -10, nothing logged), SIGTERM too, and Ctrl+C printed a traceback."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    server = subprocess.Popen([sys.executable, "-c", SIGNALLED_IMPORT.format(name=name),
                               str(tmp_path)], stderr=subprocess.PIPE, text=True, env=env,
                              start_new_session=True)
    seen = ""
    try:
        while line not in seen:
            got = server.stderr.readline()
            assert got, (server.wait(timeout=20), seen)
            seen += got
    finally:
        # (a SIGTERM or SIGINT stopped it: a second one, sent as it exits
        # with its handlers gone, ended it by the default action, -15)
        if line not in seen or name not in ("SIGTERM", "SIGINT"):
            server.terminate()
        seen += server.communicate(timeout=20)[1]
    assert "Traceback" not in seen
    assert server.returncode == 0, seen


def test_the_server_command_starts_where_python_dash_m_does():
    """forkchat-server holds the signals before the CLI's imports as
    `python -m forkchat` does: both run forkchat.__main__'s main."""
    with open(ROOT / "pyproject.toml", "rb") as project:
        scripts = tomllib.load(project)["project"]["scripts"]
    assert scripts["forkchat-server"] == "forkchat.__main__:main"


# An answer's own Ctrl+C, sent as the CLI is imported (held then, as for a
# start) and so taken as main() lets the signals through for the answer.
SIGNALLED_ANSWER = SIGNALLED_IMPORT.replace(
    'sys.argv = ["forkchat-server", "-l", "127.0.0.1:0", "--state-dir", sys.argv[1]]',
    'sys.argv = ["forkchat-server"] + sys.argv[1:]')


@pytest.mark.timeout(30)
@pytest.mark.parametrize("args", [["--hash-password"], ["--check-config"], ["--version"]])
def test_a_ctrl_c_held_from_the_start_of_an_answer_ends_it_as_at_the_question(args):
    """forkchat-server(8), EXIT STATUS: an answer interrupted with Ctrl+C
    exits 130.  A Ctrl+C in the first 50 ms of --hash-password (held with
    the start's signals) came out where main() let them through again:
    a KeyboardInterrupt traceback, and death by SIGINT (status -2)."""
    assert SIGNALLED_ANSWER != SIGNALLED_IMPORT
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    answer = subprocess.Popen([sys.executable, "-c", SIGNALLED_ANSWER.format(name="SIGINT"),
                               *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env,
                              start_new_session=True, preexec_fn=signals.as_started_by_hand)
    out, err = answer.communicate(timeout=20)      # (stdin stays open until then: no EOF)
    assert (answer.returncode, out, err) == (cli.EXIT_INTERRUPTED, "", "\n")
