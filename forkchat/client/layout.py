"""Cutting styled text into the message pane's rows, in two steps.

`row_starts` finds where each row of a line begins (offsets into the line's
text, its segments run together), which depends only on the text and the
width; `rows` then builds the rows asked for, in the styles of the moment.
The view keeps each line's starts for its width (`buffers.Line.wrapped`)
and builds only the rows on screen.  Wrapped whole at every redraw, a
server's 64 KB lines (the client reads lines that long) cost 50-130 ms a
redraw while one was on screen or below a scrolled-back view, and typing
and scrolling lagged.

Rows break after a space when the text has one, else anywhere; wide
characters are never split across the edge; a character cluster (a base
and its combining marks, an emoji and its skin tone, emoji joined by ZWJ,
a flag's two letters) stays whole on one row.  Continuation rows start
`indent` cells in.
"""

from __future__ import annotations

import array
import dataclasses

from forkchat.client import lineedit

INDENT = 6                      # continuation rows start under the text, after HH:MM

Segment = tuple[str, int]       # text and its curses attribute
Row = list[Segment]


@dataclasses.dataclass(eq=False)
class Memo:
    """What the view worked out for one line, kept on it (`Line.wrapped`)
    with what it was worked out from, so that a change shows."""

    key: tuple[object, ...]     # the width and the line's fields the rows are cut from
    starts: array.array         # `row_starts` of them
    # Whether the text names the user: (the nick it was asked for, the
    # text, the answer).  Searched at each redraw, a 64 KB line on screen
    # cost 2 ms of the 2.5 a redraw took.
    named: tuple[str, str, bool] | None = None


def wrap(segments: list[Segment], width: int, indent: int = INDENT) -> list[Row]:
    """Cut styled text into rows of at most `width` cells (the rules above)."""
    starts = row_starts([text for text, _ in segments], width, indent)
    return rows(segments, starts, 0, len(starts), width, indent)


def _indent(width: int, indent: int) -> int:
    """No indent on a terminal too narrow to leave the text half the row."""
    return indent if indent < width // 2 else 0


def row_starts(texts: list[str], width: int, indent: int = INDENT) -> array.array:
    """Where each row begins, as offsets into the texts run together (the
    first row at 0).  An array of ints: a 64 KB line has a thousand rows."""
    indent = _indent(width, indent)
    starts = array.array("I", [0])
    col = base = 0
    for text in texts:
        breaks = _one_cell_breaks if _one_cell_each(text) else _cluster_breaks
        col = breaks(text, base, col, width, indent, starts)
        base += len(text)
    return starts


def _one_cell_each(text: str) -> bool:
    """Whether each character of `text` is a cluster of its own one cell
    wide (ASCII, and most Latin, Greek or Cyrillic text): a character of
    one cell joins none before it unless it is a flag's letter (marks and
    joiners take none, skin tones two), so its rows are found a row at a
    time."""
    return text.isascii() or all(lineedit.char_width(char) == 1
                                 and char not in lineedit.INDICATOR_LETTERS
                                 for char in set(text))


def _carry(text: str, chunk: int, cut: int) -> str:
    """The word to carry to the next row when the row breaks before
    text[cut]: what follows the row's last space after its first
    character (`chunk`), '' when there is none."""
    space = text.rfind(" ", chunk, cut)
    return text[space + 1:cut] if space > chunk else ""


def _one_cell_breaks(text: str, base: int, col: int, width: int, indent: int,
                  starts: array.array) -> int:
    """The row breaks in a text of a cell a character (`_one_cell_each`)
    met at column `col`: found a row at a time, not a character at a
    time.  Returns the column after it."""
    pos = chunk = 0
    while pos < len(text) and col + len(text) - pos > width:     # the rest does not fit
        cut = pos + max(0, width - col)         # the first character past the edge
        carry = len(_carry(text, chunk, cut))
        if indent + carry + 1 > width:
            carry = 0       # a word too long to fit with what follows it: break anywhere
        chunk = cut - carry
        starts.append(base + chunk)
        col, pos = indent + carry + 1, cut + 1
    return col + len(text) - pos


def _cluster_breaks(text: str, base: int, col: int, width: int, indent: int,
                    starts: array.array) -> int:
    """The row breaks in any text met at column `col`, a cluster at a time.
    Returns the column after it."""
    chunk = index = 0
    for cluster in _clusters(text, width - indent):
        cells = lineedit.char_width(cluster) if len(cluster) == 1 else \
            lineedit.text_width(cluster)
        if cells and col + cells > width:
            carry = _carry(text, chunk, index)
            carry_cells = lineedit.text_width(carry)
            if indent + carry_cells + cells > width:
                carry, carry_cells = "", 0  # break anywhere (as above)
            chunk = index - len(carry)
            starts.append(base + chunk)
            col = indent + carry_cells
        col += cells
        index += len(cluster)
    return col


def _clusters(text: str, room: int) -> list[str]:
    """`text` cut into character clusters, as the cursor steps over them: a
    skin-tone modifier at the right edge went on the next row apart from
    its emoji, shown there as a bare coloured square.  A cluster wider than
    `room` (a row less its indent; a long ZWJ run on a narrow terminal)
    is cut into its characters, as it could never fit whole."""
    found: list[str] = []
    for cluster in lineedit.clusters(text):
        whole = len(cluster) == 1 or lineedit.text_width(cluster) <= room
        found.extend([cluster] if whole else list(cluster))
    return found


def rows(segments: list[Segment], starts: array.array, first: int, last: int,
         width: int, indent: int = INDENT) -> list[Row]:
    """Rows `first` to `last - 1` of styled text that breaks at `starts`
    (from `row_starts` of the same texts and width)."""
    indent = _indent(width, indent)
    spans, base = [], 0
    for text, attr in segments:
        spans.append((base, text, attr))
        base += len(text)
    built: list[Row] = []
    for number in range(first, last):
        low = starts[number]
        high = starts[number + 1] if number + 1 < len(starts) else base
        row: Row = [(" " * indent, 0)] if number and indent else []
        for begin, text, attr in spans:
            piece = text[max(0, low - begin):max(0, high - begin)]
            if piece:
                row.append((piece, attr))
        built.append(row)
    return built
