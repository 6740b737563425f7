"""Is a broker alive? One ``ping`` envelope on a fresh DEALER, any reply proves it.

The probe does not register, so a broker answers ``error not_registered``:
that answer comes from the broker's own state machine, which is the liveness
a health check wants (a bound port alone would not show it). Sync pyzmq,
linger 0 and a private context: it returns within the timeout, always.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import zmq

from zchat.protocol import ProtocolError, pack, unpack

if TYPE_CHECKING:
    from zchat.client import CurveKeys


class PingError(Exception):
    """The probe could not even be sent (a malformed endpoint, say)."""


@dataclass(frozen=True, slots=True)
class PingReply:
    """The broker's answer and the round trip, in seconds."""

    elapsed: float
    #: The decoded reply; empty if it was not a valid envelope (still an answer).
    envelope: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        kind = self.envelope.get("type", "?")
        code = self.envelope.get("code")
        what = f"{kind} {code}" if isinstance(code, str) else str(kind)
        return f"answered in {self.elapsed * 1000:.1f} ms ({what})"


def ping(router: str, timeout: float = 2.0, *, curve: CurveKeys | None = None) -> PingReply | None:
    """Ping the broker's ROUTER at ``router``; None if nothing answered within ``timeout``.

    A CURVE broker needs ``curve`` keys: without them its handshake fails and
    nothing answers.

    The ping is sent again with a growing pause: a broker rations its answers
    to unregistered peers, so one lost answer must not fail a health check.
    """
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            sock.setsockopt(zmq.CURVE_SERVERKEY, curve.server_public)
            sock.setsockopt(zmq.CURVE_PUBLICKEY, curve.public)
            sock.setsockopt(zmq.CURVE_SECRETKEY, curve.secret)
        try:
            sock.connect(router)
        except zmq.ZMQError as exc:
            raise PingError(f"bad endpoint {router!r}: {exc}") from None
        start = time.monotonic()
        deadline = start + timeout
        pause = 0.25
        n = 0
        while (left := deadline - time.monotonic()) > 0:
            n += 1
            ref = f"ping-{secrets.token_hex(4)}-{n}"
            # Not IMMEDIATE: queued before the connection is up, sent once it is.
            with contextlib.suppress(zmq.Again):
                sock.send(pack({"type": "ping", "id": ref}), zmq.NOBLOCK)
            if sock.poll(int(min(pause, left) * 1000) + 1):
                frame = sock.recv()
                elapsed = time.monotonic() - start
                try:
                    envelope = unpack(frame)
                except ProtocolError:
                    envelope = {}
                return PingReply(elapsed, envelope)
            pause *= 2
        return None
    finally:
        ctx.destroy(linger=0)
