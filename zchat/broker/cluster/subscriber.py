"""A cluster node's subscription connection to Redis: what the other nodes publish.

The broker's loop polls :meth:`Subscriber.fileno` beside its ROUTER and reads
what arrived with :meth:`Subscriber.messages`, which never waits (unless told
to). Subscribing waits for Redis's confirmation, bounded by ``timeout``: the node
confirms a room's first member only once nothing published to the room can be
missed. Messages that arrive while it waits are kept, in order. Every failure is
:class:`Unavailable`; the node then opens a new subscriber.
"""

from __future__ import annotations

import select
import socket
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import hiredis

from zchat.broker.cluster.link import CHUNK, ready
from zchat.broker.cluster.records import Unavailable


class Subscriber:
    def __init__(
        self, host: str, port: int, *, auth: tuple[Any, ...] | None, timeout: float
    ) -> None:
        self._where = f"Redis at {host}:{port}"
        self._timeout = timeout
        self._reader = hiredis.Reader()
        #: (channel, data) read while waiting for a confirmation, handed out first.
        self._early: deque[tuple[bytes, bytes]] = deque()
        try:
            self._sock = socket.create_connection((host, port), timeout)
        except OSError as exc:
            raise Unavailable(f"cannot connect to {self._where}: {exc}") from None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.setblocking(False)
        if auth is not None:
            self._send(auth)
            reply = self._next(time.monotonic() + timeout)
            if isinstance(reply, hiredis.ReplyError):
                self.close()
                raise Unavailable(f"{self._where} refused AUTH: {reply}")

    def fileno(self) -> int:
        return self._sock.fileno()

    @property
    def buffered(self) -> bool:
        """Messages were read while a subscription was confirmed: the socket will not
        show them."""
        return bool(self._early)

    def subscribe(self, channels: Iterable[str]) -> None:
        """Subscribe; returns once Redis confirmed every channel."""
        waiting = set(channels)
        if not waiting:
            return
        self._send(("SUBSCRIBE", *sorted(waiting)))
        deadline = time.monotonic() + self._timeout
        while waiting:
            reply = self._next(deadline)
            kind = _kind(reply)
            if kind == b"subscribe":
                waiting.discard(reply[1].decode())
            elif kind == b"message":
                self._early.append((reply[1], reply[2]))
            elif isinstance(reply, hiredis.ReplyError):
                raise Unavailable(f"{self._where} refused SUBSCRIBE: {reply}")

    def unsubscribe(self, channels: Iterable[str]) -> None:
        """Unsubscribe (its confirmations are skipped when they come)."""
        wanted = sorted(channels)
        if wanted:
            self._send(("UNSUBSCRIBE", *wanted))

    def messages(self, limit: int, timeout: float = 0.0) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` (channel, data) pairs that arrived, in order; waits up to
        ``timeout`` for the first."""
        out: list[tuple[bytes, bytes]] = []
        while self._early and len(out) < limit:
            out.append(self._early.popleft())
        if not out and timeout > 0:
            self._readable(time.monotonic() + timeout)
        self._receive()
        while len(out) < limit and (reply := self._parsed()) is not False:
            kind = _kind(reply)
            if kind == b"message":
                out.append((reply[1], reply[2]))
            elif isinstance(reply, hiredis.ReplyError):
                raise Unavailable(f"{self._where}: {reply}")
        return out

    def close(self) -> None:
        self._sock.close()

    # ------------------------------------------------------------ inside

    def _send(self, command: tuple[Any, ...]) -> None:
        # A command is small and the socket's buffer empty but for other commands:
        # sent whole or the connection is failing.
        data = hiredis.pack_command(command)
        try:
            self._sock.settimeout(self._timeout)
            self._sock.sendall(data)
        except OSError as exc:
            raise Unavailable(f"{self._where}: {exc}") from None
        finally:
            self._sock.setblocking(False)

    def _receive(self) -> None:
        """Feed the reader what the socket has now."""
        while True:
            try:
                data = self._sock.recv(CHUNK)
            except BlockingIOError:
                return
            except OSError as exc:
                raise Unavailable(f"{self._where}: {exc}") from None
            if not data:
                raise Unavailable(f"{self._where} closed the subscription")
            self._reader.feed(data)
            if len(data) < CHUNK:
                return

    def _parsed(self) -> Any:
        """The next whole reply read, or False."""
        try:
            return self._reader.gets()
        except hiredis.ProtocolError as exc:
            raise Unavailable(f"{self._where} sent what is not RESP: {exc}") from None

    def _next(self, deadline: float) -> Any:
        """The next reply, waiting until ``deadline``."""
        while (reply := self._parsed()) is False:
            if not self._readable(deadline):
                raise Unavailable(f"no reply from {self._where} in {self._timeout:g} s")
            self._receive()
        return reply

    def _readable(self, deadline: float) -> bool:
        left = deadline - time.monotonic()
        return left > 0 and ready(self._sock, select.POLLIN, left)


def _kind(reply: Any) -> bytes | None:
    if isinstance(reply, list) and len(reply) >= 3 and isinstance(reply[0], bytes):
        return reply[0]
    return None
