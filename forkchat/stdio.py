"""Standard output that may not be writable, for both programs' commands
that only answer (--help, --version, --check-config, --hash-password)."""

from __future__ import annotations

import os
import sys

EXIT_FAILURE = 1


def write_out(program: str, text: str) -> int:
    """Write `text` on standard output: 0, or EXIT_FAILURE with one line on
    standard error, named for `program`, when it cannot be written (a full
    disk, a pipe whose reader has gone).

    The bytes go straight to descriptor 1: a write error left in print's
    buffer comes back at exit, as an "Exception ignored" line.
    """
    data = text.encode()
    try:
        sys.stdout.flush()
        while data:
            data = data[os.write(sys.stdout.fileno(), data):]
    except OSError as error:
        print(f"{program}: cannot write to standard output: {error.strerror or error}",
              file=sys.stderr)
        return EXIT_FAILURE
    return 0
