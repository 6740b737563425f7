"""One-shot questions to a broker without registering: ``ping`` (is it alive?) and
``stats`` (its counters). Sync pyzmq, linger 0, a private context: every call
returns within its timeout, always.

A ping is answered ``error not_registered`` by the broker's own state machine,
which is the liveness a health check wants (a bound port alone would not show it).
"""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

import zmq

from zchat.curve import CurveKeys, apply_client
from zchat.errors import NoAnswer, ProtocolError, UsageError
from zchat.handshake import HandshakeWatch
from zchat.protocol.commands import Command, Ping, Stats, to_wire
from zchat.protocol.decode import decode_event
from zchat.protocol.events import BrokerEvent, StatsReply
from zchat.protocol.wire import pack, unpack


@dataclass(frozen=True, slots=True)
class PingReply:
    """The broker's answer and the round trip, in seconds."""

    elapsed: float
    #: The decoded reply; None if it was not a valid envelope (still an answer).
    event: BrokerEvent | None

    def describe(self) -> str:
        what = "?" if self.event is None else self.event.type
        code = getattr(self.event, "code", None)
        if isinstance(code, str):
            what = f"{what} {code}"
        return f"answered in {self.elapsed * 1000:.1f} ms ({what})"


class Probe:
    """A DEALER that asks one broker one-shot questions; answers to older asks are skipped."""

    def __init__(
        self, router: str, *, timeout: float = 2.0, curve: CurveKeys | None = None
    ) -> None:
        self.router = router
        self.timeout = timeout
        self._context: zmq.Context[Any] = zmq.Context()
        self._sock: zmq.Socket[bytes] = self._context.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        apply_client(self._sock, curve)
        self._curve = curve is not None
        # A broker that refuses our handshake answers nothing: its events say why.
        self._watch = HandshakeWatch(self._sock)
        try:
            self._sock.connect(router)
        except zmq.ZMQError as exc:
            self.close()
            raise UsageError(f"bad endpoint {router!r}: {exc}") from None
        self._prefix = secrets.token_hex(4)
        self._n = 0

    def _ask(self, make: type[Ping] | type[Stats]) -> tuple[float, BrokerEvent | None]:
        """Send until an answer to this ask arrives: (seconds, reply); :class:`NoAnswer` else.

        The ask is sent again with a growing pause: a broker rations its answers
        to unregistered peers, so one lost answer must not fail a health check.
        Not IMMEDIATE: a first send queues until the connection is up.
        """
        start = time.monotonic()
        deadline = start + self.timeout
        pause = 0.25
        while (left := deadline - time.monotonic()) > 0:
            self._n += 1
            ref = f"{self._prefix}-{self._n}"
            command: Command = make(id=ref)
            with contextlib.suppress(zmq.Again):
                self._sock.send(pack(to_wire(command)), zmq.NOBLOCK)
            wait_until = time.monotonic() + min(pause, left)
            while (wait := wait_until - time.monotonic()) > 0:
                if not self._sock.poll(int(wait * 1000) + 1):
                    break
                try:
                    event = decode_event(unpack(self._sock.recv()))
                except ProtocolError:
                    event = None  # garbage: still an answer to a ping
                # For a ping any answer proves life; stats must answer this ask.
                if make is Ping or getattr(event, "re", None) == ref:
                    return time.monotonic() - start, event
            pause *= 2
        hint = self._watch.diagnose(curve=self._curve)
        if hint is not None:
            raise NoAnswer(f"the broker at {self.router} answered nothing: {hint}")
        raise NoAnswer(f"no broker answered at {self.router} within {self.timeout:g}s")

    def ping(self) -> PingReply:
        return PingReply(*self._ask(Ping))

    def stats(self) -> dict[str, Any]:
        """The broker's ``stats`` reply as a map (protocol fields left out)."""
        _, event = self._ask(Stats)
        if not isinstance(event, StatsReply):
            raise NoAnswer(f"the broker at {self.router} sent no stats")
        return dict(event.stats)

    # ``zchat stats --watch`` asks the same probe again and again.
    ask = stats

    def close(self) -> None:
        self._watch.close()
        self._context.destroy(linger=0)


def ping(router: str, timeout: float = 2.0, *, curve: CurveKeys | None = None) -> PingReply:
    """Ping the broker's ROUTER at ``router``; raises :class:`NoAnswer` within ``timeout``."""
    probe = Probe(router, timeout=timeout, curve=curve)
    try:
        return probe.ping()
    finally:
        probe.close()
