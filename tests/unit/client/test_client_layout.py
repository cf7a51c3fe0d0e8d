"""The message pane's layout: wrapping as it always was, each line wrapped
once per width and the memo of it never stale."""

import curses
import time

import hypothesis
import pytest
from hypothesis import strategies as st

from forkchat.client import buffers, layout, lineedit, tui


def reference_wrap(segments, width, indent=layout.INDENT):
    """The wrap of before the memo, a character at a time, as every line
    was wrapped at every redraw."""
    indent = indent if indent < width // 2 else 0
    rows = [[]]
    col = 0
    for text, attr in segments:
        chunk = ""
        for char in layout._clusters(text, width - indent):
            cells = lineedit.text_width(char)
            if cells and col + cells > width:
                space = chunk.rfind(" ")
                carry = chunk[space + 1:] if space > 0 else ""
                if indent + lineedit.text_width(carry) + cells > width:
                    carry = ""
                if chunk[:len(chunk) - len(carry)]:
                    rows[-1].append((chunk[:len(chunk) - len(carry)], attr))
                rows.append([(" " * indent, 0)] if indent else [])
                chunk, col = carry, indent + lineedit.text_width(carry)
            chunk += char
            col += cells
        if chunk:
            rows[-1].append((chunk, attr))
    return rows


PIECES = ["a", "b", " ", "  ", "xyz", "abcdefghijk", "é", "e\u0301", "\u0301", "日",
          "\U0001f44d", "\U0001f3fd", "\u200d", "\U0001f4bb", "\U0001f1eb", "\U0001f1f7",
          "\u00ad", "\u200b"]


@hypothesis.settings(max_examples=400)
@hypothesis.given(st.lists(st.tuples(st.lists(st.sampled_from(PIECES), max_size=40),
                                     st.integers(min_value=0, max_value=3)),
                           min_size=1, max_size=4),
                  st.integers(min_value=1, max_value=30), st.sampled_from([0, 2, 6, 10]))
def test_wrap_cuts_rows_where_it_always_did(segments, width, indent):
    """Found a row at a time (ASCII) or a cluster at a time, the rows are
    those of the character-by-character wrap, wide characters, clusters,
    word breaks and styles included."""
    segments = [("".join(pieces), attr) for pieces, attr in segments]
    assert layout.wrap(segments, width, indent) == reference_wrap(segments, width, indent)


@pytest.mark.parametrize("text, by_cluster", [
    ("café déjà vu, привет, καλημέρα \u00ad " * 300, False),
    ("café " * 300 + "e\u0301", True),             # a combining mark joins the e
    ("café " * 300 + "\U0001f1eb\U0001f1f7", True),   # a flag's two letters of a cell each
], ids=["one cell each", "a mark", "a flag"])
def test_text_of_a_cell_a_character_is_cut_a_row_at_a_time(monkeypatch, text, by_cluster):
    """A 32 KB line of accented Latin took 20-45 ms to wrap, cluster by
    cluster; text whose characters each take one cell and join none is
    cut as ASCII is, with the same rows."""
    segments = [("12:00 ", 1), (text, 0)]
    expected = reference_wrap(segments, 80)
    clustered = []
    cut = lineedit.clusters
    monkeypatch.setattr(lineedit, "clusters", lambda text: clustered.append(text) or cut(text))
    assert layout.wrap(segments, 80) == expected
    assert bool(clustered) == by_cluster


def test_rows_builds_only_the_rows_asked_for():
    segments = [("12:00 ", 1), ("<al> ", 2), ("word " * 40, 0)]
    starts = layout.row_starts([text for text, _ in segments], 30)
    whole = layout.wrap(segments, 30)
    assert len(starts) == len(whole)
    assert layout.rows(segments, starts, 2, 4, 30) == whole[2:4]
    assert layout.rows(segments, starts, 0, 1, 30) == whole[:1]


# ---- the pane and the memo of each line's rows ------------------------------------


class Connection:
    nick = "bob"


def long_view(*texts: str) -> tui.Tui:
    """A Tui without a screen, in #lobby, with a message of each text."""
    view = tui.Tui.__new__(tui.Tui)
    view.model, view.conn = buffers.ChatModel(), Connection()
    view.model.me = "bob"
    view._colours = {"dim": 0, "error": 0}
    view.nick_attr = lambda nick: 7
    buffer = view.model.open("#lobby")
    view.model.switch(buffer)
    for text in texts:
        buffer.lines.append(buffers.Line(time.time(), "msg", "op", text))
    return view


def reference_pane(view: tui.Tui, width: int, height: int) -> list:
    """Every line wrapped afresh, then the rows the scroll offset shows."""
    rows = []
    for line in view.model.current.lines:
        segments = tui.line_segments(line, view.nick_attr, 0, 0, view.model.me)
        rows += reference_wrap(segments, width)
    scroll = min(view.model.current.scroll, max(0, len(rows) - height))
    end = len(rows) - scroll
    return rows[max(0, end - height):end]


def counted_wraps(monkeypatch) -> list[int]:
    """The widths layout.row_starts is asked to wrap at, in order."""
    widths: list[int] = []
    measure = layout.row_starts

    def counted(texts, width, indent=layout.INDENT):
        widths.append(width)
        return measure(texts, width, indent)
    monkeypatch.setattr(layout, "row_starts", counted)
    return widths


def test_a_line_is_wrapped_once_per_width_and_only_when_in_view(monkeypatch):
    """Each line on screen (or under a scrolled-back view) was wrapped
    again at every redraw: with 64 KB lines from a server, a redraw took
    ~100 ms and typing lagged.  Lines above the view are not wrapped."""
    view = long_view(*(f"{n} " + "word " * 3000 for n in range(50)))
    widths = counted_wraps(monkeypatch)
    first = view._pane_rows(view.model.current, 80, 20)
    assert widths == [80]               # the last line fills the view
    assert view._pane_rows(view.model.current, 80, 20) == first == reference_pane(view, 80, 20)
    assert widths == [80]
    view._pane_rows(view.model.current, 60, 20)     # a resize
    assert widths == [80, 60]
    rows_of_one = len(reference_wrap([("12:00 <op> 0 " + "word " * 3000, 0)], 60))
    view.model.current.scroll = 2 * rows_of_one     # PageUp, many times: 3 lines in view
    assert view._pane_rows(view.model.current, 60, 20) == reference_pane(view, 60, 20)
    assert widths == [80, 60, 60, 60]


def test_the_memo_is_no_part_of_a_lines_value():
    view = long_view("hello")
    line = view.model.current.lines[0]
    twin = buffers.Line(line.time, line.kind, line.nick, line.text)
    view._pane_rows(view.model.current, 40, 5)
    assert line.wrapped is not None and line == twin and repr(line) == repr(twin)


@pytest.mark.parametrize("change", ["resize", "new line", "text", "nick", "time", "scroll"])
def test_the_pane_after_a_change_is_the_pane_drawn_afresh(change):
    """Whatever changes between two redraws, the rows are those of every
    line wrapped afresh: a memo kept past a change would show stale rows."""
    view = long_view(*(f"line {n} " + "x" * (n * 7) for n in range(30)))
    width = 40
    view._pane_rows(view.model.current, width, 12)
    last = view.model.current.lines[-1]
    if change == "resize":
        width = 27
    elif change == "new line":
        view.model.add(view.model.current, buffers.Line(time.time(), "msg", "al", "new " * 9))
    elif change == "text":
        last.text = "now other words " * 5
    elif change == "nick":
        last.nick = "somebody_with_a_long_nick"
    elif change == "time":
        last.time -= 3600 * 5
    else:
        view.model.current.scroll = 7
    assert view._pane_rows(view.model.current, width, 12) == reference_pane(view, width, 12)


def test_a_mention_and_a_nick_colour_are_those_of_the_redraw():
    """Only where rows break is kept: bold (the line names me) and the
    nick's colour are worked out at each redraw from who I am now."""
    view = long_view("hi carol, " + "see " * 20)
    text_attr = lambda: {a for row in view._pane_rows(view.model.current, 40, 5)
                         for t, a in row if "see" in t}
    assert text_attr() == {0}
    view.model.me = "carol"             # our nick changed
    assert text_attr() == {curses.A_BOLD}
    view.model.me = "bob"
    assert text_attr() == {0}
    view.nick_attr = lambda nick: 3
    assert {a for row in view._pane_rows(view.model.current, 40, 5) for t, a in row
            if t == "<op> "} == {3}


def test_reading_back_stays_still_when_long_lines_come_in():
    """Scrolled back, lines that come in move `scroll` by their rows,
    counted from the memo: the text being read stays where it is."""
    view = long_view(*(f"line {n}" for n in range(40)))
    buffer = view.model.current
    buffer.scroll = 12
    before = view._pane_rows(buffer, 40, 10)
    for text in ("long " * 300, "short", "日本語" * 100):
        view.model.add(buffer, buffers.Line(time.time(), "msg", "op", text))
    assert view._pane_rows(buffer, 40, 10) == before
