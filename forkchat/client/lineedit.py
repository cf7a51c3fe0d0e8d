"""A pure line editor: text, cursor, history, Tab completion, display width.

No curses here: the curses view maps keys to these methods and asks `view()`
what to draw, so every editing rule is unit-tested on plain strings.  The
cursor moves by character cluster (a base character and the combining marks
after it, an emoji with its skin tone, emoji joined by ZWJ, the two letters
of a flag), and `view()` measures in terminal columns, where East Asian wide
characters take two cells and combining marks none.
"""

from __future__ import annotations

import functools
import unicodedata
from typing import Callable, Iterable

HISTORY_MAX = 500
JOINERS = "\u200c\u200d"     # ZERO WIDTH NON-JOINER, ZERO WIDTH JOINER
# Lines that carry a password stay out of the history, where Up would show
# them to anyone at the terminal.
SECRET_COMMANDS = ("/oper ",)
# Completions that are no nick, so not `name: ` at the start of a line:
# commands and room names.
NOT_ADDRESSED = "/#&"


# Format characters that take a cell all the same, as the C library's
# wcwidth() (which curses draws by) and terminals count them: SOFT HYPHEN,
# common in text copied from web pages, and the number signs written before
# digits in Arabic, Syriac and Kaithi (Unicode's Prepended_Concatenation_Mark).
# Counted as none, a row of soft hyphens ran past the edge, and the next row
# was drawn over the rest of the line, which was never seen.
VISIBLE_FORMAT = frozenset("\u00ad\u0600\u0601\u0602\u0603\u0604\u0605\u06dd\u070f"
                           "\u0890\u0891\u08e2\U000110bd\U000110cd")
# Hangul jamo vowels and final consonants after a leading consonant join it
# in one syllable's cells (wcwidth 0): a decomposed 한 is ᄒ + ᅡ + ᆫ.
JAMO_JOINING = (("\u1160", "\u11ff"), ("\ud7b0", "\ud7ff"))
# The emoji skin-tone modifiers (Fitzpatrick types 1-2 to 6): wide
# characters of their own (wcwidth 2, so they keep their cells), but one
# cluster with the emoji before them, which the cursor steps over at once.
SKIN_TONES = ("\U0001f3fb", "\U0001f3ff")
ZWJ = "\u200d"
# The regional-indicator letters: a flag is two of them (🇫🇷 is F and R),
# read in pairs from the start of their run.  Each takes one cell (wcwidth
# 1), so a flag takes two, as tmux shows it.
INDICATOR_LETTERS = "".join(map(chr, range(0x1f1e6, 0x1f200)))     # U+1F1E6..U+1F1FF


# Code points whose widths are remembered, at most: wrapping measures every
# character of every line it cuts, and a 32 KB line of accented text took
# ~60 ms a redraw in char_width alone (three Unicode look-ups and a scan of
# the jamo ranges each time).  Bounded: a hostile server can send them all.
WIDTHS_KEPT = 4096


@functools.lru_cache(maxsize=WIDTHS_KEPT)
def char_width(char: str) -> int:
    """Terminal cells one code point takes: 0, 1 or 2, as wcwidth() says."""
    if char in VISIBLE_FORMAT:
        return 1
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    if any(low <= char <= high for low, high in JAMO_JOINING):
        return 0
    if unicodedata.east_asian_width(char) in ("W", "F"):
        return 2
    return 1


def typable(char: str) -> bool:
    """A key that is text: printable, or a zero-width (non-)joiner, which
    isprintable() refuses (category Cf) though words and emoji need them:
    Persian spelling (ZWNJ), 👩‍💻 (woman, ZWJ, laptop)."""
    return char.isprintable() or char in JOINERS


def text_width(text: str) -> int:
    """Terminal cells a string takes."""
    return sum(char_width(char) for char in text)


def _is_mark(char: str) -> bool:
    return char_width(char) == 0


def _indicators_before(text: str, index: int) -> int:
    """How many regional indicators run right before text[index]: after
    an odd number, the one at `index` ends a flag.  A run of flags
    (🇫🇷🇩🇪🇮🇹) split anywhere but between pairs leaves half a flag, drawn
    as a boxed letter."""
    head = text[:index]
    return len(head) - len(head.rstrip(INDICATOR_LETTERS))


def continues(text: str, index: int) -> bool:
    """Whether text[index] belongs to the cluster of the character before
    it: a combining mark or other zero-width character, a skin-tone
    modifier (👍🏽), an emoji after a ZWJ (👩‍💻), or the second letter of
    a flag (🇫🇷).  The cursor took two steps over an emoji with a skin
    tone, and Backspace left the bare modifier behind, shown as a
    coloured square."""
    indicators = _indicators_before(text, index) if text[index] in INDICATOR_LETTERS else 0
    return _joins(text, index, indicators)


def _joins(text: str, index: int, indicators: int) -> bool:
    """`continues`, told how many regional indicators run before `index`."""
    char = text[index]
    if _is_mark(char) or SKIN_TONES[0] <= char <= SKIN_TONES[1]:
        return True
    if char in INDICATOR_LETTERS and indicators % 2 == 1:
        return True
    return index > 0 and text[index - 1] == ZWJ and unicodedata.category(char) == "So"


def clusters(text: str) -> list[str]:
    """`text` cut into the clusters `continues` makes, in one pass.

    Asked of `continues` at each index, a run of flags was measured back
    from each letter to the start of the line: a line of 8000 flags took
    seconds to wrap, at every redraw.  Here the run is counted on the way.
    """
    found: list[str] = []
    start = indicators = 0
    for index, char in enumerate(text):
        if index and not _joins(text, index, indicators):
            found.append(text[start:index])
            start = index
        indicators = indicators + 1 if char in INDICATOR_LETTERS else 0
    if text:
        found.append(text[start:])
    return found


def fit(text: str, width: int) -> str:
    """The longest prefix of `text` that fits in `width` cells, ending with
    a whole cluster: an emoji with its skin tone cut at the right edge of
    the input line (or the title) showed as the bare emoji, as if typed
    without it."""
    used = 0
    for index, char in enumerate(text):
        used += char_width(char)
        if used > width:
            while index > 0 and continues(text, index):
                index -= 1
            return text[:index]
    return text


class LineEditor:
    """The input line's model."""

    def __init__(self) -> None:
        self.text = ""
        self.cursor = 0
        self.history: list[str] = []
        self._history_pos = 0
        self._draft = ""
        self._completion: tuple[int, int, list[str], int] | None = None

    # ---- editing -------------------------------------------------------------

    def insert(self, chars: str) -> None:
        self._completion = None
        self.text = self.text[:self.cursor] + chars + self.text[self.cursor:]
        self.cursor += len(chars)

    def _cluster_start(self, index: int) -> int:
        """Step back from index over combining marks to their base character."""
        while index > 0 and index < len(self.text) and continues(self.text, index):
            index -= 1
        return index

    def _prev(self) -> int:
        return self._cluster_start(self.cursor - 1) if self.cursor > 0 else 0

    def _next(self) -> int:
        index = min(len(self.text), self.cursor + 1)
        while index < len(self.text) and continues(self.text, index):
            index += 1
        return index

    def left(self) -> None:
        self._completion = None
        self.cursor = self._prev()

    def right(self) -> None:
        self._completion = None
        self.cursor = self._next()

    def home(self) -> None:
        self._completion = None
        self.cursor = 0

    def end(self) -> None:
        self._completion = None
        self.cursor = len(self.text)

    def backspace(self) -> None:
        start = self._prev()
        self._delete(start, self.cursor)

    def delete(self) -> None:
        self._delete(self.cursor, self._next())

    def _delete(self, start: int, stop: int) -> None:
        self._completion = None
        self.text = self.text[:start] + self.text[stop:]
        self.cursor = start

    def word_left(self) -> None:
        self._completion = None
        self.cursor = self._word_start()

    def word_right(self) -> None:
        self._completion = None
        index = self.cursor
        while index < len(self.text) and self.text[index] == " ":
            index += 1
        while index < len(self.text) and self.text[index] != " ":
            index += 1
        self.cursor = index

    def _word_start(self) -> int:
        index = self.cursor
        while index > 0 and self.text[index - 1] == " ":
            index -= 1
        while index > 0 and self.text[index - 1] != " ":
            index -= 1
        return index

    def delete_word(self) -> None:
        """Ctrl+W: delete the word before the cursor."""
        self._delete(self._word_start(), self.cursor)

    def kill_to_start(self) -> None:
        """Ctrl+U."""
        self._delete(0, self.cursor)

    def kill_to_end(self) -> None:
        """Ctrl+K."""
        self._delete(self.cursor, len(self.text))

    # ---- submitting and history ----------------------------------------------

    def submit(self) -> str:
        """Return the line, remember it (unless it holds a password), start a fresh one."""
        line = self.text
        secret = line.lstrip().lower().startswith(SECRET_COMMANDS)
        if line.strip() and not secret and (not self.history or self.history[-1] != line):
            self.history.append(line)
            del self.history[:-HISTORY_MAX]
        self.text, self.cursor, self._draft = "", 0, ""
        self._history_pos = len(self.history)
        self._completion = None
        return line

    def history_prev(self) -> None:
        """Up: an older line; the line being typed is kept as a draft."""
        if self._history_pos == len(self.history):
            self._draft = self.text
        if self._history_pos > 0:
            self._history_pos -= 1
            self._show(self.history[self._history_pos])

    def history_next(self) -> None:
        """Down: a newer line, and finally the draft again."""
        if self._history_pos < len(self.history):
            self._history_pos += 1
            at_end = self._history_pos == len(self.history)
            self._show(self._draft if at_end else self.history[self._history_pos])

    def _show(self, text: str) -> None:
        self.text, self.cursor, self._completion = text, len(text), None

    # ---- completion ---------------------------------------------------------------

    def complete(self, candidates: Callable[[str, bool], Iterable[str]]) -> None:
        """Tab: complete the word before the cursor; Tab again cycles.

        `candidates(word, at_start)` returns the possible words (commands,
        rooms or nicks).  A nick completed at the start of the line gets
        `: ` after it.
        """
        if self._completion is not None:
            start, stop, matches, index = self._completion
            index = (index + 1) % len(matches)
        else:
            start = self._word_start()
            word = self.text[start:self.cursor]
            folded = word.casefold()
            matches = sorted({c for c in candidates(word, start == 0)
                              if c.casefold().startswith(folded)}, key=str.casefold)
            if not matches or not word and start != 0:
                return
            stop, index = self.cursor, 0
        choice = matches[index]
        suffix = ": " if start == 0 and choice[:1] not in NOT_ADDRESSED else " "
        self.text = self.text[:start] + choice + suffix + self.text[stop:]
        self.cursor = start + len(choice) + len(suffix)
        self._completion = (start, self.cursor, matches, index)

    # ---- display ---------------------------------------------------------------------

    def view(self, width: int) -> tuple[str, int]:
        """The part of the text to draw in `width` cells, and the cursor column.

        The text scrolls horizontally just enough to keep the cursor visible.
        """
        if width <= 1:
            return "", 0
        # Walk back from the cursor while the text fits: work in proportion
        # to the width, where measuring ever shorter tails from the start of
        # the line was quadratic (seconds per key in a 5000-character line).
        start, used = self.cursor, 0
        while start > 0 and used + char_width(self.text[start - 1]) <= width - 1:
            start -= 1
            used += char_width(self.text[start])
        while 0 < start < self.cursor and continues(self.text, start):
            start += 1      # the rest of a cluster whose base character did not fit
        shown = fit(self.text[start:], width)
        return shown, text_width(self.text[start:self.cursor])
