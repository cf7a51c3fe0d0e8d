"""Stand-in processes for the supervisor's unit tests."""

from __future__ import annotations

import os
import time


def idle_child() -> int:
    """A forked process that only waits (60 s at most), standing for a
    worker; it holds every descriptor the test had at the fork, as a worker
    forked for a connection holds that connection's socket.  The caller
    kills and reaps it."""
    pid = os.fork()
    if pid == 0:
        try:
            time.sleep(60)
        finally:
            os._exit(0)
    return pid
