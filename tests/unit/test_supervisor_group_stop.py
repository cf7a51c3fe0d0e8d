"""A SIGTERM to the whole process group: the broker may die of its copy
before the supervisor reads its own, while a worker's end is settled in the
same turn.  Telling that end to the dead broker fails; with the stop still
unread, that failure was a 'cannot reach the broker' warning at a clean
stop (tests/faults/test_ops_group_sigterm.py saw it 2 times in 25)."""

from __future__ import annotations

import logging
import os
import signal
import socket

from forkchat import config, signals, supervisor


def test_a_worker_ended_by_the_group_sigterm_is_no_warning_at_the_dead_broker(caplog):
    targets = supervisor.Targets(broker=lambda *args: None, worker=lambda *args: None)
    boss = supervisor.Supervisor(config.Config(), targets)
    control, dead_end = socket.socketpair()
    dead_end.close()                             # the broker died of its copy
    boss.broker_control = control
    boss.broker_out = supervisor.ipc.FrameWriter(control, supervisor.ipc.CONTROL_QUEUE_BYTES)
    boss.broker_pid = 4242
    boss.children[4242] = supervisor.Child("broker", 4242, None, -1)   # not reaped yet
    handlers = {signum: signal.getsignal(signum) for signum in supervisor.SIGNAL_ACTIONS}
    try:
        boss._install_signals()
        os.kill(os.getpid(), signal.SIGTERM)     # ours, not read yet
        boss.admission.admitted("192.0.2.7")
        with caplog.at_level(logging.INFO, logger="forkchat.supervisor"):
            boss._worker_gone(supervisor.Child("worker", 50_001, None, -1, "192.0.2.7", 1), 0)
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
        assert boss.stopping
    finally:
        signals.uninstall()
        for signum, handler in handlers.items():     # pytest's own again
            signal.signal(signum, handler)
        boss._signal_r.close()
        boss._signal_w.close()
        control.close()
        boss.broker_listener.close()
        boss.selector.close()
