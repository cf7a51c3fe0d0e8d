"""Property tests (hypothesis): the parser, the formatter, IPC framing, the chat state.

What a client or a worker can send is open-ended, so examples alone are not
enough: these tests state what must hold for *every* input and let
hypothesis search for a counter-example.

- protocol.parse_line raises nothing but ProtocolError, whatever the bytes.
- protocol.format_line always yields one safe wire line (<= 512 bytes, CRLF,
  no other CR/LF/NUL), and a representable message parses back unchanged.
- ipc.FrameReader gives the same frames however the stream is cut, and
  raises nothing but FrameError on garbage.
- state.ChatState, driven by random clients doing random things: handlers
  never raise, every line they write is a valid IRC line, the registry,
  rooms and memberships agree after every step, each worker's view of its
  own identity (from UPDATE frames) matches the broker's, and a broker
  restart (a fresh ChatState fed every worker's REREGISTER) rebuilds the
  same nicks, rooms and statuses.

Example budgets are small (the whole file runs in well under 20 s on the
2-core box); run with HYPOTHESIS_PROFILE=thorough for a longer search.
"""

from __future__ import annotations

import json
import os

from hypothesis import HealthCheck, assume, example, given, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from forkchat import ipc, protocol, state, state_query, state_talk, tutorial
from forkchat.session import Session

settings.register_profile("default", max_examples=200, deadline=None)
settings.register_profile("thorough", max_examples=5000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# -- shared strategies --------------------------------------------------------------

# Text as it can arrive from the wire: any Unicode but surrogates (parse_line
# decodes strict UTF-8, so a lone surrogate can never reach the server).
wire_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=80)
clean_text = st.text(st.characters(exclude_categories=("Cs",),
                                   exclude_characters="\r\n\0"), max_size=80)
# Long text, cheap to generate: random ends around a run of one (maybe multi-byte) character.
long_text = st.builds(lambda head, char, count, tail: head + char * count + tail,
                      st.text(st.characters(exclude_categories=("Cs",)), max_size=10),
                      st.characters(exclude_categories=("Cs",)),
                      st.integers(min_value=100, max_value=400),
                      st.text(st.characters(exclude_categories=("Cs",)), max_size=10))

# A middle parameter as RFC 2812 defines it: not empty, no SPACE, CR, LF or
# NUL, not starting with ':'.  Other whitespace (TAB, NBSP ...) is allowed.
middle_param = st.text(st.characters(exclude_categories=("Cs",),
                                     exclude_characters=" \r\n\0"),
                       min_size=1, max_size=30).filter(lambda p: not p.startswith(":"))
trailing_param = st.text(st.characters(exclude_categories=("Cs",),
                                       exclude_characters="\r\n\0"), max_size=120)

nick_text = st.from_regex(r"\A[A-Za-z\[\]\\`_^{|}][A-Za-z0-9\[\]\\`_^{|}\-]{0,12}\Z")
user_text = st.from_regex(r"\A[A-Za-z0-9_.\-]{1,10}\Z")
host_text = st.sampled_from(["127.0.0.1", "::1", "10.0.0.7", "example.org"])
server_prefix = st.one_of(
    st.just(""), st.just("srv.example.org"),
    st.builds(protocol.user_prefix, nick_text, user_text, host_text))
command_word = st.one_of(st.from_regex(r"\A[A-Z]{1,12}\Z"), st.from_regex(r"\A[0-9]{3}\Z"))


def fits(prefix: str, command: str, params: list[str]) -> bool:
    """Whether the line fits uncut (every part with room for its space and colon)."""
    size = len(prefix.encode()) + len(command) + sum(len(p.encode()) + 2 for p in params) + 2
    return size <= protocol.MAX_BODY_BYTES


def line_is_safe(line: bytes) -> None:
    """One wire line: bounded, CRLF-terminated, nothing that could start another."""
    assert len(line) <= protocol.MAX_LINE_BYTES, len(line)
    assert line.endswith(b"\r\n"), line
    body = line[:-2]
    assert b"\r" not in body and b"\n" not in body and b"\0" not in body, line


# -- parse_line ----------------------------------------------------------------------

irc_ish_bytes = st.lists(
    st.one_of(st.sampled_from([b":", b" ", b" :", b"@", b"\r", b"\n", b"\0", b"\xff",
                               b"\xc3", b"\t", b"PRIVMSG", b"#room", b"nick!u@h",
                               b"@a=b;c", b"\xe2\x80\xa8", b"\xc2\xa0"]),
              st.binary(max_size=8)),
    max_size=40).map(b"".join)


@given(st.one_of(st.binary(max_size=1200), irc_ish_bytes,
                 wire_text.map(lambda t: t.encode("utf-8"))))
def test_parse_line_raises_only_protocol_error(raw):
    try:
        msg = protocol.parse_line(raw)
    except protocol.ProtocolError as error:
        assert error.reason
        return
    assert msg.command and msg.command == msg.command.upper()
    assert len(msg.params) <= protocol.MAX_PARAMS
    assert all("\0" not in p for p in msg.params)


# -- format_line ---------------------------------------------------------------------

@given(server_prefix, command_word, st.lists(st.one_of(wire_text, long_text), max_size=16))
def test_format_line_is_one_safe_line(prefix, command, params):
    line = protocol.format_line(prefix, command, *params)
    line_is_safe(line)
    assert protocol.parse_line(line).command == command


nasty_text = st.text(st.one_of(st.sampled_from("\r\n\0 :"),
                               st.characters(exclude_categories=("Cs",))), max_size=40)


@given(nasty_text, nasty_text.filter(bool), st.lists(nasty_text, max_size=5))
def test_format_line_is_safe_whatever_the_prefix_and_command(prefix, command, params):
    """The module promises that formatting never emits CR, LF or NUL, whoever calls it."""
    line_is_safe(protocol.format_line(prefix, command, *params))


@given(server_prefix, command_word,
       st.lists(middle_param, max_size=protocol.MAX_PARAMS - 1), trailing_param)
def test_format_then_parse_round_trips(prefix, command, middles, last):
    params = middles + [last]
    line = protocol.format_line(prefix, command, *params)
    assume(fits(prefix, command, params))       # a cut line cannot round-trip
    msg = protocol.parse_line(line)
    assert (msg.prefix, msg.command, msg.params) == (prefix, command, params)


@given(server_prefix, command_word, st.lists(middle_param, min_size=1, max_size=6))
def test_last_param_without_space_round_trips_as_middle(prefix, command, params):
    """format_line sends a last parameter without ':' when it can; it must still parse back."""
    assume(fits(prefix, command, params))
    line = protocol.format_line(prefix, command, *params)
    assert protocol.parse_line(line).params == params


@given(server_prefix, command_word, st.lists(st.one_of(nasty_text, long_text), min_size=1,
                                            max_size=8))
def test_text_line_is_one_safe_line_with_its_text_last(prefix, command, params):
    """state_talk.text_line, the formatter of relayed text, keeps the same promises."""
    line = state_talk.text_line(prefix, command, *params)
    line_is_safe(line)
    msg = protocol.parse_line(line)
    assert msg.command == command
    if fits(prefix, command, params):
        expected = params[-1].replace("\r", " ").replace("\n", " ").replace("\0", " ")
        assert len(msg.params) == len(params) and msg.params[-1] == expected


# -- the tutorial dialect -------------------------------------------------------------

@given(st.one_of(st.binary(max_size=3000), irc_ish_bytes), nick_text,
       st.sampled_from(["#lobby", "#x", "&r"]))
def test_tutorial_chunk_becomes_safe_privmsg_lines(chunk, nick, room):
    for line in tutorial.chunk_to_lines(chunk, nick, room):
        line_is_safe(line + b"\r\n")
        msg = protocol.parse_line(line)
        assert msg.command == "PRIVMSG" and msg.params[0] == room and msg.params[1]


@given(st.one_of(st.binary(max_size=600), irc_ish_bytes,
                 st.builds(protocol.format_line, server_prefix,
                           st.sampled_from(["PRIVMSG", "NOTICE", "JOIN", "PART", "QUIT",
                                            "KICK", "NICK", "TOPIC", "001"]),
                           wire_text, wire_text)),
       nick_text)
def test_tutorial_render_sends_only_ascii(line, nick):
    """Tutorial clients decode ASCII: whatever the broker delivers, nothing else reaches them."""
    rendered = tutorial.render(line, nick)
    assert rendered is None or all(byte < 128 for byte in rendered)


@given(st.text(max_size=1200), st.one_of(st.none(), st.text(max_size=1200)))
def test_tutorial_goodbye_is_one_short_plain_line(reason, said):
    """Whatever the reason (a KILL's comment is an operator's text), the last
    words are printable ASCII and no longer than the ERROR line they stand for."""
    last = tutorial.goodbye(reason, said)
    assert last is None or (len(last) <= protocol.MAX_BODY_BYTES
                            and all(32 <= byte < 127 for byte in last))


# -- ipc framing -----------------------------------------------------------------------

frames = st.lists(st.tuples(st.sampled_from(list(ipc.Kind)), st.binary(max_size=300)),
                  max_size=12)


@given(frames, st.lists(st.integers(min_value=0, max_value=4000), max_size=10))
def test_frame_reader_reassembles_any_split(items, cuts):
    stream = b"".join(ipc.encode(kind, payload) for kind, payload in items)
    points = sorted({min(cut, len(stream)) for cut in cuts} | {0, len(stream)})
    reader = ipc.FrameReader()
    got = []
    for start, end in zip(points, points[1:]):
        got += reader.feed(stream[start:end])
    assert got == [(int(kind), payload) for kind, payload in items]
    assert reader.pending == 0


@given(st.lists(st.binary(max_size=64), max_size=10))
def test_frame_reader_raises_only_frame_error_on_garbage(chunks):
    reader = ipc.FrameReader(max_frame=4096)
    try:
        for chunk in chunks:
            for kind, payload in reader.feed(chunk):
                assert kind in set(ipc.Kind) and len(payload) <= 4096
    except ipc.FrameError:
        pass


@given(st.binary(max_size=200))
def test_decode_json_raises_only_frame_error(payload):
    try:
        ipc.decode_json(payload)
    except ipc.FrameError:
        pass


# Any text, lone surrogates included (a nick's bytes are not always UTF-8), and
# numbers of any size: the control frames' JSON as json.dumps and json.loads made
# and read it before ipc kept one encoder and one decoder.
json_text = st.text(st.characters(exclude_categories=[])
                    | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF,
                                    exclude_categories=[]))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | json_text,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(json_text, inner, max_size=4), max_leaves=12)


@given(st.dictionaries(json_text, json_values, max_size=4))
def test_json_frames_are_those_of_json_dumps_and_loads(value):
    made = json.dumps(value, separators=(",", ":")).encode()
    assert ipc.encode_json(ipc.Kind.UPDATE, value)[ipc.HEADER.size:] == made
    assert repr(ipc.decode_json(made)) == repr(json.loads(made))


json_objects = st.dictionaries(json_text, json_values, max_size=4)
# Frames' bytes as a peer might have written them: raw UTF-8, lone
# surrogates as their three bytes, and any byte in place of one.
raw_json = st.builds(lambda value, at, byte: _spliced(
    json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"), at, byte),
    json_objects, st.integers(min_value=-1, max_value=100), st.integers(0, 255))


def _spliced(data: bytes, at: int, byte: int) -> bytes:
    return data if at < 0 or at >= len(data) else data[:at] + bytes([byte]) + data[at + 1:]


@given(st.one_of(st.binary(max_size=200), raw_json))
@example(b'{"nick":"\xed\xa0\x80"}')          # a lone surrogate, as its three bytes
@example('{"nick":"\u00e9t\u00e9","n":1e999}'.encode())
@example(b'{"nick":"\xc3("}')                   # not UTF-8
def test_decode_json_takes_and_refuses_what_json_loads_did(payload):
    assume(json.detect_encoding(payload) == "utf-8")     # (all a peer sends)
    try:
        expected = json.loads(payload)
    except (ValueError, RecursionError):
        expected = None
    try:
        got = ipc.decode_json(payload)
    except ipc.FrameError:
        got = None
    assert repr(got) == repr(expected if isinstance(expected, dict) else None)


# -- ChatState -------------------------------------------------------------------------

CIDS = list(range(1, 7))
OWN_NICK = {1: "ann", 2: "ben", 3: "cat", 4: "d[a]n", 5: "eve", 6: "fay"}
NICKS = ["ANN", "Ann", "ben", "BEN", "cat", "D{A}N", "eve", "Guest3", "x" * 31, "g-1"]
ROOMS = ["#a", "#A", "#b", "&c", "#d", "#", "#a,#b", "#b,&c,#new", "0", "#" + "r" * 60,
         "#\u00e9t\u00e9", "#tab\there", "#nbsp\u00a0x"]
MODES = ["+o", "-o", "+v", "-v", "+ov", "+b", "-b", "b", "+k", "-k", "+l", "-l", "+i", "-i",
         "+m", "-m", "+n", "-n", "+t", "-t", "+s", "-s", "+p", "+imnpst", "-imnpst",
         "+x", "+kl", "+o-o+v-v", "+bbbb", "+iw", "-iw", "+w", "-o", "+O", "", "+", "-"]
WORDS = ["*", "*!*@*", "ann!*@*", "*@127.0.0.1", "key", "5", "0", "-1", "99999999999",
         "ann,ben", "ann,ben,cat,eve,nobody", ":", "::", "a b", "\u2028", "\U0001f600",
         "", "x" * 600, "<2", ">0", "!#a*", "o", "1"]
COMMANDS = sorted(state.HANDLERS) + ["BOGUS", "PING", "USER", "cap"]

param = st.one_of(st.sampled_from(NICKS), st.sampled_from(ROOMS), st.sampled_from(MODES),
                  st.sampled_from(WORDS), clean_text)


@st.composite
def request_message(draw) -> protocol.Message:
    """What the broker's parse_line can yield: middles without whitespace, one trailing."""
    command = draw(st.sampled_from(COMMANDS))
    middles = [p for p in draw(st.lists(param, max_size=5))
               if p and not p.startswith(":") and not any(c.isspace() for c in p)]
    params = middles
    if draw(st.booleans()):
        params = middles + [draw(param)]
    return protocol.Message("", command, params[:protocol.MAX_PARAMS])


class RecordingOutbox:
    """state.Outbox that checks each line and plays the workers' side of UPDATE and DROP."""

    def __init__(self, sessions: dict[int, Session]) -> None:
        self.sessions = sessions
        self.targets: set[int] = set()
        self.dropped: list[int] = []
        self.lines = 0

    def send(self, cid: int, line: bytes) -> None:
        self._check(line)
        self.targets.add(cid)

    def fanout(self, cids, line: bytes) -> None:
        cids = list(cids)
        assert len(cids) == len(set(cids)), "a fanout names a recipient twice"
        self._check(line)
        self.targets.update(cids)

    def fanout_but(self, cids, but: int, line: bytes) -> None:
        self.fanout([cid for cid in cids if cid != but], line)

    def update(self, cid: int, changes: dict) -> None:
        assert set(changes) <= {"nick", "registered", "modes", "rooms", "oper", "away"}, changes
        session = self.sessions.get(cid)
        if session is not None:
            session.apply(changes)

    def drop(self, cid: int, reason: str, last: bytes = b"") -> None:
        assert reason and "\n" not in reason
        if last:
            self._check(last)
        self.dropped.append(cid)

    def serve(self, cid: int, line: bytes) -> None:
        line_is_safe(line + b"\r\n")
        assert protocol.parse_line(line).command in state_query.WORKER_QUERIES, line
        self.targets.add(cid)

    def _check(self, line: bytes) -> None:
        line_is_safe(line)
        msg = protocol.parse_line(line)      # valid UTF-8, a command
        assert msg.prefix, line              # the server always says who speaks
        self.lines += 1


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


class ChatStateMachine(RuleBasedStateMachine):
    """Random clients connecting, registering, talking and leaving; a broker that may restart."""

    @initialize(members=st.integers(min_value=2, max_value=6),
                rooms_per_client=st.integers(min_value=1, max_value=5),
                present=st.integers(min_value=2, max_value=len(CIDS)),
                joins=st.lists(st.tuples(st.sampled_from(CIDS), st.sampled_from(ROOMS[:4])),
                               max_size=12),
                statuses=st.lists(st.tuples(st.sampled_from("ov"), st.sampled_from(CIDS)),
                                  max_size=4))
    def setup(self, members, rooms_per_client, present, joins, statuses):
        self.clock = Clock()
        self.settings = state.Settings(server_name="srv", nicklen=30, roomlen=50,
                                       rooms_per_client=rooms_per_client, max_rooms=6,
                                       members_per_room=members, bans_per_room=3,
                                       topiclen=50, kicklen=40, awaylen=40)
        self.st = state.ChatState(self.settings, now=self.clock)
        self.sessions: dict[int, Session] = {}
        self.out = RecordingOutbox(self.sessions)
        self.before: set[int] = set()
        self.odd = False          # a REREGISTER with a made-up identity happened
        for cid in CIDS[:present]:
            self.arrive(cid, "127.0.0.1")
            self._run(cid, "JOIN #a")
        for cid, room in joins:
            self._run(cid, f"JOIN {room}")
        for letter, cid in statuses:          # cid 1 joined #a first: it is the op there
            self._run(1, f"MODE #a +{letter} {self._nick_of(cid)}")

    # -- what a worker can make the broker do --------------------------------------

    def _step(self) -> None:
        self.before = set(self.st.clients)
        self.out.targets = set()

    def _run(self, cid: int, line: str) -> None:
        self.st.request(cid, protocol.parse_text(line), self.out)

    @rule(cid=st.sampled_from(CIDS), host=st.sampled_from(["127.0.0.1", "::1", ""]))
    def arrive(self, cid, host):
        """A whole registration: HELLO, NICK (the cid's own nick, else a pool one), USER."""
        self._step()
        self.st.connect(cid, host)
        self.sessions[cid] = Session(cid, host=host or "unknown")
        for nick in (OWN_NICK[cid], NICKS[cid]):
            self._run(cid, f"NICK {nick}")
        self.sessions[cid].user = "u"
        self.st.register(cid, "u", "Real Name", self.out)

    @rule(cid=st.sampled_from(CIDS), host=st.sampled_from(["127.0.0.1", "::1", ""]))
    def connect(self, cid, host):
        self._step()
        self.st.connect(cid, host)
        self.sessions[cid] = Session(cid, host=host or "unknown")

    @rule(cid=st.sampled_from(CIDS), nick=st.one_of(st.sampled_from(NICKS), nick_text, clean_text))
    def nick(self, cid, nick):
        self._step()
        self.st.request(cid, protocol.Message("", "NICK", [nick]), self.out)

    @rule(cid=st.sampled_from(CIDS), user=st.one_of(user_text, clean_text), realname=clean_text)
    def register(self, cid, user, realname):
        self._step()
        session = self.sessions.get(cid)
        if session is not None:
            session.user, session.realname = user, realname
        self.st.register(cid, user, realname, self.out)

    @rule(cid=st.sampled_from(CIDS), msg=request_message())
    def request(self, cid, msg):
        self._step()
        self.st.request(cid, msg, self.out)

    @rule(cid=st.sampled_from(CIDS), room=st.sampled_from(ROOMS[:4]))
    def join(self, cid, room):
        self._step()
        self._run(cid, f"JOIN {room}")

    @rule(cid=st.sampled_from(CIDS), room=st.sampled_from(ROOMS[:5]),
          line=st.sampled_from(["JOIN {r}", "JOIN {r},#b", "PART {r}",
                                "PART {r} :bye", "JOIN 0", "KICK {r} {n} :bye",
                                "KICK {r} {n},{m}", "INVITE {n} {r}", "NICK {n}"]),
          other=st.sampled_from(CIDS), third=st.sampled_from(CIDS))
    def membership(self, cid, room, line, other, third):
        """Commands that mostly succeed and change who is where."""
        self._step()
        self._run(cid, line.format(r=room, n=self._nick_of(other), m=self._nick_of(third)))

    @rule(cid=st.sampled_from(CIDS), room=st.sampled_from(ROOMS[:4]),
          line=st.sampled_from(["MODE {r} +o {n}", "MODE {r} +v {n}", "MODE {r} -o {n}",
                                "MODE {r} -v {n}", "MODE {r} +ov-o {n} {n} {n}",
                                "MODE {r} +b {n}!*@*", "MODE {r} -b {n}!*@*", "MODE {r} +i",
                                "MODE {r} -i", "MODE {r} +k sekrit", "MODE {r} -k sekrit",
                                "MODE {r} +l 2", "MODE {r} -l", "MODE {r} +m", "MODE {r} +s",
                                "TOPIC {r} :t", "MODE {n} +iw", "MODE {n} -iw", "MODE {n} -o",
                                "JOIN {r} sekrit"]),
          other=st.sampled_from(CIDS))
    def modes(self, cid, room, line, other):
        self._step()
        self._run(cid, line.format(r=room, n=self._nick_of(other)))

    @rule(cid=st.sampled_from(CIDS), room=st.sampled_from(ROOMS[:4]),
          line=st.sampled_from(["PRIVMSG {r} :hi", "NOTICE {r} :hi", "PRIVMSG {n} :psst",
                                "PRIVMSG {r},{n} :both", "NOTICE {n} :psst", "AWAY :later",
                                "AWAY", "WHO {r}", "WHO {n}", "WHO *", "NAMES {r}", "NAMES",
                                "WHOIS {n}", "WHOWAS {n}", "LIST", "ISON {n} nobody",
                                "USERHOST {n}", "WALLOPS :hey", "KILL {n} :out", "LUSERS"]),
          other=st.sampled_from(CIDS))
    def talk_and_query(self, cid, room, line, other):
        self._step()
        self._run(cid, line.format(r=room, n=self._nick_of(other)))

    def _nick_of(self, cid: int) -> str:
        client = self.st.clients.get(cid)
        return client.nick if client is not None and client.nick else OWN_NICK[cid]

    @rule(cid=st.sampled_from(CIDS))
    def oper(self, cid):
        self._step()
        self.st.set_oper(cid, "admin", self.out)

    @rule(cid=st.sampled_from(CIDS), reason=clean_text)
    def disconnect(self, cid, reason):
        self._step()
        self.st.disconnect(cid, reason, self.out)
        self.sessions.pop(cid, None)

    @rule(cid=st.sampled_from(CIDS), changes=st.fixed_dictionaries({}, optional={
        "nick": st.one_of(st.sampled_from(NICKS), clean_text, st.integers(), st.none()),
        "user": st.one_of(clean_text, st.none()),
        "modes": st.one_of(st.sampled_from(["", "i", "iow", "xyz"]), st.integers()),
        "rooms": st.one_of(st.dictionaries(st.sampled_from(ROOMS), st.sampled_from(
            ["", "@", "+", "@+", "+@", "x", 5]), max_size=4), st.lists(st.text()), st.none()),
        "registered": st.booleans(), "away": clean_text, "host": clean_text}))
    def reregister_odd(self, cid, changes):
        """A REREGISTER with whatever identity: the broker must restore what it can and no more."""
        self._step()
        identity = dict(self.sessions[cid].identity() if cid in self.sessions else {})
        identity.update(changes)
        self.st.reregister(cid, identity, self.out)
        self.sessions.pop(cid, None)      # the worker's view no longer describes this client
        self.odd = True

    @rule(order=st.randoms(use_true_random=False))
    def broker_restart(self, order):
        """A new broker: every worker reconnects (HELLO) and re-registers, in any order."""
        self._step()
        old = self.st
        expected = self._snapshot(old)
        self.st = state.ChatState(self.settings, now=self.clock)
        self.st.saved_rooms = old.room_records()
        cids = [cid for cid in sorted(old.clients) if cid in self.sessions]
        order.shuffle(cids)
        for cid in cids:
            session = self.sessions[cid]
            self.st.connect(cid, session.host)
            if session.nick:
                self.st.reregister(cid, session.identity(), self.out)
        for cid in [cid for cid in old.clients if cid not in self.sessions]:
            self.st.connect(cid, old.clients[cid].host)   # odd ones just come back bare
        self.st.finish_recovery(self.out)
        self.before |= set(old.clients)
        got = self._snapshot(self.st)
        for cid in cids:
            assert got.get(cid) == expected.get(cid), (cid, expected.get(cid), got.get(cid))

    @rule(seconds=st.integers(min_value=0, max_value=400))
    def time_passes(self, seconds):
        self.clock.t += seconds

    # -- what must hold after every step ---------------------------------------------

    @staticmethod
    def _snapshot(chat: state.ChatState) -> dict[int, tuple]:
        return {cid: (c.nick, c.registered, chat.user_modes(c),
                      sorted((chat.rooms[f].name, status) for f, status in
                             ((f, r.members.get(cid)) for f, r in c.joined.items())))
                for cid, c in chat.clients.items()}

    @invariant()
    def lines_go_to_clients_that_exist(self):
        if hasattr(self, "st"):
            assert self.out.targets <= self.before | set(self.st.clients)

    @invariant()
    def registry_rooms_and_members_agree(self):
        if not hasattr(self, "st"):
            return
        chat = self.st
        for folded, client in chat.nicks.items():
            assert chat.clients.get(client.cid) is client
            assert protocol.casefold(client.nick) == folded
        named = [c for c in chat.clients.values() if c.nick]
        assert len(chat.nicks) == len(named)
        for client in chat.clients.values():
            assert client.registered <= bool(client.nick)
            for folded, room in client.joined.items():
                assert chat.rooms.get(folded) is room and client.cid in room.members
        for folded, room in chat.rooms.items():
            assert room.members, f"empty room {room.name} still exists"
            assert protocol.casefold(room.name) == folded
            for cid, status in room.members.items():
                assert cid in chat.clients, f"{room.name} holds departed client {cid}"
                assert chat.clients[cid].joined.get(folded) is room
                assert chat.clients[cid].registered
                assert status == state.rooms.status_string(status)
            assert len(room.bans) <= self.settings.bans_per_room
            # a made-up REREGISTER may claim rooms beyond the bounds: restored, not refused
            assert self.odd or len(room.members) <= self.settings.members_per_room
        assert self.odd or len(chat.rooms) <= self.settings.max_rooms
        registered = [c for c in chat.clients.values() if c.registered]
        assert chat.counts() == (len(registered), len(chat.rooms))
        for letter in state.USER_MODES:
            assert chat.mode_counts[letter] == sum(letter in c.modes for c in registered)

    @invariant()
    def each_worker_knows_its_own_identity(self):
        """The worker's Session, kept only from UPDATE frames, matches the broker's view."""
        if not hasattr(self, "st"):
            return
        for cid, session in self.sessions.items():
            client = self.st.clients.get(cid)
            if client is None:
                continue
            assert session.nick == client.nick
            assert session.registered == client.registered
            if client.registered:
                assert session.rooms == self.st.room_statuses(client)
                assert set(session.modes) == client.modes
                assert session.away == client.away


ChatStateMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("FORKCHAT_STATE_EXAMPLES", "150")),
    stateful_step_count=60, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestChatState = ChatStateMachine.TestCase
