import pytest

from forkchat import passwords


def test_hash_verifies_only_the_right_password():
    stored = passwords.hash_password("s3cret")
    assert stored.startswith("scrypt$") and passwords.valid_hash(stored)
    assert passwords.verify(stored, "s3cret")
    assert not passwords.verify(stored, "s3cret ")


def test_plain_passwords_still_work():
    assert passwords.verify("plain", "plain") and not passwords.verify("plain", "Plain")


def test_malformed_hash_never_verifies():
    assert not passwords.valid_hash("scrypt$x$y")
    assert not passwords.verify("scrypt$1$2$3$zz$zz", "anything")


@pytest.mark.parametrize(("n", "r", "p"), [
    (3, 8, 1),                   # N not a power of two: scrypt refuses it
    (1, 8, 1),
    (1 << 20, 8, 1),             # 1 GiB of memory
    (16384, 1 << 40, 1),
    (10 ** 30, 8, 1),            # beyond a C integer
    (16384, 8, 0),
    (65536, 1, 1),               # N must be below 2**(16 r): OpenSSL refuses it
])
def test_a_hash_scrypt_cannot_check_is_malformed_and_never_matches(n, r, p):
    stored = f"scrypt${n}${r}${p}${'ab' * 16}${'cd' * 32}"
    assert not passwords.valid_hash(stored)
    assert passwords.verify(stored, "anything") is False    # and no exception


def test_the_parameters_we_write_are_usable():
    assert passwords.usable_parameters(passwords.SCRYPT_N, passwords.SCRYPT_R, passwords.SCRYPT_P)
