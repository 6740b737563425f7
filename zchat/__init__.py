"""zchat: a chat broker and client on ZeroMQ."""

from zchat.client import (
    BrokerError,
    Client,
    ConnectTimeout,
    CurveKeys,
    Event,
    RegistrationError,
    ZchatError,
)

__all__ = [
    "BrokerError",
    "Client",
    "ConnectTimeout",
    "CurveKeys",
    "Event",
    "RegistrationError",
    "ZchatError",
]
__version__ = "0.1.0"
