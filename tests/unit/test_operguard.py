"""The address-wide OPER back-off: operguard's records, the broker that keeps
them, and cmd_oper that obeys the wait they send (no sockets to a server)."""

from __future__ import annotations

import json
import socket

import pytest

from forkchat import broker, commands, config, ipc, numerics, operguard, protocol
from forkchat.session import Session

A, B = "192.0.2.1", "192.0.2.2"
FREE = operguard.FREE_FAILURES


def fail(records, host, times, now=100.0):
    """`times` failures from `host` at `now`; the last not-before."""
    result = 0.0
    for _ in range(times):
        result = operguard.failed(records, host, now)
    return result


# -- operguard ----------------------------------------------------------------

def test_the_first_failures_start_no_wait():
    records = operguard.new_records()
    for count in range(1, FREE + 1):
        assert operguard.failed(records, A, 100.0) <= 100.0
        assert operguard.failures(records, A) == count
    assert operguard.not_before(records, A, 100.0) <= 100.0


def test_past_the_free_failures_the_wait_doubles():
    records = operguard.new_records()
    fail(records, A, FREE)
    waits = [operguard.failed(records, A, 100.0) - 100.0 for _ in range(4)]
    assert waits == [operguard.FIRST_DELAY_S * factor for factor in (1, 2, 4, 8)]
    assert operguard.not_before(records, A, 100.0) == 100.0 + waits[-1]


def test_the_wait_stops_at_the_cap_however_many_failures():
    records = operguard.new_records()
    assert fail(records, A, FREE + 5000) == 100.0 + operguard.MAX_DELAY_S
    assert operguard.delay(10 ** 6) == operguard.MAX_DELAY_S


def test_a_wait_counts_from_the_latest_failure_and_never_shrinks():
    records = operguard.new_records()
    fail(records, A, FREE + 3)                                  # 8 s from 100.0
    assert operguard.failed(records, A, 101.0) == 101.0 + 16.0
    assert operguard.delay(FREE + 1) == operguard.FIRST_DELAY_S


def test_addresses_are_counted_apart():
    records = operguard.new_records()
    fail(records, A, FREE + 1)
    assert operguard.not_before(records, A, 100.0) > 100.0
    assert operguard.not_before(records, B, 100.0) == 0.0
    assert operguard.failures(records, B) == 0


def test_a_success_forgives_the_address():
    records = operguard.new_records()
    fail(records, A, FREE + 2)
    operguard.succeeded(records, A)
    assert operguard.not_before(records, A, 100.0) == 0.0
    assert fail(records, A, FREE) <= 100.0           # free failures again
    operguard.succeeded(records, B)                  # unknown address: nothing to do


def test_records_are_forgotten_after_a_quiet_period():
    records = operguard.new_records()
    fail(records, A, FREE + 1, now=100.0)
    later = 100.0 + operguard.QUIET_S
    assert operguard.not_before(records, A, later) == 0.0
    operguard.failed(records, B, later)              # any failure sweeps the quiet ones
    assert A not in records and operguard.failures(records, A) == 0
    assert operguard.failed(records, A, later) <= later       # counting starts again


def test_failures_short_of_the_quiet_period_keep_counting():
    records = operguard.new_records()
    now = 100.0
    for _ in range(FREE):
        now += operguard.QUIET_S - 1
        operguard.failed(records, A, now)
    assert operguard.failed(records, A, now + 1) > now + 1


def test_the_wait_never_outlives_the_record():
    """Forgetting a quiet record must not cut a wait short."""
    assert operguard.MAX_DELAY_S < operguard.QUIET_S


def test_size_is_bounded_and_the_least_recent_goes(monkeypatch):
    monkeypatch.setattr(operguard, "MAX_ADDRESSES", 3)
    records = operguard.new_records()
    for index, host in enumerate(["h0", "h1", "h2"]):
        operguard.failed(records, host, 100.0 + index)
    operguard.failed(records, "h0", 104.0)           # h0 is now the most recent
    operguard.failed(records, "h3", 105.0)
    assert list(records) == ["h2", "h0", "h3"]


# -- cmd_oper in the worker -----------------------------------------------------

class FakeContext:
    """commands.Context with one operator (plain password "pw"), recording output."""

    def __init__(self) -> None:
        self.cfg = config.Config(operators=(config.Operator(name="admin", password="pw"),))
        self.session = Session(cid=1, host=A, nick="nick", user="user", registered=True)
        self.lines: list[protocol.Message] = []
        self.frames: list[tuple[int, dict]] = []

    def write(self, line: bytes) -> None:
        self.lines.append(protocol.parse_line(line.rstrip(b"\r\n")))

    def frame(self, frame: bytes) -> None:
        (kind, payload), = ipc.FrameReader().feed(frame)
        self.frames.append((kind, json.loads(payload)))


def oper(ctx: FakeContext, password: str) -> protocol.Message | None:
    ctx.lines.clear()
    commands.dispatch(ctx, protocol.parse_line(f"OPER admin {password}".encode()), b"")
    return ctx.lines[-1] if ctx.lines else None


@pytest.fixture
def hashes(monkeypatch):
    """Every password check cmd_oper makes."""
    checked: list[str] = []
    real = commands.passwords.verify

    def verify(stored: str, given: str) -> bool:
        checked.append(given)
        return real(stored, given)
    monkeypatch.setattr(commands.passwords, "verify", verify)
    return checked


def test_a_failure_is_reported_to_the_broker(hashes):
    ctx = FakeContext()
    assert oper(ctx, "wrong").command == numerics.ERR_PASSWDMISMATCH
    assert ctx.frames == [(ipc.Kind.OPER_FAILED, {"name": "admin"})]
    assert hashes == ["wrong"]


def test_the_address_wait_refuses_before_any_hash(hashes):
    ctx = FakeContext()
    ctx.session.apply({"oper_address_not_before": commands.time.monotonic() + 60})
    reply = oper(ctx, "pw")                           # even the right password
    assert reply.command == numerics.ERR_PASSWDMISMATCH
    assert reply.params[-1] == commands.OPER_ADDRESS_WAIT_TEXT.format(seconds=60)
    assert "address" in reply.params[-1]
    assert hashes == [] and ctx.frames == []


def test_the_later_wait_names_itself(hashes):
    ctx = FakeContext()
    now = commands.time.monotonic()
    ctx.session.oper_not_before = now + 120
    ctx.session.oper_address_not_before = now + 60
    assert oper(ctx, "pw").params[-1] == commands.OPER_WAIT_TEXT.format(seconds=120)
    ctx.session.oper_address_not_before = now + 240
    assert oper(ctx, "pw").params[-1] == commands.OPER_ADDRESS_WAIT_TEXT.format(seconds=240)
    assert hashes == []


def test_a_past_address_wait_lets_the_password_through(hashes):
    ctx = FakeContext()
    ctx.session.apply({"oper_address_not_before": commands.time.monotonic() - 1})
    oper(ctx, "pw")
    assert hashes == ["pw"] and ctx.frames == [(ipc.Kind.OPER, {"name": "admin"})]


# -- the broker -----------------------------------------------------------------

class BrokerHarness:
    """A Broker with no loop running: frames go in by hand, out by its links."""

    def __init__(self, tmp_path) -> None:
        self._socks: list[socket.socket] = []
        cfg = config.Config(server=config.Server(state_dir=str(tmp_path)))
        self.broker = broker.Broker(self._sock(), self._sock(), cfg, "today")
        self.peers: dict[int, socket.socket] = {}
        self.links: dict[int, broker.Link] = {}

    def _sock(self) -> socket.socket:
        mine, theirs = socket.socketpair()
        self._socks += [mine, theirs]
        return mine

    def connect(self, cid: int, host: str) -> None:
        mine, theirs = socket.socketpair()
        self._socks += [mine, theirs]
        mine.setblocking(False)
        self.peers[cid], self.links[cid] = theirs, broker.Link(mine, 1 << 20)
        self.send(cid, ipc.Kind.HELLO, {"cid": cid, "host": host, "proto": "irc"})

    def send(self, cid: int, kind: int, value: dict) -> None:
        self.broker._dispatch(self.links[cid], kind, json.dumps(value).encode())

    def waits(self, cid: int) -> list[float]:
        """The OPER waits the broker has sent `cid` since last asked."""
        self.broker._flush_dirty()
        peer = self.peers[cid]
        peer.setblocking(False)
        try:
            data = peer.recv(1 << 20)
        except BlockingIOError:
            data = b""
        return [json.loads(payload)["oper_address_not_before"]
                for kind, payload in ipc.FrameReader().feed(data)
                if kind == ipc.Kind.UPDATE and b"oper_address_not_before" in payload]

    def close(self) -> None:
        self.broker.selector.close()
        for sock in self._socks:
            sock.close()


@pytest.fixture
def harness(tmp_path):
    made = BrokerHarness(tmp_path)
    yield made
    made.close()


def test_broker_tells_every_connection_of_the_address_once_it_must_wait(harness):
    for cid, host in [(1, A), (2, A), (3, B)]:
        harness.connect(cid, host)
    for _ in range(FREE):
        harness.send(1, ipc.Kind.OPER_FAILED, {"name": "admin"})
    assert harness.waits(1) == [] and harness.waits(2) == []
    harness.send(1, ipc.Kind.OPER_FAILED, {"name": "admin"})
    told = harness.waits(2)
    assert len(told) == 1 and told[0] > commands.time.monotonic()
    assert harness.waits(1) == told and harness.waits(3) == []
    harness.connect(4, A)                           # a new connection learns it at once
    assert harness.waits(4) == told
    harness.connect(5, B)
    assert harness.waits(5) == []


def test_broker_forgives_the_address_on_a_successful_oper(harness):
    harness.connect(1, A)
    for _ in range(FREE + 1):
        harness.send(1, ipc.Kind.OPER_FAILED, {"name": "admin"})
    harness.send(1, ipc.Kind.OPER, {"name": "admin"})
    harness.connect(2, A)
    assert harness.waits(2) == []
    assert operguard.failures(harness.broker.oper_guard, A) == 0
