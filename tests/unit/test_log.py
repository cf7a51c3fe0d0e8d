import logging
import os

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
