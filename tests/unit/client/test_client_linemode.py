"""Line mode's idea of the current target, fed lines without a server.

The Connection is made but never started, so lines are only queued; what is
checked is where the next piped line would go.
"""

from __future__ import annotations

import io
import os
import signal

import pytest

from forkchat.client import connection, ircmsg, linemode, wakeup


@pytest.fixture
def line_mode():
    made = linemode.LineMode(connection.Settings(nick="lm", rooms=("#lobby", "#ops")),
                             out=io.StringIO(), err=io.StringIO())
    yield made
    made.sel.close()


def feed(mode: linemode.LineMode, *lines: str) -> None:
    for line in lines:
        mode._handle_line(line.encode())


def test_part_of_the_current_room_moves_on_before_the_echo(line_mode):
    feed(line_mode, "/join #x")
    assert line_mode.current == "#x"
    feed(line_mode, "/part")
    assert line_mode.current == "#lobby"


def test_part_skips_rooms_being_left(line_mode):
    feed(line_mode, "/part #lobby", "/part #ops bye")
    assert line_mode.current == ""
    feed(line_mode, "/join #new")
    assert line_mode.current == "#new"


def test_a_query_follows_its_partners_new_nick(line_mode):
    """`/query alice` then lines: alice becoming alicia (seen in a shared
    room) sent the rest to a nick no one has, each refused."""
    feed(line_mode, "/query alice")
    line_mode.conn._handle_raw(b":Alice!a@h NICK alicia")
    assert line_mode.current == "alicia"
    feed(line_mode, "still there?")
    assert line_mode.conn._queue[-1][0] == "PRIVMSG alicia :still there?"
    line_mode.conn._handle_raw(b":bob!b@h NICK robert")      # someone else: no change
    assert line_mode.current == "alicia"


def test_a_rename_does_not_move_talk_out_of_a_room(line_mode):
    line_mode.conn._handle_raw(b":lobby!a@h NICK other")
    assert line_mode.current == "#lobby"


def test_part_of_another_room_keeps_the_current_one(line_mode):
    feed(line_mode, "/switch #ops", "/part #lobby")
    assert line_mode.current == "#ops"


def test_part_in_a_conversation_goes_back_to_a_room(line_mode):
    feed(line_mode, "/query alice")
    assert line_mode.current == "alice"
    feed(line_mode, "/part")
    assert line_mode.current == "#lobby"


@pytest.mark.parametrize("line", ["/part #lobby,#ops", "/part #ops,#lobby"])
def test_part_of_a_list_moves_past_every_room_in_it(line_mode, line):
    line_mode.conn._handle_raw(b":lm!u@127.0.0.1 JOIN #dev")    # in three rooms now
    feed(line_mode, "/switch #lobby", line)
    assert line_mode.current == "#dev"


def test_a_refused_rejoin_of_the_current_room_moves_on(line_mode):
    """The connection gives a room up when its rejoin is refused (+b, a new
    key); line mode must not keep sending there."""
    conn = line_mode.conn
    conn._rejoining = set(conn.rooms)
    conn._handle_raw(b":srv 474 lm #lobby :Cannot join channel (+b)")
    assert "#lobby" not in conn.rooms
    assert line_mode.current == "#ops"


@pytest.mark.parametrize("reply", [
    b":srv 464 lm :Password incorrect",
    b":srv 464 lm :Too many failed OPER attempts from your address, try again in 2 s",
    b":srv 481 lm :Permission Denied- You're not an IRC operator",
    b":srv 482 lm #lobby :You're not channel operator",
    b":srv 491 lm :No O-lines for your host",
    b":srv 441 lm bob #lobby :They aren't on that channel",
])
def test_a_refused_operator_or_room_operator_command_fails_the_run(line_mode, reply):
    """`printf '/oper admin pw\\n/kill spammer\\n' | forkchat-client`: a wrong
    password or a missing privilege must not end in exit status 0."""
    line_mode.conn._handle_raw(reply)
    assert line_mode.failures == 1


@pytest.mark.parametrize("reply, said", [
    (b":srv 464 lm :Password incorrect", "OPER refused: Password incorrect"),
    (b":srv 464 lm :Too soon after a failed OPER attempt, try again in 2 s",
     "OPER refused: Too soon after a failed OPER attempt, try again in 2 s"),
    (b":srv 491 lm :No O-lines for your host", "OPER refused: No O-lines for your host"),
])
def test_a_refused_oper_says_so_and_fails_the_run(line_mode, reply, said):
    """stderr names what was refused and gives the server's reason, as
    `nobody: No such nick/channel` names its target; the run fails."""
    line_mode.conn._handle_raw(reply)
    assert line_mode._err.getvalue() == f"forkchat-client: {said}\n"
    assert line_mode.failures == 1


@pytest.mark.parametrize("reply", [
    b":srv 433 lm deploybot :Nickname is already in use",
    b":srv 432 lm 1bad :Erroneous nickname",
    b":srv 435 lm deploybot #ops :Cannot change nickname while banned on channel"])
def test_a_refused_nick_change_fails_the_run(line_mode, reply):
    """`printf '/nick deploybot\\nDeploy done\\n' | forkchat-client -n cron`
    with deploybot taken: the message went out as cron, and the exit status
    was 0."""
    line_mode.conn._handle_raw(reply)
    assert line_mode.failures == 1


def test_a_list_or_who_the_server_declines_for_now_fails_the_run(line_mode):
    """`echo "/who #ops" | forkchat-client` on a busy server: its 263 then
    the list's end read as an empty room, with exit status 0."""
    line_mode.conn._handle_raw(b":srv 263 lm WHO :Please wait a while and try again.")
    line_mode.conn._handle_raw(b":srv 315 lm #ops :End of /WHO list")
    assert line_mode._err.getvalue() == (
        "forkchat-client: WHO: Please wait a while and try again.\n")
    assert line_mode.failures == 1


def test_a_lost_race_to_take_the_wanted_nick_back_is_no_failure(line_mode):
    """The connection's own quiet NICK (the holder of our nick left) may get
    a 433 if someone was quicker: not a line of the user's, not a failure."""
    conn = line_mode.conn
    conn.state, conn.nick = "ready", "lm_"
    conn._regaining = True
    conn._handle_raw(b":srv 433 lm_ lm :Nickname is already in use")
    assert line_mode.failures == 0


def test_a_ban_refusing_the_try_to_take_the_wanted_nick_back_is_no_failure(line_mode):
    """A member a ban silences keeps its nick (435): the connection's own
    quiet NICK, sent when the holder of our nick left, is not a line of the
    user's, and its refusal neither fails the run nor is said."""
    conn = line_mode.conn
    conn.state, conn.nick = "ready", "lm_"
    conn._regaining = True
    conn._handle_raw(b":srv 435 lm_ lm #ops :Cannot change nickname while banned on channel")
    assert line_mode.failures == 0
    assert line_mode._err.getvalue() == ""


def test_an_empty_names_or_who_reply_is_printed(line_mode):
    """`/names #secret` in a pipe: the end-of-list line is the whole answer."""
    conn = line_mode.conn
    conn._handle_raw(b":srv 366 lm #secret :End of /NAMES list")
    conn._handle_raw(b":srv 315 lm #secret :End of /WHO list")
    conn._handle_raw(b":srv 352 lm #ops u h srv op H :0 op")
    conn._handle_raw(b":srv 315 lm #ops :End of /WHO list")
    conn._handle_raw(b":srv 353 lm = #ops :@op")
    conn._handle_raw(b":srv 366 lm #ops :End of /NAMES list")
    printed = line_mode._out.getvalue().splitlines()
    assert [line[6:] for line in printed] == [
        "* #secret: End of /NAMES list", "* #secret: End of /WHO list",
        "* #ops op H u@h (op)", "* Members of #ops: @op"]


def test_a_big_read_gets_a_barrier_every_few_lines():
    """`< file` arrives in one read: with a single barrier at its end, a
    server restart mid-file resent every line sent so far (hundreds of
    duplicates); a barrier every BARRIER_LINES bounds what is sent twice."""
    read_end, write_end = os.pipe()
    made = linemode.LineMode(connection.Settings(nick="lm", rooms=("#lobby",)),
                             stdin_fd=read_end, out=io.StringIO(), err=io.StringIO())
    try:
        count = 3 * linemode.BARRIER_LINES + 2
        os.write(write_end, b"".join(b"line %d\n" % number for number in range(count)))
        made._on_stdin(0)
        queued = [line for line, _ in made.conn._queue]
        pings = [index for index, line in enumerate(queued) if line.startswith("PING")]
        assert len(queued) == count + len(pings)
        gaps = [after - before - 1 for before, after in zip([-1] + pings, pings)]
        assert gaps == [linemode.BARRIER_LINES] * 3
        assert queued[-1] == "PRIVMSG #lobby :line %d" % (count - 1)
    finally:
        made.sel.close()
        os.close(read_end)
        os.close(write_end)


@pytest.mark.parametrize("raw, sent", [
    ("été ✓".encode(), "été ✓"),
    ("été".encode("latin-1"), "été"),
    (b"caf\xe9 \xff", "café ÿ"),
])
def test_input_that_is_not_utf8_is_read_as_latin1(line_mode, raw, sent):
    """A line of a Latin-1 log keeps its letters rather than becoming U+FFFD."""
    line_mode._handle_line(raw)
    assert [ircmsg.parse(line).params for line, _ in line_mode.conn._queue] == [
        ("#lobby", sent)]


class ClosedPipe(io.StringIO):
    """A stream whose reader went away, as stderr under `2>&1 | head -1`."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_complaint_to_a_closed_stderr_does_not_end_the_run():
    """A harmless status line (nick in use, reconnecting) written to a
    stderr whose reader is gone raised BrokenPipeError out of run(): exit 1,
    and the lines still to send were lost."""
    made = linemode.LineMode(connection.Settings(nick="lm", rooms=("#lobby",)),
                             out=ClosedPipe(), err=ClosedPipe())
    try:
        made.conn.state = "registering"
        made.conn._handle_raw(b":srv 433 * lm :Nickname is already in use")
        made._handle_line(b"/bogus")
        made._handle_line(b"hello")
        assert made.failures == 1
        assert [line for line, _ in made.conn._queue][-1] == "PRIVMSG #lobby hello"
    finally:
        made.sel.close()


def test_an_event_that_cannot_be_written_fails_the_run_once_and_it_goes_on():
    """stdout whose reader is gone (`| head -1`): every event after was
    dropped without a word, and the exit status said 0."""
    err = io.StringIO()
    made = linemode.LineMode(connection.Settings(nick="lm", rooms=("#lobby",)),
                             out=ClosedPipe(), err=err)
    try:
        made.conn._handle_raw(b":bob!b@h PRIVMSG #lobby :one")
        made.conn._handle_raw(b":bob!b@h PRIVMSG #lobby :two")
        made._handle_line(b"still sent")
        assert [line for line, _ in made.conn._queue][-1] == "PRIVMSG #lobby :still sent"
        assert made._exit_status() == 1
        assert err.getvalue() == "forkchat-client: cannot write to standard output: Broken pipe\n"
    finally:
        made.sel.close()


def test_a_signal_while_connecting_with_nothing_queued_ends_at_once(line_mode):
    """Ctrl+C while the server does not answer yet: no line of ours waits."""
    line_mode._signalled(signal.SIGINT)
    assert line_mode.conn.closed
    assert line_mode._exit_status() == 130


def test_a_second_signal_ends_at_once_and_counts_the_queue(line_mode):
    """Lines queued while the server is away: the first SIGTERM waits for them
    (within DRAIN_S), the second ends now and says how many were lost."""
    feed(line_mode, "one", "two", "three")
    line_mode._signalled(signal.SIGTERM)
    assert not line_mode.conn.closed
    line_mode._signalled(signal.SIGTERM)
    assert line_mode.conn.closed
    assert line_mode._exit_status() == 1
    assert line_mode._err.getvalue() == (
        "forkchat-client: 3 line(s) not sent: SIGTERM came before they went out\n")


def test_the_end_of_the_drain_quits_and_counts_the_queue(line_mode):
    feed(line_mode, "one", "two")
    line_mode._signalled(signal.SIGHUP)
    line_mode._drain_until = 0.0            # DRAIN_S is up
    line_mode._end_of_drain()
    assert line_mode.conn.closed and line_mode._dropped == 2
    assert line_mode._exit_status() == 1


def test_a_signal_ignored_at_start_stays_ignored():
    """`nohup forkchat-client ... &`: SIGHUP must not end it."""
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    term_before = signal.getsignal(signal.SIGTERM)
    try:
        with wakeup.catching(linemode.SIGNAL_REASONS):
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not term_before     # caught
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is term_before             # put back
    finally:
        signal.signal(signal.SIGHUP, old)


class HungUp(io.StringIO):
    """A terminal that hung up: every write fails with EIO."""

    def write(self, text: str) -> int:
        raise OSError(5, "Input/output error")


def test_a_hung_up_terminal_ends_output_not_the_run():
    """`--line` on a terminal that closed: SIGHUP now leaves politely, and the
    events printed meanwhile must not end it in a traceback (EIO)."""
    made = linemode.LineMode(connection.Settings(nick="lm", rooms=("#lobby",)),
                             out=HungUp(), err=HungUp())
    try:
        made.conn._handle_raw(b":alice!u@h PRIVMSG #lobby :hi")
        made._complain("still fine")
        assert not isinstance(made._out, HungUp) and not isinstance(made._err, HungUp)
    finally:
        made.sel.close()


def test_a_names_stream_that_never_ends_is_held_within_a_bound(line_mode):
    """353s for room after room and never a 366: each room's wait for its
    end was kept, without a bound.  The rows print as they come; only the
    last LISTED_MAX ends are awaited."""
    for n in range(1000):
        line_mode.conn._handle_raw(f":srv 353 lm = #r{n} :a b".encode())
    assert len(line_mode._listed) <= linemode.LISTED_MAX
    assert line_mode._out.getvalue().count("Members of #r") == 1000
    line_mode.conn._handle_raw(b":srv 366 lm #r999 :End of /NAMES list")
    assert "#r999: End" not in line_mode._out.getvalue()


def test_a_names_of_every_room_ends_quietly_after_its_rows(line_mode):
    """`/raw NAMES`: every room's rows, then one 366 for `*`, which printed
    `*: End of /NAMES list` after them as if the answer were empty."""
    for raw in (b":srv 353 lm = #a :x y", b":srv 353 lm = #b :z",
                b":srv 366 lm * :End of /NAMES list"):
        line_mode.conn._handle_raw(raw)
    printed = line_mode._out.getvalue()
    assert "Members of #a: x y" in printed and "Members of #b: z" in printed
    assert "End of /NAMES" not in printed and not line_mode._listed
    line_mode.conn._handle_raw(b":srv 366 lm * :End of /NAMES list")
    assert "*: End of /NAMES list" in line_mode._out.getvalue()     # an empty one shows


@pytest.mark.parametrize("star", [False, True])
def test_a_names_of_every_room_ended_room_by_room_prints_only_its_rows(line_mode, star):
    """A server that ends each room of `NAMES` with its own 366 (miniircd),
    with or without one for `*` after them: the rows, and no end.  The end
    for `*` after them printed as if no room had any."""
    feed(line_mode, "/raw NAMES")
    for raw in (b":srv 353 lm = #a :x y", b":srv 366 lm #a :End of /NAMES list",
                b":srv 353 lm = #b :z", b":srv 366 lm #b :End of /NAMES list"):
        line_mode.conn._handle_raw(raw)
    if star:
        line_mode.conn._handle_raw(b":srv 366 lm * :End of /NAMES list")
    printed = line_mode._out.getvalue()
    assert "Members of #a: x y" in printed and "Members of #b: z" in printed
    assert "End of /NAMES" not in printed and not line_mode._listed
    feed(line_mode, "/raw NAMES")       # solanum: the end for `*` alone, the answer
    line_mode.conn._handle_raw(b":srv 366 lm * :End of /NAMES list")
    assert "*: End of /NAMES list" in line_mode._out.getvalue()


def test_a_text_cut_to_fit_is_said_on_stderr_and_the_cut_line_sent(line_mode):
    """`/part` with a reason longer than a line went out whole and the
    server discarded it (417): the script stayed in the room.  The reason
    is cut, and stderr says so; it is no failure (the PART went out)."""
    feed(line_mode, "/part #ops " + "\u20ac" * 300)
    reason = ircmsg.parse(line_mode.conn._queue[-1][0]).params[-1]
    assert line_mode.conn._queue[-1][0].startswith("PART #ops ")
    assert reason == "\u20ac" * len(reason) and 100 < len(reason) < 300
    assert line_mode._err.getvalue() == (f"forkchat-client: part reason cut to its first"
                                         f" {len(reason)} of 300 characters to fit an IRC line\n")
    assert line_mode.failures == 0 and line_mode.current == "#lobby"


def test_a_topic_is_cut_to_the_topiclen_the_server_gave(line_mode):
    """TOPICLEN from 005 is kept: the server keeps only so much of a
    topic, and the one who set it heard nothing of the rest."""
    line_mode.conn._handle_raw(b":srv 005 lm TOPICLEN=40 AWAYLEN=200 :are supported")
    assert line_mode.conn.lengths == {"TOPICLEN": 40, "AWAYLEN": 200}
    feed(line_mode, "/topic " + "word " * 20)
    assert line_mode.conn._queue[-1][0] == "TOPIC #lobby :" + "word " * 8   # 40 characters
    assert "to fit the server's TOPICLEN (40)" in line_mode._err.getvalue()
