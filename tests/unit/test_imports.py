"""What the server imports before it forks matters to every worker.

A module that registers an at-fork handler (os.register_at_fork) makes
every fork run it in the child: `random` reseeds its generator there,
about 40 pages of the worker copied from its spawner and 85 us of its
start, for a generator no worker uses.  The supervisor imported it only
through `secrets`, for the broker's socket name.
"""

from __future__ import annotations

import subprocess
import sys

# What cli imports before the processes start (see cli.main).
SERVER_IMPORTS = ("forkchat.cli", "forkchat.broker", "forkchat.supervisor",
                  "forkchat.worker", "forkchat.spawner")


def test_the_server_does_not_import_random():
    code = (f"import sys\nfor name in {SERVER_IMPORTS!r}: __import__(name)\n"
            "print(sorted({'random', 'secrets'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]"
