"""Handshake events of a socket: why a connection never worked ("wrong key", "needs CURVE")."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

_VERDICTS = (
    zmq.EVENT_HANDSHAKE_SUCCEEDED,
    zmq.EVENT_HANDSHAKE_FAILED_AUTH,
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
)


class HandshakeWatch:
    """Handshake events of one socket, to say why a connection never worked.

    Attach before ``connect``; :meth:`diagnose` reads what happened so far
    without waiting. Always :meth:`close` it before the socket's context ends.
    """

    def __init__(self, sock: zmq.Socket[Any]) -> None:
        self._sock = sock
        self._address = f"inproc://zchat-handshake-{id(self):x}-{time.monotonic_ns()}"
        sock.monitor(self._address, zmq.EVENT_CONNECTED | sum(_VERDICTS))
        # A plain socket on the same context, even for an asyncio socket: we
        # only ever read it without blocking.
        self._mon: zmq.Socket[bytes] | None = zmq.Context.shadow(sock.context.underlying).socket(
            zmq.PAIR
        )
        self._mon.setsockopt(zmq.LINGER, 0)
        self._mon.connect(self._address)
        self.events: list[tuple[int, int]] = []

    def _read(self, timeout: float = 0.0) -> bool:
        if self._mon is None or not self._mon.poll(int(timeout * 1000)):
            return False
        while True:
            try:
                frames = self._mon.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return True
            event = parse_monitor_message(frames)
            self.events.append((int(event["event"]), int(event["value"])))

    def wait(self, timeout: float) -> int | None:
        """Block until a handshake verdict (an ``EVENT_HANDSHAKE_*``) or the deadline."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self._read(left)
            for event, _ in self.events:
                if event in _VERDICTS:
                    return event
        return None

    def diagnose(self, *, curve: bool) -> str | None:
        """A hint for a person about why no broker answered, if the events tell."""
        self._read()
        kinds = {event for event, _ in self.events}
        if zmq.EVENT_HANDSHAKE_FAILED_AUTH in kinds:
            return "the broker refused our key: ask its operator to allow our .key file"
        if zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL in kinds:
            if curve:
                return "the broker does not use CURVE: drop --server-key"
            return "the broker requires CURVE encryption: pass --server-key FILE"
        if zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL in kinds:
            if curve:
                return "the CURVE handshake failed: is --server-key the broker's public key?"
            return "the handshake failed: does the broker require --server-key?"
        if zmq.EVENT_HANDSHAKE_SUCCEEDED in kinds:
            return None
        if zmq.EVENT_CONNECTED in kinds:
            return "connected, but no handshake completed"
        return None

    def close(self) -> None:
        if self._mon is None:
            return
        with contextlib.suppress(zmq.ZMQError):  # the socket may be closed already
            self._sock.disable_monitor()
        self._mon.close(0)
        self._mon = None
