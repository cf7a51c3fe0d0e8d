"""Server and operator passwords: scrypt hashes, constant-time checks.

A stored password is either plain text or `scrypt$N$r$p$salt$hash` (hex),
as printed by `forkchat-server --hash-password`.  Checking a hash costs tens
of milliseconds on purpose, so it happens in the client's worker, never in
the broker.
"""

from __future__ import annotations

import hashlib
import hmac
import os

SCRYPT_N = 16384
SCRYPT_R = 8
SCRYPT_P = 1
PREFIX = "scrypt$"


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R,
                            p=SCRYPT_P, dklen=32)
    return f"{PREFIX}{SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def is_hashed(stored: str) -> bool:
    return stored.startswith(PREFIX)


def verify(stored: str, given: str) -> bool:
    """True when `given` matches `stored` (plain or hashed)."""
    if not is_hashed(stored):
        return hmac.compare_digest(stored.encode(), given.encode())
    try:
        _, n, r, p, salt, digest = stored.split("$")
        computed = hashlib.scrypt(given.encode(), salt=bytes.fromhex(salt), n=int(n),
                                  r=int(r), p=int(p), dklen=len(digest) // 2)
    except ValueError:
        return False
    return hmac.compare_digest(computed.hex(), digest)


def valid_hash(stored: str) -> bool:
    """Whether a configured hash is well-formed (for --check-config)."""
    if not is_hashed(stored):
        return True
    parts = stored.split("$")
    if len(parts) != 6:
        return False
    try:
        return all(int(x) > 0 for x in parts[1:4]) and bool(bytes.fromhex(parts[4])) \
            and bool(bytes.fromhex(parts[5]))
    except ValueError:
        return False
