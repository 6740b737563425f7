"""zchat: a chat broker and client on ZeroMQ.

The library a bot or front end needs is here; the layers are ``zchat.protocol``
(pure), ``zchat.broker`` and ``zchat.client`` (each on the protocol, neither on
the other), ``zchat.ui`` (on the client) and ``zchat.cli`` on top.
"""

# First: decides between the compiled hot modules and their Python before any is imported.
from zchat import native  # noqa: F401
from zchat.client.client import Client
from zchat.client.events import ClientEvent, Missed, Status
from zchat.curve import CurveKeys
from zchat.errors import BrokerError, ConnectTimeout, RegistrationError, ZchatError
from zchat.protocol.events import (
    DirectMessage,
    ErrorReply,
    Event,
    Joined,
    Left,
    Message,
    NickChanged,
    TopicSet,
)

__all__ = [
    "BrokerError",
    "Client",
    "ClientEvent",
    "ConnectTimeout",
    "CurveKeys",
    "DirectMessage",
    "ErrorReply",
    "Event",
    "Joined",
    "Left",
    "Message",
    "Missed",
    "NickChanged",
    "RegistrationError",
    "Status",
    "TopicSet",
    "ZchatError",
]
__version__ = "0.1.0"
