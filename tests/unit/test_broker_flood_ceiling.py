"""The broker's flood control of workers keeps to the highest flood_rate and
flood_burst since the server started, which the supervisor keeps.

A worker keeps the flood control it was started with (forkchat.toml(5):
the limits of a connection are those of when it was accepted); a broker
that went by the running configuration held the workers started before a
reload that lowered them below their own pace, once it made their buckets
anew.  The highest of all is what no worker of ours goes beyond, and no
more than the server ever allowed one (forkchat(7)).
"""

from __future__ import annotations

from forkchat import config, ipc, supervisor


def limits(rate: float, burst: int) -> config.Config:
    return config.Config(limits=config.Limits(flood_rate=rate, flood_burst=burst))


def test_each_reload_tells_the_broker_the_highest_limits_since_the_start():
    loads = iter([limits(1.0, 20), limits(3.0, 1)])
    targets = supervisor.Targets(broker=lambda *args: None, worker=lambda *args: None)
    boss = supervisor.Supervisor(limits(10.0, 5), targets, reload=lambda: next(loads))
    frames: list[bytes] = []
    boss._send_broker = frames.append
    boss.start_spawner = lambda: True
    started: list[tuple] = []

    def start(kind, target, args, peer="", cid=0):
        started.append(args)
        return supervisor.Child(kind, 1, None, -1)
    boss._start = start
    try:
        boss.handle_sighup()
        boss.handle_sighup()
        assert boss.cfg.limits.flood_rate == 3.0 and boss.cfg.limits.flood_burst == 1
        ceilings = [message for kind, payload in ipc.FrameReader().feed(b"".join(frames))
                    if kind == ipc.Kind.CONTROL
                    and (message := ipc.decode_json(payload))["op"] == "flood_ceiling"]
        assert ceilings == [{"op": "flood_ceiling", "rate": 10.0, "burst": 20}] * 2
        assert boss.spawn_broker()          # a broker started after them (a crash's)
        assert started[-1][-2] == (10.0, 20)
    finally:
        if boss.broker_control is not None:
            boss.broker_control.close()
        boss.broker_listener.close()
        boss.selector.close()



def test_what_a_link_may_hold_behind_its_scan_follows_the_highest_limits():
    """After a reload that lowered the limits, a client accepted before it,
    talking at its own pace while its scan waited, passed the bound on what
    it may send behind the scan, and the scan was answered 263 at once."""
    from types import SimpleNamespace

    from forkchat import broker, protocol
    lowered = SimpleNamespace(cfg=limits(1.0, 1), flood_ceiling=(10.0, 20))
    lines = 20 + 10.0 * broker.SCAN_WAIT_S
    assert broker.Broker._held_limit(lowered) == \
        int(2 * lines * (protocol.MAX_LINE_BYTES + ipc.HEADER.size))


def test_the_broker_takes_the_ceiling_the_supervisor_sends(tmp_path):
    """A reload that raised the limits: the workers started after it pass
    their client's lines at the new pace, and the buckets the broker makes
    from then on keep to it (a broker that ignored the word held them to
    the limits it was started with)."""
    import selectors
    import socket

    from forkchat import broker
    socks = [*socket.socketpair(), *socket.socketpair()]
    cfg = config.Config(server=config.Server(state_dir=str(tmp_path)),
                        limits=config.Limits(flood_rate=1.0, flood_burst=2))
    made = broker.Broker(socks[0], socks[2], cfg, "today")
    try:
        assert made.flood_ceiling == (1.0, 2)
        socks[3].sendall(ipc.encode_json(ipc.Kind.CONTROL,
                                         {"op": "flood_ceiling", "rate": 5.0, "burst": 30}))
        made.on_control(selectors.EVENT_READ)
        bucket = made._bucket(4242)
        assert (bucket.burst, bucket.rate) == (
            broker.FLOOD_MARGIN * 30 + broker.FLOOD_OWN_FRAMES, broker.FLOOD_MARGIN * 5.0)
    finally:
        made.selector.close()
        for sock in socks:
            sock.close()
