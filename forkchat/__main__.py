"""`python -m forkchat` runs the server."""

from forkchat import cli

raise SystemExit(cli.main())
