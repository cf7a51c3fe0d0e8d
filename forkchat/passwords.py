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
# The memory a check may take (OpenSSL's own default is 32 MiB): a hash whose
# parameters need more is refused by --check-config, not found out at OPER.
SCRYPT_MAXMEM = 64 * 1024 * 1024
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
        _, n_text, r_text, p_text, salt, digest = stored.split("$")
        n, r, p = int(n_text), int(r_text), int(p_text)
        if not usable_parameters(n, r, p):
            return False
        computed = hashlib.scrypt(given.encode(), salt=bytes.fromhex(salt), n=n, r=r, p=p,
                                  dklen=len(digest) // 2, maxmem=SCRYPT_MAXMEM)
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
        n, r, p = (int(x) for x in parts[1:4])
        return usable_parameters(n, r, p) and bool(bytes.fromhex(parts[4])) \
            and bool(bytes.fromhex(parts[5]))
    except ValueError:
        return False


def usable_parameters(n: int, r: int, p: int) -> bool:
    """Whether scrypt can check a password with these: N a power of two above
    1 and below 2**(16 r) (OpenSSL's rule), and the memory it needs
    (128 r (N + p + 2) bytes) within SCRYPT_MAXMEM."""
    return (n > 1 and n & (n - 1) == 0 and r > 0 and p > 0
            and n.bit_length() - 1 < 16 * r          # log2(N) < 16 r, no huge shift
            and 128 * r * (n + p + 2) <= SCRYPT_MAXMEM)
