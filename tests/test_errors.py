"""One root for every error zchat raises, and one map from errors to exit codes."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import zchat
from zchat.errors import (
    EXIT_NO_BROKER,
    EXIT_REFUSED,
    EXIT_USAGE,
    BrokerError,
    ClosedError,
    ConnectTimeout,
    MessageTooLarge,
    NoAnswer,
    NotConnected,
    ProtocolError,
    RegistrationError,
    SecurityError,
    StartError,
    Unregistered,
    UsageError,
    ZchatError,
    exit_code,
)
from zchat.protocol import ErrorCode
from zchat.ui.bot import BotError


def exception_classes() -> list[type[BaseException]]:
    """Every exception class a zchat module defines (``__main__`` would run the CLI)."""
    found: dict[str, type[BaseException]] = {}
    for module_info in pkgutil.walk_packages(zchat.__path__, "zchat."):
        if module_info.name.endswith("__main__"):
            continue
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
            ):
                found[f"{module.__name__}.{name}"] = value
    return [found[key] for key in sorted(found)]


@pytest.mark.parametrize(
    "cls", [pytest.param(cls, id=f"{cls.__module__}.{cls.__name__}") for cls in exception_classes()]
)
def test_every_exception_class_derives_from_zchat_error(cls: type[BaseException]) -> None:
    assert issubclass(cls, ZchatError)


def test_the_classes_of_the_errors_module_are_found() -> None:
    assert {ZchatError, ProtocolError, NoAnswer, UsageError} <= set(exception_classes())


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConnectTimeout("tcp://a:1", "tcp://a:2", 1.0), EXIT_NO_BROKER),
        (NoAnswer("no broker answered"), EXIT_NO_BROKER),
        (UsageError("bad option"), EXIT_USAGE),
        (BotError("a bot needs lines"), EXIT_USAGE),
        (RegistrationError(ErrorCode.NICK_TAKEN, "in use"), EXIT_REFUSED),
        (BrokerError(ErrorCode.FULL, "full"), EXIT_REFUSED),
        (Unregistered(ErrorCode.NOT_REGISTERED, "restarted?"), EXIT_REFUSED),
        (ProtocolError(ErrorCode.BAD_NICK, "nick must be 1 to 32 characters"), EXIT_REFUSED),
        (MessageTooLarge("text", 5000, 4096), EXIT_REFUSED),
        (SecurityError("key file unreadable"), EXIT_REFUSED),
        (StartError("cannot start the broker"), EXIT_REFUSED),
        (NotConnected("not connected"), EXIT_REFUSED),
        (ClosedError("closed"), EXIT_REFUSED),
        (ZchatError("anything else"), EXIT_REFUSED),
    ],
)
def test_exit_codes(error: ZchatError, code: int) -> None:
    assert exit_code(error) == code


def test_errors_carry_their_data() -> None:
    too_large = MessageTooLarge("frame", 70_000, 65_536)
    assert (too_large.code, too_large.size, too_large.limit) == ("too_large", 70_000, 65_536)
    assert too_large.data == {"size": 70_000, "limit": 65_536}
    refused = RegistrationError(ErrorCode.RATE_LIMITED, "slow down", {"limit": 20})
    assert (refused.code, refused.reason, refused.data) == (
        "rate_limited",
        "slow down",
        {"limit": 20},
    )
    assert str(refused) == "rate_limited: slow down"
