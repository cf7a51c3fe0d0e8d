"""OPER's check in the worker: a name no operator has costs what a real one does.

Both failures are answered 464, so the time the answer takes must not tell
them apart either: a hashed password takes tens of milliseconds to check,
and an unknown name used to take none, which told which names exist.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from forkchat import commands, config, numerics, passwords, protocol
from forkchat.session import Session

HASHED = passwords.hash_password("right")


def attempt(monkeypatch, operators: tuple[config.Operator, ...], line: str) -> list[str]:
    """Run one OPER; return the stored passwords it checked the given one against."""
    checked: list[str] = []
    real_verify = passwords.verify

    def counting_verify(stored: str, given: str) -> bool:
        checked.append(stored)
        return real_verify(stored, given)

    monkeypatch.setattr(passwords, "verify", counting_verify)
    ctx = SimpleNamespace(cfg=config.Config(operators=operators),
                          session=Session(cid=1, host="192.0.2.1", nick="n", user="u"),
                          frame=lambda frame: None)
    with pytest.raises(numerics.Reply):
        commands.cmd_oper(ctx, protocol.parse_text(line))
    return checked


def test_an_unknown_name_is_checked_like_a_known_one(monkeypatch):
    operators = (config.Operator("plain", "pw"), config.Operator("admin", HASHED))
    assert attempt(monkeypatch, operators, "OPER admin wrong") == [HASHED]
    assert attempt(monkeypatch, operators, "OPER nosuch wrong") == [HASHED]


def test_plain_passwords_only_are_stood_in_by_a_plain_one(monkeypatch):
    operators = (config.Operator("admin", "pw"),)
    assert attempt(monkeypatch, operators, "OPER nosuch wrong") == ["pw"]


def test_no_operators_means_no_check(monkeypatch):
    assert attempt(monkeypatch, (), "OPER nosuch wrong") == []


def test_a_right_password_for_a_stand_in_is_still_refused(monkeypatch):
    operators = (config.Operator("admin", "pw"),)
    assert attempt(monkeypatch, operators, "OPER nosuch pw") == ["pw"]


def test_a_plain_operator_s_name_costs_what_an_unknown_one_does(monkeypatch):
    """With a hashed operator configured an unknown name costs a hash check;
    a name whose password is plain cost none, so the fast 464 told that it
    exists.  Every failure now includes one hashed check."""
    operators = (config.Operator("plain", "pw"), config.Operator("admin", HASHED))
    assert attempt(monkeypatch, operators, "OPER plain wrong") == ["pw", HASHED]
    assert attempt(monkeypatch, operators, "OPER nosuch wrong") == [HASHED]
    assert attempt(monkeypatch, (config.Operator("plain", "pw"),), "OPER plain wrong") == ["pw"]
