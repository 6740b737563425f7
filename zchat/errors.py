"""Every exception zchat raises, under one root, and the one map to exit codes.

A caller catches :class:`ZchatError` and has caught everything zchat means to
raise; :func:`exit_code` turns any of them into the command line's exit code.
Errors carry data (``code``, ``limit``, ``size``), not only a message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

#: Exit codes of every ``zchat`` command: 2 is bad usage (typer's own).
EXIT_OK: Final = 0
EXIT_REFUSED: Final = 1
EXIT_USAGE: Final = 2
EXIT_NO_BROKER: Final = 3


class ZchatError(Exception):
    """Base of every error zchat raises on purpose."""


class ProtocolError(ZchatError):
    """The one error of the protocol layer; the broker turns it into an ``error`` envelope.

    ``code`` is one of :class:`zchat.protocol.ErrorCode`; ``data`` holds the
    envelope's extra fields (``limit``, ``size``, ...).
    """

    def __init__(self, code: str, reason: str, **data: Any) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.data = data
        #: The ``id`` of the command that failed, if it could be read.
        self.ref: str | None = None


class MessageTooLarge(ProtocolError):
    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(
            "too_large", f"{what} is {size} bytes, limit {limit}", size=size, limit=limit
        )
        self.size = size
        self.limit = limit


class SecurityError(ZchatError):
    """A key file or directory is unusable; the message is one line for a person."""


class StartError(ZchatError):
    """The broker could not start; the message says why, for a person."""


class ConnectTimeout(ZchatError):
    def __init__(self, router: str, pub: str, timeout: float, hint: str | None = None) -> None:
        if hint:
            message = f"no session with the broker at {router} within {timeout:g}s: {hint}"
        else:
            message = f"no broker answered at {router} (pub {pub}) within {timeout:g}s"
        super().__init__(message)
        self.router = router
        self.pub = pub
        self.timeout = timeout
        self.hint = hint


class BrokerError(ZchatError):
    """The broker answered a command with an ``error`` envelope."""

    def __init__(self, code: str, reason: str, data: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.data = dict(data or {})


class NotConnected(ZchatError):
    """No connection to the broker to send on (it is down, or restarting)."""


class Unregistered(BrokerError):
    """The broker no longer knows this client (it restarted); registering again."""


class RegistrationError(BrokerError):
    """``hello`` was refused: ``nick_taken``, ``bad_nick``, ``full``, ..."""


class ClosedError(ZchatError):
    """The client was closed."""


class NoAnswer(ZchatError):
    """No broker answered a one-shot probe (``ping``, ``stats``) in time."""


class UsageError(ZchatError):
    """A person asked for something that cannot work (bad option, bad file)."""


def exit_code(exc: BaseException) -> int:
    """The exit code for an error that ends a command: the one map for every command."""
    if isinstance(exc, ConnectTimeout | NoAnswer):
        return EXIT_NO_BROKER
    if isinstance(exc, UsageError):
        return EXIT_USAGE
    return EXIT_REFUSED
