"""The welcome burst's fixed lines (state_query.FixedLines), made once per
Settings and split around the nick, are byte for byte those the builders
make for each client, whatever the settings, the nick and the reloads
between registrations."""

from __future__ import annotations

import string

from hypothesis import given, settings, strategies as st

from forkchat import protocol, state, state_query

NICK_FIRST = string.ascii_letters + "[]\\`_^{|}"
NICK_REST = NICK_FIRST + string.digits + "-"
# Any text, controls and wide characters included: what a configuration
# file can hold in the server's name, network and MOTD.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=120)


def nicks(longest: int, widest: int) -> st.SearchStrategy[str]:
    """Any nick up to `longest`, or one of a length that brings the widest
    fixed line (`widest` bytes, made for a one-byte nick) to the most a line
    may hold, give or take two bytes: where a line starts being cut short."""
    edge = protocol.MAX_LINE_BYTES - widest + 1
    length = st.one_of(st.integers(1, 400), st.integers(edge - 2, edge + 2))
    return st.builds(lambda first, rest, size: (first + rest * 500)[:max(1, min(size, longest))],
                     st.sampled_from(NICK_FIRST), st.text(st.sampled_from(NICK_REST), min_size=1,
                                                          max_size=5), length)


def widest_line(chat: state.ChatState) -> int:
    """The longest of 002-005 and the MOTD made for the nick `*`."""
    one = chat.stand_in("*")
    return max(map(len, [*state_query.server_lines(chat, one), *state_query.motd_lines(chat, one)]))


def edge_motd(server_name: str) -> st.SearchStrategy[str]:
    """A MOTD line whose 372 for the nick `*` is a whole line long, give or
    take two bytes: the longest a line made for the stand-in can be and
    not be cut, and the shortest one cut."""
    head = len(f":{server_name} 372 * :- ".encode("utf-8", "replace"))
    return st.builds(lambda extra: "m" * max(0, protocol.MAX_BODY_BYTES - head + extra),
                     st.integers(-2, 2))


@st.composite
def some_settings(draw: st.DrawFn) -> state.Settings:
    name = draw(st.one_of(st.text(st.sampled_from(string.ascii_lowercase + ".-"), min_size=1,
                                  max_size=480), TEXT.filter(bool)))
    return state.Settings(
        server_name=name, network=draw(TEXT), version=draw(TEXT), created=draw(TEXT),
        motd_lines=tuple(draw(st.lists(st.one_of(TEXT, st.text(max_size=600), edge_motd(name)),
                                       max_size=3))),
        nicklen=draw(st.integers(1, 500)), topiclen=draw(st.integers(1, 1000)),
        rooms_per_client=draw(st.integers(1, 10 ** 6)), bans_per_room=draw(st.integers(0, 10 ** 6)))


class Outbox:
    def __init__(self) -> None:
        self.lines: list[tuple[int, bytes]] = []

    def send(self, cid: int, line: bytes) -> None:
        self.lines.append((cid, line))

    def fanout(self, cids, line: bytes) -> None:
        self.lines.extend((cid, line) for cid in cids)

    def fanout_but(self, cids, but: int, line: bytes) -> None:
        self.fanout([cid for cid in cids if cid != but], line)

    def update(self, cid: int, changes: dict) -> None:
        pass

    def drop(self, cid: int, reason: str, last: bytes = b"") -> None:
        pass

    def serve(self, cid: int, line: bytes) -> None:
        pass


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_each_registration_gets_the_lines_made_for_it_alone(data):
    """Settings after settings (a reload between registrations), each
    client's 002-005 and MOTD are what the builders make for that client
    only; a nick that makes a line too long to go whole included."""
    chat: state.ChatState | None = None
    cid = 0
    for _ in range(data.draw(st.integers(1, 3))):
        settings_now = data.draw(some_settings())
        if chat is None:
            chat = state.ChatState(settings_now)
        else:
            chat.take_settings(settings_now)
        for _ in range(data.draw(st.integers(1, 3))):
            cid += 1
            nick = data.draw(nicks(settings_now.nicklen, widest_line(chat)))
            if chat.find_nick(nick) is not None:
                continue
            out = Outbox()
            chat.connect(cid, f"10.0.0.{cid}")
            chat.request(cid, protocol.parse_text(f"NICK {nick}"), out)
            chat.register(cid, f"u{cid}", "Real Name", out)
            client = chat.clients[cid]
            assert client.registered and client.nick == nick
            alone = [*state_query.server_lines(chat, client), *state_query.lusers_lines(chat, client),
                     *state_query.motd_lines(chat, client)]
            got = [line for to, line in out.lines if to == cid]
            assert got[1:] == alone
            assert all(len(line) <= protocol.MAX_LINE_BYTES for line in got)
