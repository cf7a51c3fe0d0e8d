"""A QUIT line longer than 512 bytes, sent whole by a raw client.

weechat sends a long /quit reason whole and closes: the server refused the
line with 417, as any over-long one, and the room read "Connection closed"
in place of the reason.  The QUIT now runs, its reason cut to what fits a
line and then to kicklen characters (390 by default), as most servers do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

from tests.integration.test_client_linemode import watcher_in
from tests.integration.test_real_clients import STEP_TIMEOUT, expect_from

EURO_REASON = "a" + "\u20ac" * 1400                    # 4201 bytes


def _quit_whole(quitter, line: bytes) -> list:
    """Send `line` whole (in pieces of 4 KB, as a socket may carry it) and
    read to the end: the ERROR that says goodbye must reach the quitter."""
    for start in range(0, len(line), 4096):
        quitter.sock.sendall(line[start:start + 4096])
    said = quitter.expect_closed(10)
    assert [msg.command for msg in said if msg.command in ("417", "ERROR")] == ["ERROR"], said
    return said


@pytest.mark.parametrize("size", [600, 4096, 65536])
def test_an_over_long_quit_reaches_the_room_cut(server, registered, size):
    watcher = watcher_in(registered, "#long")
    quitter = registered("longq")
    quitter.join("#long")
    expect_from(watcher, "longq", "JOIN")
    said = _quit_whole(quitter, b"QUIT :" + b"x" * size + b"\r\n")
    assert said[-1].params[-1].startswith("Closing Link: 127.0.0.1 (Quit: xxxxxxxxxx")
    assert expect_from(watcher, "longq", "QUIT").params[-1] == "Quit: " + "x" * 390


def test_an_over_long_tagged_quit_keeps_whole_characters(server, registered):
    """A lower-case QUIT with a tag, its reason all euro signs (3 bytes
    each): the cut at 510 bytes falls inside one, which is dropped."""
    watcher = watcher_in(registered, "#long")
    quitter = registered("eurq")
    quitter.join("#long")
    expect_from(watcher, "eurq", "JOIN")
    _quit_whole(quitter, b"@label=1 quit :" + EURO_REASON.encode() + b"\r\n")
    reason = expect_from(watcher, "eurq", "QUIT").params[-1]
    assert reason.startswith("Quit: a\u20ac\u20ac") and len(reason) > 100
    assert EURO_REASON.startswith(reason[len("Quit: "):])


def test_an_over_long_quit_not_utf8_still_quits(server, registered):
    """A latin-1 byte in the part kept: 'Client Quit', as a short such QUIT."""
    watcher = watcher_in(registered, "#long")
    quitter = registered("latq")
    quitter.join("#long")
    expect_from(watcher, "latq", "JOIN")
    _quit_whole(quitter, b"QUIT :Tsch\xfc\xdf " + b"y" * 3000 + b"\r\n")
    assert expect_from(watcher, "latq", "QUIT").params[-1] == "Client Quit"


def test_other_over_long_lines_are_still_refused(server, registered):
    client = registered("longp")
    client.send(b"PRIVMSG #long :" + b"z" * 5000)
    client.send(b"QUITTER :" + b"z" * 5000)
    assert client.expect("417").params[-1] == "Input line was too long"
    assert client.expect("417").params[-1] == "Input line was too long"
    client.sync()


@pytest.mark.skipif(not shutil.which("weechat-headless"), reason="weechat-headless is needed")
def test_weechat_quit_with_a_long_reason_keeps_it_cut(server, registered):
    """weechat-headless, driven through its FIFO, quits with a reason of 700
    characters: its room reads the first 390 of them, not "Connection
    closed" (found with weechat by realclients10)."""
    reason = "".join(f"word{n} " for n in range(120))[:700]
    workdir = tempfile.mkdtemp(prefix="forkchat-weechat-")
    fifo = os.path.join(workdir, "fifo")
    watcher = watcher_in(registered, "#real")
    setup = ";".join([
        f"/set fifo.file.path {fifo}",
        f"/server add t 127.0.0.1/{server.port} -notls",
        "/set irc.server.t.nicks wclong", "/set irc.server.t.autojoin #real", "/connect t"])
    process = subprocess.Popen(["weechat-headless", "--dir", workdir, "--run-command", setup],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        expect_from(watcher, "wclong", "JOIN")
        with open(fifo, "w") as handle:
            handle.write(f"irc.server.t */quit {reason}\n")
        assert expect_from(watcher, "wclong", "QUIT").params[-1] == "Quit: " + reason[:390]
        process.wait(STEP_TIMEOUT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
            process.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)
