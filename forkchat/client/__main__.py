"""`python -m forkchat.client` runs the client, as `python -m forkchat` runs the server."""

from forkchat.client import app

raise SystemExit(app.main())
