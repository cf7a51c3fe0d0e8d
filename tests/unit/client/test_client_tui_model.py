"""The curses interface's model and wrapping, without a screen."""

import curses
import selectors
import time

import pytest

from forkchat.client import buffers, connection, events, ircmsg, lineedit, tui


def ev(kind, **fields):
    return events.UiEvent(kind, time.time(), **fields)


def model_in_lobby() -> buffers.ChatModel:
    model = buffers.ChatModel()
    model.me = "bob"
    model.pending_switch.add("#lobby")
    model.apply(ev("join", buffer="#lobby", nick="bob", own=True))
    model.apply(ev("names", buffer="#lobby", names=("@op", "bob")))
    model.apply(ev("names_end", buffer="#lobby"))
    return model


def test_own_join_opens_and_switches_and_names_fill_members():
    model = model_in_lobby()
    assert model.current.name == "#lobby"
    assert set(model.current.members.values()) == {"op", "bob"}
    assert [l.kind for l in model.current.lines] == ["join"]   # names burst is quiet


def test_private_message_opens_a_query_buffer_with_unread_highlight():
    model = model_in_lobby()
    model.apply(ev("msg", buffer="alice", nick="alice", text="psst", private=True))
    query = model.find("alice")
    assert query is not None and query.unread == 1 and query.highlight
    assert model.current.name == "#lobby"


def test_unread_counts_only_other_buffers():
    model = model_in_lobby()
    model.apply(ev("join", buffer="#two", nick="bob", own=True))
    model.apply(ev("msg", buffer="#two", nick="op", text="hi"))
    assert model.find("#two").unread == 1
    model.switch_to("3")
    assert model.current.name == "#two" and model.current.unread == 0


def test_quit_and_nick_touch_every_room_with_that_member():
    model = model_in_lobby()
    model.apply(ev("nick", nick="op", other="boss"))
    assert "boss" in model.current.members.values()
    model.apply(ev("quit", nick="boss", text="bye"))
    assert "boss" not in model.current.members.values()
    assert [l.kind for l in model.current.lines][-2:] == ["nick", "quit"]


def test_own_part_closes_the_buffer():
    model = model_in_lobby()
    model.apply(ev("part", buffer="#lobby", nick="bob", own=True))
    assert model.find("#lobby") is None and model.active == 0


def test_disconnect_is_shown_in_rooms_and_marks_them_unjoined():
    model = model_in_lobby()
    model.apply(ev("status", text="Disconnected", other=connection.STATUS_DISCONNECTED))
    assert model.current.lines[-1].kind == "status"
    assert not model.current.joined


def test_cycle_and_switch_by_name():
    model = model_in_lobby()
    model.cycle(+1)
    assert model.active == 0
    assert model.switch_to("#LOBBY") and model.current.name == "#lobby"
    assert not model.switch_to("9")


def test_completion_offers_members_but_not_me():
    model = model_in_lobby()
    assert model.completions("o", False) == ["op"]
    assert "/join" in model.completions("/j", True)


def test_wrap_breaks_at_width_and_indents():
    rows = tui.wrap([("12345678901234567890", 0)], 10, indent=2)
    assert ["".join(t for t, _ in row) for row in rows] == ["1234567890", "  12345678", "  90"]


def test_wrap_breaks_after_a_space_when_it_can():
    rows = tui.wrap([("<bob> ", 1), ("hello wonderful world", 0)], 16, indent=2)
    assert ["".join(t for t, _ in row) for row in rows] == [
        "<bob> hello ", "  wonderful ", "  world"]
    assert all(lineedit_width(row) <= 16 for row in rows)


def test_wrap_rows_never_exceed_the_width():
    for width in range(8, 30):
        text = "a " + "x" * 40 + " b cc ddd " + "日本語" * 5
        rows = tui.wrap([("12:00 ", 0), (text, 0)], width)
        assert all(lineedit_width(row) <= width for row in rows), (width, rows)
        assert "".join(t for row in rows for t, _ in row).replace(" ", "") == \
            ("12:00 " + text).replace(" ", "")


def lineedit_width(row):
    from forkchat.client import lineedit
    return sum(lineedit.text_width(t) for t, _ in row)


def test_wrap_never_splits_wide_chars():
    rows = tui.wrap([("日本語日本語", 0)], 5, indent=0)
    assert ["".join(t for t, _ in row) for row in rows] == ["日本", "語日", "本語"]


def test_wrap_keeps_an_emoji_with_its_skin_tone_and_a_zwj_sequence_whole():
    """A skin-tone modifier at the right edge went on the next row, apart
    from its emoji, and showed there as a bare coloured square."""
    rows = tui.wrap([("abcdefgh\U0001f44d\U0001f3fd", 0)], 10, indent=0)
    assert ["".join(t for t, _ in row) for row in rows] == ["abcdefgh", "\U0001f44d\U0001f3fd"]
    rows = tui.wrap([("abcdefgh\U0001f469\u200d\U0001f4bb", 0)], 10, indent=0)
    assert ["".join(t for t, _ in row) for row in rows] == [
        "abcdefgh", "\U0001f469\u200d\U0001f4bb"]


def test_wrap_keeps_each_flag_of_a_run_whole():
    """A run of flags (🇫🇷🇩🇪🇮🇹) wrapped at an edge inside a flag put its
    two letters on two rows, each a boxed letter, and paired the rest
    wrongly (R D, E I ...)."""
    fr, de, it = "\U0001f1eb\U0001f1f7", "\U0001f1e9\U0001f1ea", "\U0001f1ee\U0001f1f9"
    rows = tui.wrap([("abcdefg" + fr + de + it, 0)], 10, indent=0)
    assert ["".join(t for t, _ in row) for row in rows] == ["abcdefg" + fr, de + it]


def test_wrap_pairs_a_long_run_of_flags_in_one_pass(monkeypatch):
    """A server line of 8000 flags took seconds to wrap at each redraw:
    each letter's run was measured back to its start."""
    calls = []
    measure = lineedit._indicators_before
    monkeypatch.setattr(lineedit, "_indicators_before",
                        lambda text, index: calls.append(index) or measure(text, index))
    fr = "\U0001f1eb\U0001f1f7"
    rows = tui.wrap([(fr * 3000, 0)], 80, indent=6)
    assert ["".join(t for t, _ in row) for row in rows] == [fr * 40] + ["      " + fr * 37] * 80
    assert not calls


def test_wrap_carries_a_word_only_when_the_wide_character_after_it_fits_too():
    """The word carried to the next row left room for one cell, and a
    wide character after it ran a cell past the edge."""
    rows = tui.wrap([("a bcdefgh\u65e5", 0)], 10, indent=2)
    assert all(lineedit_width(row) <= 10 for row in rows), rows
    assert "".join(t for row in rows for t, _ in row).replace(" ", "") == "abcdefgh\u65e5"


def test_nick_colour_is_stable_and_case_insensitive():
    assert tui.nick_colour_index("Alice") == tui.nick_colour_index("alice")
    assert 0 <= tui.nick_colour_index("bob") < len(tui.NICK_COLOURS)


def test_an_error_about_a_room_is_shown_in_its_buffer_too():
    """A refused rejoin tells, in the room's own buffer, why it is not joined."""
    model = model_in_lobby()
    model.apply(ev("join", buffer="#vault", nick="bob", own=True))
    model.switch(model.buffers[1])
    model.apply(ev("status", text="Disconnected", other=connection.STATUS_DISCONNECTED))
    model.apply(ev("error", buffer="#vault", text="#vault: Cannot join channel (+b)",
                   other="474"))
    vault = model.find("#vault")
    assert vault is not None and not vault.joined
    assert vault.lines[-1].text == "#vault: Cannot join channel (+b)"
    assert model.current.lines[-1].text == "#vault: Cannot join channel (+b)"
    model.apply(ev("error", text="alice: No such nick/channel", other="401"))
    assert vault.lines[-1].text == "#vault: Cannot join channel (+b)"


def test_a_message_to_a_room_without_a_buffer_is_not_shown_as_said_here():
    """`/msg #secret hi` from #lobby, not being in #secret: the echo must not
    read `<bob> hi` in #lobby, as if bob had said it to #lobby."""
    model = model_in_lobby()
    model.own_talk("own", "#secret", "hi")
    line = model.current.lines[-1]
    assert model.current.name == "#lobby" and model.find("#secret") is None
    assert "#secret" in line.text and line.text.endswith("hi")
    model.own_talk("own", "#lobby", "here")
    assert model.current.lines[-1].text == "here"


def test_an_empty_names_or_who_reply_is_not_silence():
    """`/names #secret` or `/who #secret` from outside: the server answers
    with only its end-of-list line; showing nothing looks like no answer."""
    model = model_in_lobby()
    before = len(model.current.lines)
    model.apply(ev("names_end", buffer="#secret", text="End of /NAMES list"))
    model.apply(ev("who_end", buffer="#secret", text="End of /WHO list"))
    shown = [line.text for line in list(model.current.lines)[before:]]
    assert shown == ["#secret: End of /NAMES list", "#secret: End of /WHO list"]


def test_a_scan_refused_for_now_is_shown_where_it_was_asked():
    """forkchat answers a /list or /who that waited its 30 s, or found 1000
    waiting, with 263 and then the end of the list: the reason belongs next
    to that end, not in buffer 1 while the room shows an empty list."""
    model = model_in_lobby()
    for raw in (":srv 263 bob LIST :Please wait a while and try again.",
                ":srv 323 bob :End of /LIST"):
        for event in events.translate(ircmsg.parse(raw), "bob"):
            model.apply(event)
    shown = [line.text for line in model.current.lines][-2:]
    assert shown == ["LIST: Please wait a while and try again.", "End of /LIST"]


def test_a_names_or_who_reply_with_rows_ends_quietly():
    model = model_in_lobby()
    model.apply(ev("names", buffer="#lobby", names=("@op", "bob")))
    model.apply(ev("names_end", buffer="#lobby", text="End of /NAMES list"))
    model.apply(ev("who", text="#lobby op H@ o@h (op)"))
    model.apply(ev("who_end", buffer="#lobby", text="End of /WHO list"))
    assert [line.kind for line in model.current.lines][-2:] == ["names", "who"]


def test_the_status_line_counts_members_in_good_english():
    model = model_in_lobby()
    assert tui.room_state(model.current) == "2 members"
    model.apply(ev("part", buffer="#lobby", nick="op"))
    assert tui.room_state(model.current) == "1 member"
    model.apply(ev("kick", buffer="#lobby", nick="op", other="bob", own=True))
    assert tui.room_state(model.current) == "not joined"


def test_a_notice_we_send_is_shown_as_a_notice_without_opening_a_conversation():
    """/notice used to show nothing at all: did it go?  It shows as
    `-bob- text` where it went, and a notice to a nick opens no buffer."""
    model = model_in_lobby()
    model.own_talk("ownnotice", "#lobby", "heads up")
    model.own_talk("ownnotice", "carol", "psst")
    assert model.find("carol") is None
    assert [(l.kind, l.text) for l in model.current.lines][-2:] == [
        ("ownnotice", "heads up"), ("ownnotice", "(to carol) psst")]
    segments = tui.line_segments(model.current.lines[-2], lambda nick: 0, 0, 0, "bob")
    assert [text for text, _ in segments][1:] == ["-bob- ", "heads up"]


def test_a_narrow_status_line_drops_the_address_and_clock_before_activity():
    """At 60 columns `... | 2 members | Act: 4*` lost its `4*`: what changes
    must stay in sight, what never changes goes first."""
    parts = ["05:03", "alice", "chat.example.org:6667", "3:#ops", "2 members", "Act: 4*"]
    assert tui.fit_status(parts, 100, tui.STATUS_SPARE) == " " + " | ".join(parts)
    fits = tui.fit_status(parts, 45, tui.STATUS_SPARE)
    assert fits == " 05:03 | alice | 3:#ops | 2 members | Act: 4*"
    assert tui.fit_status(parts, 40, tui.STATUS_SPARE) == " alice | 3:#ops | 2 members | Act: 4*"
    assert parts[2] == "chat.example.org:6667"          # the caller's list is left alone


class LeavingConnection:
    """What the interface asks of a Connection whose QUIT is on its way."""

    nick = "bob"
    rooms = {"#lobby": "#lobby"}
    quitting = True
    lengths: dict = {}

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, line: str) -> None:
        self.sent.append(line)


def typed_after_quit(*lines: str) -> tuple[buffers.ChatModel, LeavingConnection]:
    """A Tui without a screen: its model, editor and a leaving connection."""
    view = tui.Tui.__new__(tui.Tui)
    view.model, view.editor = model_in_lobby(), lineedit.LineEditor()
    view.conn = LeavingConnection()
    for line in lines:
        view.editor.insert(line)
        view._submit()
    return view.model, view.conn


def test_a_line_typed_after_a_raw_quit_is_refused_not_shown_as_sent():
    """After `/raw QUIT` the connection sends nothing more, but the ~3 s
    until the server closed showed each line typed meanwhile as said."""
    model, conn = typed_after_quit("still there?", "/me waves", "/msg alice psst")
    shown = [(line.kind, line.text) for line in model.current.lines]
    assert not [kind for kind, _ in shown if kind.startswith("own")]
    assert shown[-3:] == [("error", tui.LEAVING_NOT_SENT)] * 3
    assert model.find("alice") is None and not conn.sent


def test_local_commands_still_work_while_leaving():
    """Only what would be sent is refused: /help and /switch send nothing."""
    model, _ = typed_after_quit("/switch 1")
    assert model.active == 0
    model, _ = typed_after_quit("/help quit")
    assert model.current.lines[-1].text.startswith("/quit")


def test_a_long_room_name_leaves_half_the_input_row_to_the_text():
    """At 45 columns `[#a_very_long_room_name_for_testing_purposes] ` took
    the whole row: what was typed was drawn past the edge, unseen."""
    room = "#a_very_long_room_name_for_testing_purposes"
    assert tui.input_prompt("#lobby", 45) == "[#lobby] "
    prompt = tui.input_prompt(room, 45)
    assert prompt.startswith("[#a_very") and prompt.endswith("~] ")
    assert lineedit.text_width(prompt) <= 45 // 2
    wide = tui.input_prompt("#" + "漢" * 30, 45)
    assert lineedit.text_width(wide) <= 45 // 2
    editor = lineedit.LineEditor()
    editor.insert("hello world")
    assert editor.view(45 - lineedit.text_width(prompt))[0] == "hello world"


def test_what_we_send_elsewhere_is_not_unread_activity():
    """`/msg alice hi` from #lobby opened alice's buffer with `Act: 3*`,
    the star of a private message, for a line we wrote ourselves."""
    model = model_in_lobby()
    model.apply(ev("join", buffer="#two", nick="bob", own=True))
    model.switch_to("#lobby")
    model.own_talk("own", "alice", "hi there")
    model.own_talk("ownaction", "#two", "waves")
    for name in ("alice", "#two"):
        buffer = model.find(name)
        assert buffer.unread == 0 and not buffer.highlight, name
    assert model.find("alice").lines[-1].text == "hi there"
    model.apply(ev("msg", buffer="alice", nick="alice", text="hello", private=True))
    assert model.find("alice").unread == 1 and model.find("alice").highlight


@pytest.mark.parametrize("text, named", [
    ("al: lunch?", True), ("thanks @Al", True), ("ask AL.", True), ("<al> said", True),
    ("really", False), ("alice is here", False), ("al_ is not me", False), ("pal", False),
])
def test_a_short_nick_is_named_only_as_a_word(text, named):
    """Nick `al` was "named" by `really`: bold, and starred in Act."""
    model = model_in_lobby()
    model.me = "al"
    model.apply(ev("join", buffer="#two", nick="al", own=True))
    model.switch_to("#lobby")
    model.apply(ev("msg", buffer="#two", nick="op", text=text))
    assert model.find("#two").highlight is named
    segments = tui.line_segments(model.find("#two").lines[-1], lambda nick: 0, 0, 0, "al")
    assert (segments[-1][1] == curses.A_BOLD) is named


def test_a_nick_with_special_characters_is_found_as_a_word():
    assert buffers.names("hi [bot]!", "[bot]") and buffers.names("hi {BOT}", "[bot]")
    assert not buffers.names("hi [bot]2", "[bot]")


def test_zero_width_joiners_are_typed_not_dropped():
    """U+200D and U+200C are not isprintable(): 👩‍💻 went out as 👩💻, and
    Persian می‌خواهم lost its non-joiner.  Other controls still type nothing."""
    view = tui.Tui.__new__(tui.Tui)
    view.editor, view._escape = lineedit.LineEditor(), None
    for key in "👩\u200d💻 می\u200cخواهم\x00\u200b\x1f":
        view._key(key)
    assert view.editor.text == "👩\u200d💻 می\u200cخواهم"


def test_a_long_buffer_name_takes_a_quarter_of_the_status_line():
    room = "#a_very_long_room_name_for_testing_purposes"
    assert tui.buffer_label(2, "#lobby", 45) == "2:#lobby"
    label = tui.buffer_label(2, room, 45)
    assert label.startswith("2:#a_very") and label.endswith("~")
    assert lineedit.text_width(label) <= 45 // 4
    assert tui.buffer_label(12, room, 6) == "12:#~"


def screenless_view(model: buffers.ChatModel) -> tui.Tui:
    """A Tui that can lay out its pane without curses."""
    view = tui.Tui.__new__(tui.Tui)
    view.model, view.conn = model, LeavingConnection()
    view._colours = {"dim": 0, "error": 0}
    view.nick_attr = lambda nick: 0
    return view


def test_reading_back_stays_still_when_a_long_line_comes_in():
    """Scrolled back, each new line moved `scroll` by one row: a line that
    wraps into three rows pushed the text being read up by two."""
    model = model_in_lobby()
    for n in range(40):
        model.apply(ev("msg", buffer="#lobby", nick="op", text=f"line {n}"))
    view = screenless_view(model)
    model.current.scroll = 12
    before = view._pane_rows(model.current, 40, 10)
    model.apply(ev("msg", buffer="#lobby", nick="op", text="long " * 15))
    model.apply(ev("msg", buffer="#lobby", nick="op", text="short"))
    assert view._pane_rows(model.current, 40, 10) == before
    model.current.scroll = 0
    assert view._pane_rows(model.current, 40, 10)[-1][-1][0] == "short"


def test_bidi_controls_from_others_never_reach_the_screen():
    """The full-screen interface shows the same cleaned events as line mode:
    no RLO or isolate in a nick, a message, the member list or the topic."""
    model = model_in_lobby()
    for raw in (":srv 353 bob = #lobby :al\u2067ice", ":a!a@h TOPIC #lobby :\u202enew topic",
                ":mal\u202elory!m@h PRIVMSG #lobby :\u202e<ecila>\u2069 hi"):
        for event in events.translate(ircmsg.parse(raw), "bob"):
            model.apply(event)
    shown = [model.current.topic] + list(model.current.members.values())
    shown += [f"{line.nick} {line.text}" for line in model.current.lines]
    assert not any(char in text for text in shown for char in "\u202e\u2067\u2069"), shown
    assert "mallory <ecila> hi" in shown and "alice" in shown


def test_a_late_answer_is_counted_in_the_status_line_after_two_seconds():
    assert tui.awaited_notice(None) == ""
    assert tui.awaited_notice(("LIST", 1.5)) == ""
    assert tui.awaited_notice(("WHO", 12.2)) == "waiting for /who: 12 s"


def apply_raw(model: buffers.ChatModel, *raws: str) -> None:
    for raw in raws:
        for event in events.translate(ircmsg.parse(raw), model.me):
            model.apply(event)


def test_a_list_of_more_rooms_than_a_buffer_keeps_leaves_the_room_history_alone():
    """/list rows go to buffer 1 (irssi's status window): in the room's
    buffer, a server of 2000 rooms pushed every line said there out."""
    model = model_in_lobby()
    apply_raw(model, ":op!o@h PRIVMSG #lobby :remember this")
    rows = buffers.SCROLLBACK_LINES + 5
    apply_raw(model, *(f":srv 322 bob #r{n} 3 :topic {n}" for n in range(rows)),
              ":srv 323 bob :End of /LIST")
    lobby = [line.text for line in model.current.lines]
    assert "remember this" in lobby
    assert lobby[-1].startswith(f"/list: {rows} rooms, listed in buffer 1 (Alt+1); it keeps")
    status = [line.text for line in model.buffers[0].lines]
    assert status[-2:] == [f"#r{rows - 1} (3 users): topic {rows - 1}", "End of /LIST"]
    assert model.buffers[0].unread == 0     # rows are no talk to star


def test_a_short_list_is_in_buffer_1_and_named_where_it_was_typed():
    model = model_in_lobby()
    apply_raw(model, ":srv 322 bob #ops 1 :", ":srv 323 bob :End of /LIST")
    assert [line.text for line in model.current.lines][-1] == \
        "/list: 1 room, listed in buffer 1 (Alt+1)"
    assert [line.text for line in model.buffers[0].lines][-2:] == ["#ops (1 user)", "End of /LIST"]
    model.switch(model.buffers[0])
    apply_raw(model, ":srv 322 bob #ops 1 :", ":srv 323 bob :End of /LIST")
    assert [line.text for line in model.buffers[0].lines][-2:] == ["#ops (1 user)", "End of /LIST"]


def test_an_empty_list_is_answered_where_it_was_typed():
    model = model_in_lobby()
    apply_raw(model, ":srv 323 bob :End of /LIST")
    assert [line.text for line in model.current.lines][-1] == "End of /LIST"


def test_many_unread_buffers_leave_the_connection_state_in_sight():
    """In 30 rooms with talk in each, `Act: 3,4,...` ran off the status
    line's edge and took `reconnecting in 30 s` with it."""
    parts = ["05:03", "alice", "chat.example.org:6667", "2:#ops", "not joined",
             "reconnecting in 30 s"]
    labels = [f"{number}{'*' if number % 7 == 0 else ''}" for number in range(3, 33)]
    line = tui.status_with_activity(parts, labels, 80)
    assert line.startswith(" alice | 2:#ops | not joined | reconnecting in 30 s | Act: 3,4,5,")
    assert lineedit.text_width(line) <= 80
    shown = line.rpartition("Act: ")[2].split(",")
    assert shown[-1] == f"+{len(labels) - len(shown) + 1}"
    assert shown[:-1] == labels[:len(shown) - 1]


def test_activity_that_fits_is_shown_whole_after_the_rest():
    parts = ["05:03", "alice", "chat.example.org:6667", "2:#ops", "2 members"]
    assert tui.status_with_activity(parts, ["3", "4*"], 100) == \
        " 05:03 | alice | chat.example.org:6667 | 2:#ops | 2 members | Act: 3,4*"
    assert tui.status_with_activity(parts, ["3", "4*"], 45) == \
        " alice | 2:#ops | 2 members | Act: 3,4*"
    assert tui.status_with_activity(parts, [], 45) == " 05:03 | alice | 2:#ops | 2 members"
    assert tui.fit_activity(["3", "4", "5"], 9) == "Act: 3,+2"
    assert tui.fit_activity(["3", "4", "5"], 5) == ""


def test_a_private_ctcp_request_opens_no_conversation():
    """A network's bot asking every new client's VERSION left a private
    buffer named after it, with nothing said in it, in every session."""
    model = model_in_lobby()
    apply_raw(model, ":versionbot!v@services PRIVMSG bob :\x01VERSION\x01")
    assert [buffer.name for buffer in model.buffers] == [buffers.STATUS_NAME, "#lobby"]
    assert model.buffers[0].lines[-1].text == "versionbot sent CTCP VERSION"
    apply_raw(model, ":alice!a@h PRIVMSG bob :\x01ACTION waves\x01")
    assert [buffer.name for buffer in model.buffers][2:] == ["alice"]   # an action is talk
    apply_raw(model, ":alice!a@h PRIVMSG #lobby :\x01PING 1\x01")
    assert model.current.lines[-1].text == "alice sent CTCP PING"       # a room's stays there


def test_tab_completes_the_names_of_our_rooms():
    """With many rooms open, `/switch #ro` and Tab offered only nicks."""
    model = model_in_lobby()
    for room in ("#rooms", "#Roof", "&local"):
        model.apply(ev("join", buffer=room, nick="bob", own=True))
    model.open("alice")
    editor = lineedit.LineEditor()
    editor.insert("/switch #ro")
    editor.complete(model.completions)
    assert editor.text == "/switch #Roof "
    editor.complete(model.completions)
    assert editor.text == "/switch #rooms "
    editor = lineedit.LineEditor()
    editor.insert("&")
    editor.complete(model.completions)
    assert editor.text == "&local "       # a room at the start is not addressed with ':'
    assert model.completions("+1", False) == ["op"]      # talk, not a room


def test_what_we_say_to_a_rooms_operators_is_shown_in_the_room():
    """`/msg @#lobby text` opened a conversation named `@#lobby`."""
    model = model_in_lobby()
    model.open("#other")
    model.switch(model.find("#other"))
    model.own_talk("own", "@#lobby", "ops only")
    assert [buffer.name for buffer in model.buffers] == [buffers.STATUS_NAME, "#lobby", "#other"]
    assert model.find("#lobby").lines[-1].text == "(to @#lobby) ops only"
    model.own_talk("own", "@#elsewhere", "hm")      # no buffer: here, marked as before
    assert model.current.lines[-1].text == "(to @#elsewhere) hm"
    assert [buffer.name for buffer in model.buffers][3:] == []


def test_talk_in_a_room_whose_buffer_closed_names_the_room_in_buffer_1():
    """A message still on its way when our PART closed the room's buffer
    landed in buffer 1 as `<op> hi`, said to no room at all."""
    model = model_in_lobby()
    model.apply(ev("part", buffer="#lobby", nick="bob", own=True))
    model.apply(ev("msg", buffer="#lobby", nick="op", text="hi"))
    model.apply(ev("action", buffer="#lobby", nick="op", text="waves"))
    model.apply(ev("notice", buffer="#lobby", nick="op", text="(to @#lobby) ops only"))
    assert model.find("#lobby") is None, "no buffer reopened for a room we left"
    texts = [line.text for line in model.buffers[0].lines][-3:]
    assert texts == ["(to #lobby) hi", "(to #lobby) waves", "(to @#lobby) ops only"]


def test_a_private_notice_is_shown_where_we_are_without_a_conversation():
    """NickServ's notices opened a conversation buffer with NickServ; irssi
    shows them in the active window.  One from someone we do have a
    conversation with still goes there."""
    model = model_in_lobby()
    model.apply(ev("notice", buffer="NickServ", nick="NickServ",
                   text="This nickname is registered", private=True))
    assert model.find("NickServ") is None and model.current.name == "#lobby"
    line = model.current.lines[-1]
    assert (line.kind, line.nick, line.text) == (
        "notice", "NickServ", "[private] This nickname is registered")
    model.apply(ev("msg", buffer="alice", nick="alice", text="psst", private=True))
    model.apply(ev("notice", buffer="alice", nick="alice", text="ping", private=True))
    assert [(l.kind, l.text) for l in model.find("alice").lines] == [
        ("msg", "psst"), ("notice", "ping")]


def test_the_reconnect_countdown_keeps_to_its_span_when_the_clock_is_set_back(monkeypatch):
    """The countdown was taken from the wall clock: set back an hour (NTP
    after a bad battery, `date -s`) while the client waited, the status
    line said "reconnecting in 3601 s" of a try one second away."""
    conn = connection.Connection(selectors.DefaultSelector(), connection.Settings(nick="bob"),
                                 lambda event: None)
    conn.registered_once = True
    conn._lost("Connection reset by peer")
    assert conn.state == "waiting"
    wall = time.time
    monkeypatch.setattr(time, "time", lambda: wall() - 3600)
    view = screenless_view(model_in_lobby())
    view.conn, view.settings = conn, conn.settings
    status = view._status_text(view.model.current, 200)
    assert "reconnecting in 1 s" in status, status
    conn.close_now("test over")


def who_rows(room: str, count: int) -> list[str]:
    return [f":srv 352 bob {room} u{n} h{n}.example srv nick{n} H :0 Real {n}"
            for n in range(count)]


def test_a_big_who_goes_to_buffer_1_and_leaves_the_room_history_alone():
    """A WHO of a room of 1500 members pushed most of the room's history
    out; past BIG_ANSWER_ROWS rows it goes to buffer 1, as /list's does,
    and the room's buffer gets one line saying how many and where."""
    model = model_in_lobby()
    apply_raw(model, ":op!o@h PRIVMSG #lobby :remember this")
    before = [line.text for line in model.current.lines]
    rows = buffers.BIG_ANSWER_ROWS + 10
    apply_raw(model, *who_rows("#lobby", rows), ":srv 315 bob #lobby :End of /WHO list")
    assert [line.text for line in model.current.lines] == before + [
        f"/who #lobby: {rows} rows, listed in buffer 1 (Alt+1)"]
    status = [line for line in model.buffers[0].lines]
    assert [line.kind for line in status] == ["who"] * rows      # the end stays quiet
    assert status[0].text == "#lobby nick0 H u0@h0.example (Real 0)"
    assert status[-1].text == f"#lobby nick{rows - 1} H u{rows - 1}@h{rows - 1}.example (Real {rows - 1})"
    assert model.buffers[0].unread == 0


def test_a_who_of_the_threshold_s_rows_stays_where_it_was_typed():
    model = model_in_lobby()
    rows = buffers.BIG_ANSWER_ROWS
    apply_raw(model, *who_rows("#lobby", rows), ":srv 315 bob #lobby :End of /WHO list")
    assert [line.kind for line in model.current.lines] == ["join"] + ["who"] * rows
    assert list(model.buffers[0].lines) == []


def test_a_small_who_is_shown_where_it_was_typed_in_order():
    model = model_in_lobby()
    apply_raw(model, *who_rows("#lobby", 3), ":srv 315 bob #lobby :End of /WHO list")
    assert [line.text for line in model.current.lines][1:] == [
        f"#lobby nick{n} H u{n}@h{n}.example (Real {n})" for n in range(3)]
    assert list(model.buffers[0].lines) == []
    apply_raw(model, ":srv 315 bob #nobody :End of /WHO list")     # no rows: the end shows
    assert model.current.lines[-1].text == "#nobody: End of /WHO list"


def test_a_big_who_typed_in_buffer_1_has_no_note_and_a_small_one_keeps_its_buffer():
    model = model_in_lobby()
    model.switch(model.buffers[0])
    rows = buffers.BIG_ANSWER_ROWS + 1
    apply_raw(model, *who_rows("#lobby", rows), ":srv 315 bob #lobby :End of /WHO list")
    assert [line.kind for line in model.buffers[0].lines] == ["who"] * rows
    model.switch(model.find("#lobby"))
    apply_raw(model, *who_rows("#lobby", 2))
    model.switch(model.buffers[0])        # switched away before the end came
    apply_raw(model, ":srv 315 bob #lobby :End of /WHO list")
    assert [line.kind for line in model.find("#lobby").lines][-2:] == ["who", "who"]


def test_a_big_names_goes_to_buffer_1_with_its_member_count():
    model = model_in_lobby()
    apply_raw(model, ":op!o@h PRIVMSG #lobby :remember this")
    before = [line.text for line in model.current.lines]
    rows = buffers.BIG_ANSWER_ROWS + 1
    apply_raw(model, *(f":srv 353 bob = #lobby :a{n} b{n} c{n}" for n in range(rows)),
              ":srv 366 bob #lobby :End of /NAMES list")
    assert [line.text for line in model.current.lines] == before + [
        f"/names #lobby: {3 * rows} members in {rows} rows, listed in buffer 1 (Alt+1)"]
    assert [line.kind for line in model.buffers[0].lines] == ["names"] * rows
    assert len(model.current.members) == 3 * rows


def test_a_who_cut_off_by_a_disconnection_shows_its_rows():
    model = model_in_lobby()
    apply_raw(model, *who_rows("#lobby", 2))
    model.apply(ev("status", text="disconnected", other=connection.STATUS_DISCONNECTED))
    kinds = [line.kind for line in model.current.lines]
    assert kinds[-3:] == ["who", "who", "status"]
    apply_raw(model, *who_rows("#lobby", 1), ":srv 315 bob #lobby :End of /WHO list")
    assert [line.kind for line in model.current.lines][-1] == "who"


def test_a_big_answer_cut_off_by_a_disconnection_is_counted_where_it_was_typed():
    model = model_in_lobby()
    rows = buffers.BIG_ANSWER_ROWS + 2
    apply_raw(model, *(f":srv 353 bob = #Lobby :a{n}" for n in range(rows)))
    model.apply(ev("status", text="disconnected", other=connection.STATUS_DISCONNECTED))
    assert [line.text for line in model.current.lines][-2:] == [
        f"/names #Lobby: {rows} members in {rows} rows, listed in buffer 1 (Alt+1)",
        "disconnected"]
    assert [line.kind for line in model.buffers[0].lines][:rows] == ["names"] * rows


def test_a_names_of_every_room_is_one_answer_shown_where_it_was_typed():
    """`/raw NAMES`: the server lists every room, then one 366 for `*`.
    Each room's rows were held for its own 366, which never came: none
    was shown."""
    model = model_in_lobby()
    model.sent("NAMES")
    apply_raw(model, ":srv 353 bob = #a :x y", ":srv 353 bob = #lobby :@op bob",
              ":srv 366 bob * :End of /NAMES list")
    assert [line.text for line in model.current.lines][-2:] == [
        "Members of #a: x y", "Members of #lobby: @op bob"]
    assert model._answers == {}
    apply_raw(model, ":srv 353 bob = #lobby :@op bob carol", ":srv 366 bob #lobby :End")
    assert set(model.current.members) == {"op", "bob", "carol"}


def test_a_names_of_many_small_rooms_goes_to_buffer_1_as_one_big_answer():
    """Judged room by room, the NAMES of 300 rooms of a few members each
    put 300 rows where it was typed, pushing that room's history out."""
    model = model_in_lobby()
    rooms = buffers.BIG_ANSWER_ROWS + 5
    before = [line.text for line in model.current.lines]
    for query, ends in (("", ["*"]), (",".join(f"#r{n}" for n in range(rooms)),
                                      [f"#r{n}" for n in range(rooms)])):
        model.sent(f"NAMES {query}".rstrip())
        for n in range(rooms):
            apply_raw(model, f":srv 353 bob = #r{n} :a{n} b{n}")
            if ends != ["*"]:
                apply_raw(model, f":srv 366 bob #r{n} :End of /NAMES list")
        if ends == ["*"]:
            apply_raw(model, ":srv 366 bob * :End of /NAMES list")
    assert [line.text for line in model.current.lines] == before + [
        f"/names: {2 * rooms} members in {rooms} rows, listed in buffer 1 (Alt+1)",
        f"/names {query}: {2 * rooms} members in {rooms} rows, listed in buffer 1 (Alt+1)"]
    assert [line.kind for line in model.buffers[0].lines] == ["names"] * 2 * rooms
    assert model._answers == {}


def test_a_names_of_a_few_rooms_says_which_had_none_in_order():
    model = model_in_lobby()
    model.sent("NAMES #a,#secret,#b")
    apply_raw(model, ":srv 353 bob = #a :x", ":srv 366 bob #a :End of /NAMES list",
              ":srv 366 bob #secret :End of /NAMES list",
              ":srv 353 bob = #b :y", ":srv 366 bob #b :End of /NAMES list")
    assert [line.text for line in model.current.lines][-3:] == [
        "Members of #a: x", "#secret: End of /NAMES list", "Members of #b: y"]
    assert model._answers == {}


class ReadyConnection(LeavingConnection):
    """A connection that sends, and keeps the callbacks of its barriers."""

    quitting = False

    def __init__(self) -> None:
        super().__init__()
        self.barriers: list = []

    def flush(self, callback) -> None:
        self.barriers.append(callback)


def test_a_names_the_server_answers_only_in_part_is_shown_by_the_barrier_behind_it():
    """solanum and ratbox (Libera, OFTC) list only the first room of
    `NAMES #a,#b`: the rows of #a were held for the end of #b, which never
    came, and nothing was shown.  The PING sent behind the NAMES comes back
    once the server has said all it will, and that ends the answer."""
    view = tui.Tui.__new__(tui.Tui)
    view.model, view.editor = model_in_lobby(), lineedit.LineEditor()
    view.conn = ReadyConnection()
    view.editor.insert("/names #a,#b")
    view._submit()
    assert view.conn.sent == ["NAMES #a,#b"] and len(view.conn.barriers) == 1
    apply_raw(view.model, ":srv 353 bob = #a :x y", ":srv 366 bob #a :End of /NAMES list")
    view.conn.barriers[0]()
    assert view.model.current.lines[-1].text == "Members of #a: x y"
    assert view.model._answers == {}
    view.editor.insert("/names #a")
    view._submit()
    apply_raw(view.model, ":srv 353 bob = #a :x y z", ":srv 366 bob #a :End of /NAMES list")
    assert view.model.current.lines[-1].text == "Members of #a: x y z"


def names_of_every_room(*raws: str, barrier: bool = True) -> tui.Tui:
    """`/raw NAMES` typed in #lobby, then the server's answer (and the PONG
    of the PING sent behind it, unless not `barrier`)."""
    view = tui.Tui.__new__(tui.Tui)
    view.model, view.editor = model_in_lobby(), lineedit.LineEditor()
    view.conn = ReadyConnection()
    view.editor.insert("/raw NAMES")
    view._submit()
    assert view.conn.sent == ["NAMES"]
    apply_raw(view.model, *raws)
    if barrier:
        view.conn.barriers[0]()
    return view


ROOM_BY_ROOM = (":srv 353 bob = #a :x y", ":srv 366 bob #a :End of /NAMES list",
                ":srv 353 bob = #lobby :@op bob", ":srv 366 bob #lobby :End of /NAMES list")


@pytest.mark.parametrize("ends", [(), (":srv 366 bob * :End of /NAMES list",)])
def test_a_names_of_every_room_ended_room_by_room_is_one_tidy_answer(ends):
    """A server that ends each room of a NAMES of every room with its own
    366 (miniircd; none for `*`, or one after them): each room's end was
    shown, `#a: End of /NAMES list` between the rows, stray."""
    view = names_of_every_room(*ROOM_BY_ROOM, *ends, barrier=not ends)
    before = len(model_in_lobby().current.lines)
    assert [line.text for line in view.model.current.lines][before:] == [
        "Members of #a: x y", "Members of #lobby: @op bob"]
    assert view.model._answers == {}
    apply_raw(view.model, ":srv 353 bob = #lobby :@op bob carol", ":srv 366 bob #lobby :End")
    assert set(view.model.current.members) == {"op", "bob", "carol"}


def test_a_names_of_every_room_with_none_listed_shows_its_end():
    """solanum answers a NAMES of every room with its 366 for `*` alone:
    that end is the answer, shown once."""
    view = names_of_every_room(":srv 366 bob * :End of /NAMES list", barrier=False)
    assert view.model.current.lines[-1].text == "*: End of /NAMES list"
    assert view.model._answers == {}
    view.conn.barriers[0]()
    assert view.model.current.lines[-1].text == "*: End of /NAMES list"


def test_a_names_answered_with_nothing_at_all_says_so():
    """miniircd answers a NAMES of every room with a list and a 366 for
    each room the user is in, and nothing when there is none: the answer
    was silence, as if the command had been lost."""
    view = names_of_every_room()
    assert view.model.current.lines[-1].text == "/names: no one listed"
    assert view.model._answers == {}


def test_a_names_stream_that_never_ends_is_held_within_a_bound():
    """353s for room after room and never a 366: each room's rows were held
    for its end, without a bound (and never shown).  Past NAMES_HELD_MAX
    lists under way the oldest is shown; none is lost."""
    model = model_in_lobby()
    apply_raw(model, *(f":srv 353 bob = #r{n} :a b" for n in range(1000)))
    assert len(model._answers) <= buffers.NAMES_HELD_MAX
    shown = [line.text for line in model.current.lines if line.kind == "names"]
    assert shown == [f"Members of #r{n}: a b" for n in range(1000 - len(model._answers))]
    apply_raw(model, ":srv 366 bob #r999 :End of /NAMES list")
    assert model.current.lines[-1].text == "Members of #r999: a b"


def test_a_rooms_member_list_is_kept_within_a_bound(monkeypatch):
    """A NAMES of our room that never ends, each 353 naming new nicks,
    grew the member list, and memory, for as long as it went on."""
    monkeypatch.setattr(buffers, "MEMBERS_MAX", 500)
    model = model_in_lobby()
    apply_raw(model, *(f":srv 353 bob = #lobby :" + " ".join(f"n{n}_{k}" for k in range(20))
                       for n in range(100)))
    apply_raw(model, *(f":j{n}!u@h JOIN #lobby" for n in range(100)))
    assert len(model.find("#lobby").members) == 500


def test_the_activity_of_many_buffers_is_measured_once_not_once_per_count(monkeypatch):
    """With a thousand unread buffers (private messages from as many
    nicks) each redraw joined and measured the list again for every count
    it tried: a second a redraw, and the interface crawled.  The text
    measured stays within a few times the list's own length."""
    labels = [f"{n}*" for n in range(2, 1002)]
    measured = []
    real = lineedit.text_width
    monkeypatch.setattr(lineedit, "text_width", lambda text: measured.append(len(text))
                        or real(text))
    line = tui.status_with_activity(["12:00", "bob", "chat:6667", "1:(status)"], labels, 100)
    assert line.endswith(",+" + str(1000 - len(line.rpartition("Act: ")[2].split(",")) + 1))
    assert sum(measured) <= 5 * len(",".join(labels)), sum(measured)


def test_messages_from_ever_new_nicks_open_a_bounded_number_of_buffers(monkeypatch):
    """Private messages from nick after nick (a spam wave, an odd server)
    opened a buffer each, without end.  Past PRIVATE_BUFFERS_MAX open
    conversations, a message from someone new is shown in buffer 1,
    marked [private]; those with a buffer still go to it, and /query
    still opens one."""
    monkeypatch.setattr(buffers, "PRIVATE_BUFFERS_MAX", 5)
    model = model_in_lobby()
    apply_raw(model, *(f":n{n}!u@h PRIVMSG bob :hello {n}" for n in range(8)))
    assert [b.name for b in model.buffers] == ["(status)", "#lobby", "n0", "n1", "n2", "n3", "n4"]
    assert [line.text for line in model.buffers[0].lines][-3:] == [
        "[private] hello 5", "[private] hello 6", "[private] hello 7"]
    assert model.buffers[0].unread == 3 and model.buffers[0].highlight
    apply_raw(model, ":n2!u@h PRIVMSG bob :again")
    assert model.find("n2").lines[-1].text == "again"
    model.own_talk("own", "n7", "hi")
    assert model.find("n7") is not None


def test_leaving_a_private_conversation_makes_room_for_another(monkeypatch):
    """The bound is on conversations open at a time, not in a session: a
    long day's 100th stranger is not sent to buffer 1 for good."""
    monkeypatch.setattr(buffers, "PRIVATE_BUFFERS_MAX", 2)
    model = model_in_lobby()
    apply_raw(model, ":n0!u@h PRIVMSG bob :hi", ":n1!u@h PRIVMSG bob :hi")
    model.close(model.find("n0"))
    apply_raw(model, ":n2!u@h PRIVMSG bob :hello")
    assert model.find("n2").lines[-1].text == "hello"


def test_a_reason_cut_to_fit_is_sent_cut_and_the_cut_shown():
    """`/kick alice <600 bytes>` went out whole; the server discarded it
    (417) and alice stayed.  The reason is cut to fit, and one line says so."""
    view = tui.Tui.__new__(tui.Tui)
    view.model, view.editor = model_in_lobby(), lineedit.LineEditor()
    view.conn = ReadyConnection()
    view.editor.insert("/kick alice " + "\u20ac" * 300)
    view._submit()
    (line,) = view.conn.sent
    reason = ircmsg.parse(line).params[-1]
    assert line.startswith("KICK #lobby alice ") and 100 < len(reason) < 300
    shown = view.model.current.lines[-1]
    assert (shown.kind, shown.text) == (
        "error", f"kick reason cut to its first {len(reason)} of 300 characters to fit an IRC line")
