"""`python -m forkchat` and the forkchat-server command run the server."""

import signal

# The signals the supervisor acts on (cli.HELD_SIGNALS), held before the
# CLI's own imports: those take some 50-70 ms of the start, in which SIGHUP
# or SIGUSR1 ended the server by their default action, and Ctrl+C printed a
# traceback.  cli.main lets them through again where it does not serve.
_HELD_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)


def main() -> int:
    signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
    from forkchat import cli
    return cli.main()


if __name__ == "__main__":
    raise SystemExit(main())
