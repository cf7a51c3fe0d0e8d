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
