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
