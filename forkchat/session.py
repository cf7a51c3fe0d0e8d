"""One client's identity, as its worker knows it.

The worker owns this and nothing else of the chat.  The broker tells it of
changes (UPDATE frames); after a broker restart the worker sends it back
(REREGISTER) so the new broker can restore the client.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_USER_ALLOWED = re.compile(r"[^A-Za-z0-9_.\-]")
USERLEN = 16
# The longest host a client is shown with (client_host): an IPv6 address as
# text, and the 0 in front of one that starts with ':'.
WIDEST_HOST = 46
REALNAMELEN = 100     # characters of USER's real name kept


@dataclass
class Session:
    cid: int
    host: str
    proto: str = "irc"
    nick: str = ""
    user: str = ""
    realname: str = ""
    password: str | None = None
    cap_negotiating: bool = False
    register_sent: bool = False
    registered: bool = False
    modes: str = ""
    oper: bool = False
    away: str = ""
    rooms: dict[str, str] = field(default_factory=dict)
    oper_failures: int = 0
    oper_not_before: float = 0.0          # this connection's own wait after a failed OPER
    oper_address_not_before: float = 0.0  # its address's wait, sent by the broker (operguard)

    @property
    def target(self) -> str:
        """The nick to address numerics to ('*' before one is accepted)."""
        return self.nick or "*"

    def ready_to_register(self) -> bool:
        return (bool(self.nick) and bool(self.user) and not self.cap_negotiating
                and not self.register_sent)

    def apply(self, changes: dict[str, Any]) -> None:
        """Take an UPDATE from the broker; unknown keys are ignored."""
        for key in ("nick", "registered", "modes", "oper", "away", "rooms",
                    "oper_address_not_before"):
            if key in changes:
                setattr(self, key, changes[key])

    def identity(self) -> dict[str, Any]:
        return {"nick": self.nick, "user": self.user, "host": self.host,
                "realname": self.realname, "modes": self.modes, "away": self.away,
                "rooms": dict(self.rooms), "oper": self.oper,
                "registered": self.registered}


def client_host(peer: str) -> str:
    """The host a client is shown with: its address, and a 0 in front of one
    that starts with ':' (IPv6 ::1 becomes 0::1, the same address).

    The host is a middle parameter of 311, 314 and 352, where a leading ':'
    starts the trailing text: '::1' reached clients as '1', and a ban that
    irssi builds from WHO (/ban nick gave *!*@1) matched nobody.  The prefix
    carries the same spelling, so WHO, WHOIS and every line agree, as with
    hybrid and charybdis.
    """
    return "0" + peer if peer.startswith(":") else peer


def clean_user(user: str) -> str:
    """A username safe to put in a prefix: no '@', '!', spaces or controls."""
    return _USER_ALLOWED.sub("", user)[:USERLEN] or "user"
