import pytest

from forkchat.flood import TokenBucket


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_burst_then_rate():
    clock = Clock()
    bucket = TokenBucket(burst=3, rate=2.0, clock=clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_time() == 0.5
    clock.now += 0.5
    assert bucket.take() and not bucket.take()


def test_bucket_never_exceeds_burst():
    clock = Clock()
    bucket = TokenBucket(burst=2, rate=10.0, clock=clock)
    clock.now += 1000
    assert [bucket.take() for _ in range(3)] == [True, True, False]


def test_window_limit_allows_count_then_names_the_wait():
    from forkchat.flood import WindowLimit
    clock = Clock()
    limit = WindowLimit(count=2, window=20.0, clock=clock)
    assert limit.wait_time() == 0.0
    limit.record()
    clock.now += 5
    limit.record()
    assert limit.wait_time() == 15.0          # until the first change is 20 s old
    clock.now += 15
    assert limit.wait_time() == 0.0           # the first is 20 s old: one more may go
    limit.record()
    assert limit.wait_time() == 5.0           # the second one is now the oldest


def test_window_limit_forgets_what_it_no_longer_needs():
    from forkchat.flood import WindowLimit
    clock = Clock()
    limit = WindowLimit(count=3, window=1.0, clock=clock)
    for _ in range(1000):
        limit.record()
    assert len(limit._stamps) == 3


def test_a_cost_takes_that_many_tokens_and_at_most_a_burst():
    clock = Clock()
    bucket = TokenBucket(burst=5, rate=1.0, clock=clock)
    assert bucket.take(3) and not bucket.take(3)
    assert bucket.wait_time(3) == 1.0
    assert bucket.wait_time(0) == 0.0 and bucket.take(0)
    clock.now += 10
    assert bucket.take(50)                    # more than a burst costs a whole one
    assert bucket.wait_time(50) == 5.0


@pytest.mark.parametrize("line,rooms", [
    ("JOIN #a", 1), ("JOIN #a,#b,,#c key", 3), ("JOIN 0", 50), ("PART #a,#b :bye", 2),
    ("PART ,", 0), ("PRIVMSG #a,#b :hi", 0), ("NICK x", 0), ("JOIN", 0),
])
def test_rooms_named_by_a_line(line, rooms):
    from forkchat import commands, protocol
    assert commands.rooms_named(protocol.parse_line(line.encode()), 50) == rooms
