"""The input line's editing rules, on plain strings."""

import hypothesis
import pytest
from hypothesis import strategies as st

from forkchat.client import lineedit


def typed(text: str) -> lineedit.LineEditor:
    editor = lineedit.LineEditor()
    editor.insert(text)
    return editor


def test_insert_in_the_middle():
    editor = typed("helo")
    editor.left()
    editor.insert("l")
    assert (editor.text, editor.cursor) == ("hello", 4)


@pytest.mark.parametrize("keys, text, cursor", [
    (["backspace"], "hello worl", 10),
    (["home", "delete"], "ello world", 0),
    (["home", "backspace"], "hello world", 0),
    (["delete_word"], "hello ", 6),
    (["word_left", "kill_to_end"], "hello ", 6),
    (["word_left", "kill_to_start"], "world", 0),
    (["word_left", "word_left", "word_right"], "hello world", 5),
    (["end", "right"], "hello world", 11),
])
def test_editing_keys(keys, text, cursor):
    editor = typed("hello world")
    for key in keys:
        getattr(editor, key)()
    assert (editor.text, editor.cursor) == (text, cursor)


def test_cursor_steps_over_combining_marks():
    editor = typed("ae\u0301b")          # a, e + combining acute, b
    editor.left()
    editor.left()
    assert editor.cursor == 1
    editor.delete()
    assert editor.text == "ab"


def test_backspace_removes_a_whole_cluster():
    editor = typed("xe\u0301")
    editor.backspace()
    assert editor.text == "x"


@pytest.mark.parametrize("emoji", [
    "\U0001f44d\U0001f3fd",                  # thumbs up, medium skin tone
    "\U0001f469\u200d\U0001f4bb",            # woman, ZWJ, laptop
    "\U0001f469\U0001f3fe\u200d\U0001f4bb",  # the same with a skin tone
])
def test_the_cursor_steps_over_an_emoji_sequence_at_once(emoji):
    """A skin-tone modifier took a cursor step of its own, and Backspace
    left it behind as a bare coloured square."""
    editor = typed(f"a{emoji}b")
    editor.left()
    editor.left()
    assert editor.cursor == 1
    editor.right()
    assert editor.cursor == 1 + len(emoji)
    editor.left()
    editor.delete()
    assert editor.text == "ab"
    editor = typed(f"a{emoji}")
    editor.backspace()
    assert (editor.text, editor.cursor) == ("a", 1)


FR, DE, IT = "\U0001f1eb\U0001f1f7", "\U0001f1e9\U0001f1ea", "\U0001f1ee\U0001f1f9"


def test_the_cursor_steps_over_a_flag_at_once_and_backspace_erases_it_whole():
    """A flag is two regional-indicator letters: the cursor stepped into
    the middle of one, and Backspace left its first letter, drawn as a
    boxed letter, which read as a flag with the next one (🇫🇷🇩🇪 less an
    R read F D, E)."""
    editor = typed(f"a{FR}{DE}b")
    editor.left()
    editor.left()
    assert editor.cursor == 3
    editor.left()
    assert editor.cursor == 1
    editor.right()
    assert editor.cursor == 3
    editor.right()
    assert editor.cursor == 5
    editor.backspace()
    assert (editor.text, editor.cursor) == (f"a{FR}b", 3)
    editor.backspace()
    assert (editor.text, editor.cursor) == ("ab", 1)


def test_regional_indicators_pair_from_the_start_of_their_run():
    """In a run the first and second letters are a flag, the third and
    fourth the next; an odd last one stands alone."""
    lone = "\U0001f1fa"
    text = f"x{FR}{DE}{lone}y"
    assert [i for i in range(1, len(text)) if lineedit.continues(text, i)] == [2, 4]
    editor = typed(text)
    editor.left()
    editor.backspace()
    assert editor.text == f"x{FR}{DE}y"
    assert lineedit.text_width(FR) == 2     # one cell a letter: tmux 3.3a puts a flag in two


def test_history_keeps_the_draft():
    editor = lineedit.LineEditor()
    for line in ("one", "two"):
        editor.insert(line)
        editor.submit()
    editor.insert("draft")
    editor.history_prev()
    assert editor.text == "two"
    editor.history_prev()
    editor.history_prev()
    assert editor.text == "one"
    editor.history_next()
    editor.history_next()
    assert (editor.text, editor.cursor) == ("draft", 5)


@pytest.mark.parametrize("line", ["/oper admin hunter2", "/OPER admin hunter2",
                                  "  /oper admin hunter2"])
def test_a_line_with_a_password_is_not_kept_in_history(line):
    editor = lineedit.LineEditor()
    for text in ("/join #a", line):
        editor.insert(text)
        assert editor.submit() == text        # sent all the same
    assert editor.history == ["/join #a"]
    editor.history_prev()
    assert editor.text == "/join #a"


def test_submit_skips_blank_and_repeated_lines():
    editor = lineedit.LineEditor()
    for line in ("a", "a", "  ", "b"):
        editor.insert(line)
        assert editor.submit() == line
    assert editor.history == ["a", "b"]


def candidates(word, at_start):
    return ["/join", "/juggle"] if word.startswith("/") else ["alice", "Albert", "bob"]


def test_tab_completes_a_nick_at_line_start_with_colon():
    editor = typed("bo")
    editor.complete(candidates)
    assert editor.text == "bob: "


def test_tab_cycles_through_matches_case_insensitively():
    editor = typed("hi al")
    editor.complete(candidates)
    assert editor.text == "hi Albert "
    editor.complete(candidates)
    assert editor.text == "hi alice "
    editor.complete(candidates)
    assert editor.text == "hi Albert "


def test_tab_completes_commands():
    editor = typed("/jo")
    editor.complete(candidates)
    assert editor.text == "/join "


def test_tab_without_match_changes_nothing():
    editor = typed("zz")
    editor.complete(candidates)
    assert editor.text == "zz"


@pytest.mark.parametrize("text, width", [
    ("abc", 3), ("日本", 4), ("e\u0301", 1), ("", 0), ("a\u200bb", 2),
])
def test_text_width(text, width):
    assert lineedit.text_width(text) == width


def test_fit_never_splits_a_wide_char():
    assert lineedit.fit("日本語", 5) == "日本"


def test_fit_never_ends_inside_a_cluster():
    """An emoji with its skin tone at the right edge of the input line
    showed as the bare emoji, as if typed without its tone."""
    thumb = "\U0001f44d\U0001f3fd"
    assert lineedit.fit("xxxxxxx" + thumb + "y", 10) == "xxxxxxx"
    assert lineedit.fit("xxxxxx" + thumb + "y", 10) == "xxxxxx" + thumb
    assert lineedit.fit("xxxxxxx\U0001f469\u200d\U0001f4bb", 10) == "xxxxxxx"
    assert lineedit.fit("xxxxxxxxxe\u0301", 10) == "xxxxxxxxxe\u0301"


def test_fit_never_ends_inside_a_flag():
    """A run of flags cut at the right edge ended on half a flag, its
    first letter shown as a boxed letter."""
    assert lineedit.fit(f"xxxxxxx{FR}{DE}{IT}", 10) == f"xxxxxxx{FR}"
    assert lineedit.fit(f"xxxxxx{FR}{DE}{IT}", 10) == f"xxxxxx{FR}{DE}"
    assert lineedit.fit(f"xxxxx{FR}{DE}{IT}", 10) == f"xxxxx{FR}{DE}"


def test_the_scrolled_view_starts_on_a_whole_flag():
    editor = typed(f"{FR}{DE}{IT}")
    shown, cursor = editor.view(6)
    assert (shown, cursor) == (f"{DE}{IT}", 4)


def test_view_scrolls_to_keep_the_cursor_visible():
    editor = typed("0123456789")
    shown, cursor = editor.view(5)
    assert cursor <= 4
    assert shown.startswith("6789")
    editor.home()
    assert editor.view(5) == ("01234", 0)


def test_view_counts_wide_chars_as_two_cells():
    editor = typed("日本語")
    shown, cursor = editor.view(20)
    assert (shown, cursor) == ("日本語", 6)


def test_view_of_a_long_line_measures_about_the_width_not_the_line(monkeypatch):
    """view() measured text[start:cursor] for start = 0, 1, 2 ...: quadratic,
    3.5 s per key at the end of a pasted 5000-character line."""
    editor = typed("z" * 5000)
    calls = 0
    measure = lineedit.char_width

    def counted(char: str) -> int:
        nonlocal calls
        calls += 1
        return measure(char)
    monkeypatch.setattr(lineedit, "char_width", counted)
    shown, cursor = editor.view(90)
    assert (shown, cursor) == ("z" * 89, 89)
    assert calls < 20 * 90


def reference_view(text: str, cursor: int, width: int) -> tuple[str, int]:
    """The old quadratic view(): the smallest start off a combining mark
    from which the text up to the cursor fits in width - 1 cells."""
    start = 0
    while lineedit.text_width(text[start:cursor]) > width - 1:
        start += 1
        while start < len(text) and lineedit.char_width(text[start]) == 0:
            start += 1
    return lineedit.fit(text[start:], width), lineedit.text_width(text[start:cursor])


@hypothesis.given(st.lists(st.sampled_from(["a", " ", "日", "e\u0301", "😀", "\u0301"]),
                           max_size=40),
                  st.integers(min_value=2, max_value=12), st.integers(min_value=0, max_value=40))
def test_view_shows_what_it_always_showed(pieces, width, steps_left):
    editor = typed("".join(pieces))
    for _ in range(steps_left):
        editor.left()
    assert editor.view(width) == reference_view(editor.text, editor.cursor, width)


@pytest.mark.parametrize("text, width", [
    ("ab\u00ad" * 30, 90),                  # soft hyphens take a cell each
    ("\u0600\u0661", 2),                    # an Arabic number sign before a digit
    ("\u1112\u1161\u11ab", 2),              # 한 spelled in jamo: one syllable
    ("\u200b\u2060\ufeff", 0),              # the zero-width format characters stay none
])
def test_widths_are_those_curses_draws_by(text, width):
    """curses places text by the C library's wcwidth(); counted otherwise, a
    line of soft hyphens ran past the pane's edge and the row under it was
    drawn over the rest, which was lost from sight."""
    assert lineedit.text_width(text) == width


def test_widths_agree_with_the_c_library():
    ctypes = pytest.importorskip("ctypes")
    import locale
    saved = locale.setlocale(locale.LC_CTYPE)
    try:
        locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
    except locale.Error:
        pytest.skip("no C.UTF-8 locale")
    try:
        wcwidth = ctypes.CDLL(None).wcwidth
        chars = sorted(lineedit.VISIBLE_FORMAT) + ["\u1160", "\u11a8", "\ud7b0", "a", "\u200b"]
        assert [lineedit.char_width(c) for c in chars] == \
            [wcwidth(ctypes.c_wchar(c)) for c in chars]
    finally:
        locale.setlocale(locale.LC_CTYPE, saved)


def clusters_by_continues(text: str) -> list[str]:
    """The clusters as the cursor finds them, `continues` asked at each index."""
    found, start = [], 0
    for index in range(1, len(text) + 1):
        if index == len(text) or not lineedit.continues(text, index):
            found.append(text[start:index])
            start = index
    return found


@hypothesis.given(st.lists(st.sampled_from(
    ["a", " ", "é", "e\u0301", "\u0301", "日", "\U0001f44d", "\U0001f3fd", "\u200d",
     "\U0001f4bb", "\U0001f1eb", "\U0001f1f7", "\u1112", "\u1161", "\u00ad"]), max_size=30))
def test_clusters_are_those_the_cursor_steps_over(pieces):
    text = "".join(pieces)
    assert lineedit.clusters(text) == clusters_by_continues(text)


def test_clusters_count_a_run_of_flags_once_not_from_each_letter(monkeypatch):
    """Asked of `continues` letter by letter, a run of flags was measured
    back from each letter to the run's start: wrapping a line of 8000
    flags took seconds at every redraw."""
    calls = 0
    measure = lineedit._indicators_before

    def counted(text: str, index: int) -> int:
        nonlocal calls
        calls += 1
        return measure(text, index)
    monkeypatch.setattr(lineedit, "_indicators_before", counted)
    flags = "\U0001f1eb\U0001f1f7" * 2000
    assert lineedit.clusters(flags) == ["\U0001f1eb\U0001f1f7"] * 2000
    assert calls == 0
