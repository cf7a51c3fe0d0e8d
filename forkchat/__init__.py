"""forkchat: a process-per-client IRC chat server and terminal client."""

__version__ = "0.1.0"
