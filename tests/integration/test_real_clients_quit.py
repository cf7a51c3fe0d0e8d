"""Quit reasons longer than an IRC line, typed into real clients.

irssi cuts its QUIT line to fit by itself, and its rooms see the reason.
The server answers a line over 512 bytes with 417 and discards it
(forkchat(7)), but for a QUIT, which it cuts and runs; forkchat-client
cuts its reasons to fit itself, and says so.
"""

from __future__ import annotations

import pytest

from tests.integration.test_client_linemode import LineClient, watcher_in
from tests.integration.test_real_clients import expect_from

REASON = "\U0001f389" + "\u20ac" * 200      # 604 bytes: no QUIT line holds it


def test_forkchat_client_quit_with_a_long_reason_keeps_it_cut(server, registered):
    """forkchat-client cuts what it says to fit a line (split_text), but not
    its /quit reason: the server refused the QUIT (417, shown as "Input line
    was too long"), the client closed, and the room saw "Connection closed"
    in place of the first 150-odd characters of the reason."""
    watcher = watcher_in(registered, "#real")
    client = LineClient(["-n", "fcquit", "-r", "#real", f"127.0.0.1:{server.port}"])
    try:
        expect_from(watcher, "fcquit", "JOIN")
        client.send(f"/quit {REASON}")
        said = expect_from(watcher, "fcquit", "QUIT").params[-1]
        assert said.startswith("Quit: \U0001f389\u20ac") and REASON.startswith(said[len("Quit: "):])
        assert client.proc.wait(10) == 0
    finally:
        client.kill()


def test_forkchat_client_cuts_a_long_topic_kick_and_part_reason_to_fit(server, registered):
    """Sent whole, each of these lines was refused (417) and did nothing:
    the topic stayed, the kicked member stayed, the client stayed in the
    room.  Each goes out cut, and stderr says so, once each."""
    client = LineClient(["-n", "fccut", "-r", "#cut", f"127.0.0.1:{server.port}"])
    try:
        client.wait_for(r"\* fccut joined #cut")
        watcher = watcher_in(registered, "#cut")
        victim = watcher_in(registered, "#cut", "victim")
        client.send(f"/topic {REASON}")
        topic = expect_from(watcher, "fccut", "TOPIC").params[-1]
        client.send(f"/kick victim {REASON}")
        kick = expect_from(watcher, "fccut", "KICK").params[-1]
        client.send(f"/part {REASON}")
        part = expect_from(watcher, "fccut", "PART").params[-1]
        for said in (topic, kick, part):
            assert said.startswith("\U0001f389\u20ac") and REASON.startswith(said)
        client.wait_for(r"cut to its first \d+ of 201 characters", where="err", count=3)
        assert client.finish() == 0
        victim.close()
    finally:
        client.kill()
