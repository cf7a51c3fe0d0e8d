import pytest

from forkchat import tutorial


@pytest.mark.parametrize("chunk, nick", [
    (b"alice", "alice"), (b"bob\n", "bob"), (b"two words", "two_words"),
    (b"9lives", "t9lives"), (b"\xff\xfe", "t"), (b"caf\xc3\xa9", "caf"),
])
def test_clean_nick(chunk, nick):
    assert tutorial.clean_nick(chunk, 30) == nick


def test_suffixes_stay_within_nicklen():
    assert tutorial.suffixed("alice", 0, 9) == "alice"
    assert tutorial.suffixed("alice", 2, 9) == "alice_2"
    assert tutorial.suffixed("abcdefghi", 12, 9) == "abcdef_12"


def test_chunk_strips_own_prefix_only():
    assert tutorial.chunk_to_lines(b"alice: hi there", "alice", "#lobby") == \
        [b"PRIVMSG #lobby :hi there"]
    assert tutorial.chunk_to_lines(b"bob: hi", "alice", "#lobby") == [b"PRIVMSG #lobby :bob: hi"]
    assert tutorial.chunk_to_lines(b"alice: ", "alice", "#lobby") == []


def test_long_chunk_splits_into_several_messages():
    lines = tutorial.chunk_to_lines(b"x" * 1000, "a", "#lobby")
    assert len(lines) == 3 and all(len(line) < 450 for line in lines)


@pytest.mark.parametrize("line, out", [
    (b":bob!b@h PRIVMSG #lobby :hello", b"bob: hello"),
    (b":bob!b@h PRIVMSG #lobby :caf\xc3\xa9", b"bob: caf?"),
    (b":bob!b@h JOIN #lobby", b"bob joined!"),
    (b":bob!b@h PART #lobby :bye", b"bob left!"),
    (b":bob!b@h QUIT :Connection closed", b"bob left!"),
    (b":bob!b@h PRIVMSG #lobby :\x01ACTION waves\x01", b"* bob waves"),
    (b":bob!b@h PRIVMSG alice :psst", b"bob (private): psst"),
    (b":srv 001 alice :Welcome", None),
])
def test_render(line, out):
    assert tutorial.render(line, "alice") == out


def test_escape_sequences_never_reach_a_tutorial_terminal():
    assert tutorial.render(b":bob!b@h PRIVMSG #lobby :\x1b[2Jboo\x07", "alice") == b"bob: ?[2Jboo?"
