"""Listen addresses as the configuration writes them, checked before any bind.

A [[listen]] address that can never be bound used to pass --check-config
("configuration OK") and stop the server at start with "Name or service
not known" (exit 1).  These checks need no socket and no name lookup: a
host name that does not resolve is still found only by bind().
"""

from __future__ import annotations

import ipaddress
import re

# RFC 1123 host names: dot-separated labels of letters, digits and hyphens.
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
# Text the C library reads as an IPv4 number (inet_aton(3), as bind()'s
# name lookup does): parts that are decimal, octal (a leading 0) or
# hexadecimal (0x) numbers.  "0x7f.1" passed as a host name and bound
# 127.0.0.1, while "127.1" was refused: only the dotted quad of four
# decimal numbers is an IPv4 address here, the rest of these are errors.
_NUMBER = r"(?:[0-9]+|0[xX][0-9A-Fa-f]+)"   # ("0x" alone is a name to it)
_DOTTED_NUMBERS = re.compile(rf"^{_NUMBER}(?:\.{_NUMBER})*\.?$|^[0-9.]+$")
NOT_A_DOTTED_QUAD = "in dotted-quad form (four decimal numbers from 0 to 255, as in 127.0.0.1)"
MAX_HOST_NAME = 253
# Binding these takes the port on every address: 0.0.0.0 (and Python's "")
# on every IPv4 one, and "::", bound dual-stack here, on every address at all.
EVERY_IPV4 = frozenset({"0.0.0.0", ""})
EVERY_ADDRESS = "::"
BAD_ADDRESS = "must be an IP address or a host name, such as 0.0.0.0, :: or chat.example.org"


def problem(address: str) -> str | None:
    """Why `address` can never be bound, or None.

    IPv4 addresses (other than "") and IPv6 ones must be valid literals, an
    IPv4 one in dotted-quad form (text of numbers and dots, or the
    hexadecimal numbers inet_aton(3) reads, is taken for one); any other
    text must be a host name.  The listener's socket family is chosen
    by whether the text holds a colon, so brackets and a port are errors
    (an IPv6 address has at least two colons).
    """
    if address == "":
        return None
    if address.startswith("[") and address.endswith("]"):
        return "an IPv6 address is written without brackets here, as in \"::1\""
    if address.count(":") == 1:
        return f"{address!r}: the port goes in the port key, the address alone here"
    if ":" in address or _DOTTED_NUMBERS.match(address):
        try:
            ipaddress.ip_address(address)
        except ValueError:
            if ":" in address:
                return f"{address!r} is not an IPv6 address"
            return f"{address!r} is not an IPv4 address {NOT_A_DOTTED_QUAD}"
        return None
    name = address.removesuffix(".")
    if len(name) > MAX_HOST_NAME or not all(_LABEL.match(label) for label in name.split(".")):
        return f"{address!r}: {BAD_ADDRESS}"
    return None


def same(first: str, second: str) -> bool:
    """Whether two address texts name one address ("::1" and "0::1" do)."""
    try:
        return ipaddress.ip_address(first) == ipaddress.ip_address(second)
    except ValueError:
        return first.lower().rstrip(".") == second.lower().rstrip(".")


def covers(wide: str, other: str) -> bool:
    """Whether listening on `wide` takes the port of `other` as well."""
    if same(wide, EVERY_ADDRESS):
        return True
    return wide in EVERY_IPV4 and ":" not in other


def clash(first: tuple[str, int], second: tuple[str, int]) -> bool:
    """Whether two (address, port) listeners cannot both be bound; port 0
    picks a free port each time, so it never clashes."""
    (address, port), (other, other_port) = first, second
    if port != other_port or port == 0:
        return False
    return same(address, other) or covers(address, other) or covers(other, address)
