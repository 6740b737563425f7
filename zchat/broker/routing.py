"""Routing ids a peer cannot predict, and the ones a peer plainly chose.

libzmq gives each ROUTER peer that sets no ``ZMQ_ROUTING_ID`` the id
``0x00`` + a 32-bit counter, and aborts the whole process
(``Assertion failed: ok (src/socket_base.cpp:2113)``) when the next id it
generates is already held by a peer that chose it. The counter starts at
``rand() | rand() << 31`` (libzmq's ``generate_random``), read when the ROUTER
is created, and nothing seeds libc's ``rand``: every broker starts at
``0x6b8b4567``, and anyone can squat the ids the next clients will get.

Refusing chosen ids during the handshake is not possible with libzmq 4.3.5:
the ZAP request's identity frame is the ROUTER's own routing id, not the
peer's, and the peer's id reaches the broker only with its messages (a
squatter need send none). The ``Identity`` property of a message cannot tell
either: it is read as a C string, empty for an id that begins with a zero byte.
So the counter's start is made secret instead, from 32 random bits, just
before the ROUTER exists.
"""

from __future__ import annotations

import ctypes
import logging
import secrets

log = logging.getLogger("zchat.broker")

#: Length of the routing ids libzmq generates: a zero byte, then a 32-bit counter.
GENERATED_LENGTH = 5


def seed_routing_ids() -> bool:
    """Seed libc's ``rand`` (which libzmq reads for a new ROUTER's first routing id)
    with 32 secret random bits. False if libc could not be reached."""
    try:
        libc = ctypes.CDLL(None)
        libc.srand(ctypes.c_uint(secrets.randbits(32)))
    except (OSError, AttributeError) as exc:
        log.warning("routing ids stay predictable (cannot seed libc rand: %s)", exc)
        return False
    return True


def chosen(peer: bytes) -> bool:
    """True for a routing id libzmq cannot have generated: the peer chose it."""
    return len(peer) != GENERATED_LENGTH or peer[0] != 0
