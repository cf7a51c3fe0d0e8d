import logging
import os
import sys

from forkchat import log


def test_journal_lines_carry_syslog_priorities(monkeypatch, capfd):
    stat = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino}")
    log.setup("supervisor", "debug")
    logging.getLogger("forkchat.test").warning("careful")
    logging.getLogger("forkchat.test").info("fine")
    err = capfd.readouterr().err.splitlines()
    assert err[-2].startswith("<4>supervisor[") and err[-2].endswith("careful")
    assert err[-1].startswith("<6>supervisor[")


def test_terminal_lines_carry_time_and_level(monkeypatch, capfd):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    log.setup("worker", "info")
    logging.getLogger("forkchat.test").error("broken")
    line = capfd.readouterr().err.splitlines()[-1]
    assert " worker[" in line and " ERROR broken" in line and line[:4].isdigit()


def test_control_characters_from_clients_are_escaped_one_event_a_line(monkeypatch, capfd):
    """A client's QUIT reason with a terminal escape must not retitle or clear
    the operator's terminal, nor start a line of its own; a traceback still
    follows its line as usual."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    log.setup("worker", "info")
    logger = logging.getLogger("forkchat.test")
    logger.info("conn %d bob closing: %s", 11, "Quit: \x1b]0;pwned\x07 bye\nforged line\x7f")
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("worker crashed")
    err = capfd.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "\x7f" not in err
    lines = err.splitlines()
    assert lines[0].endswith(r"closing: Quit: \x1b]0;pwned\x07 bye\x0aforged line\x7f")
    assert lines[1].endswith("worker crashed") and lines[2] == "Traceback (most recent call last):"


def test_c1_controls_and_unicode_line_breaks_are_escaped_too(monkeypatch, capfd):
    """U+0085 (NEL) and U+2028 break a line for splitlines(); U+009B is a CSI
    that xterm acts on."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    log.setup("worker", "info")
    logging.getLogger("forkchat.test").info("closing: %s", "a\u2028forged\u0085nel\u009b2J")
    err = capfd.readouterr().err
    assert len(err.splitlines()) == 1
    assert err.rstrip("\n").endswith(r"closing: a\u2028forged\x85nel\x9b2J")


def test_a_log_call_with_bad_arguments_does_not_raise_where_it_is_made(monkeypatch, capfd):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    log.setup("worker", "info")
    logging.getLogger("forkchat.test").info("conn %d", "not a number")   # must not raise
    logging.getLogger("forkchat.test").info("after")
    assert capfd.readouterr().err.splitlines()[-1].endswith(" INFO after")


def test_a_child_set_up_alike_keeps_its_parents_handler_and_names_its_role(monkeypatch, capfd):
    """A worker forked from a spawner set up for the same standard error
    only names its own role: a new handler, formatter and filter in every
    worker cost each a third of a millisecond, in pages it copied.  Set
    up for another standard error, or for the journal, it makes its own."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    log.setup("spawner", "info")
    root = logging.getLogger()
    made = list(root.handlers)
    log.setup("worker", "warning")
    assert root.handlers == made and root.level == logging.WARNING
    logging.getLogger("forkchat.test").warning("as a worker")
    assert " worker[" in capfd.readouterr().err.splitlines()[-1]
    stat = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino}")
    log.setup("broker", "info")
    assert root.handlers != made
    logging.getLogger("forkchat.test").info("for the journal")
    assert capfd.readouterr().err.splitlines()[-1].startswith("<6>broker[")


def test_a_forked_child_takes_its_parents_answer_on_the_journal(monkeypatch):
    """It has the same standard error and environment; asking again cost
    every worker pages copied from its spawner.  The process that set up
    asks each time (a test may change its environment)."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    log.setup("spawner", "info")
    asked = []
    monkeypatch.setattr(log.systemd, "under_journal", lambda: asked.append(os.getpid()) or False)
    log.setup("spawner", "info")
    assert asked == [os.getpid()]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            log.setup("worker", "info")
            os.write(write_end, str(asked).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 100).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    assert answer == str([os.getpid()])


def test_lines_written_nowhere_go_through_our_handler_and_reach_no_file(monkeypatch, capfd):
    """warmup.warm_up's lines: formatted by the handler children keep, which
    writes to standard error again afterwards; no other handler sees them."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    log.setup("supervisor", "info")
    root = logging.getLogger()
    ours = root.handlers[0]
    seen = []
    other = logging.Handler()
    other.emit = seen.append
    root.addHandler(other)
    formatted = []
    monkeypatch.setattr(ours, "format", lambda record: formatted.append(record) or "x")
    try:
        with log.written_nowhere():
            logging.getLogger("forkchat.worker").info("conn %d from %s", 0, "127.0.0.1")
    finally:
        root.removeHandler(other)
    monkeypatch.undo()
    logging.getLogger("forkchat.test").info("after")
    assert [record.getMessage() for record in formatted] == ["conn 0 from 127.0.0.1"]
    assert seen == []
    assert ours.stream is sys.stderr
    err = capfd.readouterr().err
    assert "conn 0" not in err and err.rstrip().endswith("INFO after")


def test_lines_written_nowhere_need_no_working_standard_error(monkeypatch, tmp_path):
    """Standard error may have no reader (journald restarted) or be closed:
    swapping the handler's stream must not flush it, or the server's start
    (warmup.warm_up) failed on it."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    log.setup("supervisor", "info")
    ours = logging.getLogger().handlers[0]
    gone = open(tmp_path / "gone", "w")
    gone.write("pending")
    gone.close()
    monkeypatch.setattr(ours, "stream", gone)
    with log.written_nowhere():
        logging.getLogger("forkchat.worker").info("conn %d", 0)
    assert ours.stream is gone
