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

from tests.support.server import spawner_pid

# What cli imports before the processes start (see cli.main).
SERVER_IMPORTS = ("forkchat.cli", "forkchat.broker", "forkchat.supervisor",
                  "forkchat.worker", "forkchat.spawner")


def test_the_server_does_not_import_random():
    code = (f"import sys\nfor name in {SERVER_IMPORTS!r}: __import__(name)\n"
            "print(sorted({'random', 'secrets'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]"


# Shared objects no process of the server uses.  Each one the supervisor
# loads is in the spawner's address space too, and every fork of a worker
# copies its five mappings (and the pages of the two it wrote to): argparse
# found the terminal's width through shutil, which loads all of these.
# (libz stays: binascii, which ssl needs through base64, links it.)
UNUSED_SHARED_OBJECTS = ("zlib.", "_bz2.", "_lzma.", "libbz2.", "liblzma.")
UNUSED_MODULES = ("shutil", "zlib", "bz2", "lzma", "_compression")


def test_the_start_imports_no_compressor():
    """What cli.main does before it serves: its imports and the command line."""
    code = (f"import sys\nfor name in {SERVER_IMPORTS!r}: __import__(name)\n"
            "from forkchat import cli\n"
            "args = cli.build_parser().parse_args(['-l', '127.0.0.1:0', '--name', 'x'])\n"
            "cli.loader(args)()\n"
            f"print(sorted(set({UNUSED_MODULES!r}) & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_the_spawner_maps_no_unused_shared_object(make_server):
    """In a new interpreter (the test zygote has imported more than the
    server does), as the server's own start leaves the spawner."""
    server = make_server(env={"FORKCHAT_TEST_ZYGOTE": "0"})
    with open(f"/proc/{spawner_pid(server)}/maps") as maps:
        mapped = {line.split()[-1].rsplit("/", 1)[-1] for line in maps if "/" in line}
    assert any(name.startswith("libpython") or name.startswith("python") for name in mapped)
    found = sorted(name for name in mapped if name.startswith(UNUSED_SHARED_OBJECTS))
    assert found == []
