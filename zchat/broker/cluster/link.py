"""One connection to one Redis server that the broker's loop drives without waiting.

Commands are packed into an output buffer and written when the socket takes them;
replies are parsed as they arrive (hiredis) and handed, in order, to the
:class:`Replies` each command was sent for. The loop polls :meth:`Link.fileno`
for :attr:`Link.events` beside its ROUTER. Nothing here blocks: connecting is
non-blocking too (only the name lookup is not), and a link that gets no reply
for ``timeout`` while one is awaited fails, as does one that is closed or sends
what cannot be parsed. A failed link answers every command it still owed with
:class:`Unavailable` and starts afresh (connection, set-up commands) on its next
command.
"""

from __future__ import annotations

import errno
import os
import select
import socket
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import hiredis
import redis
import redis.cluster

from zchat.broker.cluster.records import Unavailable

#: Bytes read per recv.
CHUNK = 256 * 1024

#: What a link waits for, as the broker's loop polls it: the values of zmq.POLLIN and
#: zmq.POLLOUT (select's differ: POLLOUT is 4 there).
READ: Final = 1
WRITE: Final = 2


@dataclass(frozen=True, slots=True)
class Server:
    """Where and how to reach the Redis that a redis-py client points at."""

    #: A Redis Cluster (each key's server comes from the client's slot map).
    cluster: bool
    #: The one server of a single Redis.
    address: tuple[str, int]
    #: The AUTH command a new connection starts with, if any.
    auth: tuple[Any, ...] | None
    db: int


def connection_options(client: Any) -> dict[str, Any]:
    """The options redis-py opens ``client``'s connections with (``redis.Redis`` or
    ``redis.cluster.RedisCluster``)."""
    if isinstance(client, redis.cluster.RedisCluster):
        return dict(client.nodes_manager.connection_kwargs)
    return dict(client.connection_pool.connection_kwargs)


def server_of(client: Any) -> Server:
    """What ``client`` (a ``redis.Redis`` or ``redis.cluster.RedisCluster``) connects to."""
    cluster = isinstance(client, redis.cluster.RedisCluster)
    options = connection_options(client)
    address = ("", 0)
    if not cluster:
        if client.connection_pool.connection_class is not redis.Connection:
            raise ValueError("a cluster node reaches Redis over TCP: give redis://HOST:PORT/DB")
        address = (str(options["host"]), int(options["port"]))
    password, username = options.get("password"), options.get("username")
    auth = None
    if password:
        auth = ("AUTH", username, password) if username else ("AUTH", password)
    return Server(cluster, address, auth, 0 if cluster else int(options.get("db") or 0))


class Replies:
    """The replies to a group of commands (possibly on several links), filled in as
    they arrive; ``done`` is called once with the whole group. A reply is the
    decoded value, a ``hiredis.ReplyError`` (Redis refused the command) or an
    :class:`Unavailable` (the link failed before the reply came)."""

    __slots__ = ("done", "left", "values")

    def __init__(self, count: int, done: Callable[[Replies], None]) -> None:
        self.values: list[Any] = [None] * count
        self.left = count
        self.done = done

    def put(self, index: int, reply: Any) -> None:
        self.values[index] = reply
        self.left -= 1
        if self.left == 0:
            self.done(self)


class Link:
    """A non-blocking connection to Redis at ``host:port``. ``setup`` commands run
    first on every new connection (AUTH, SELECT, SCRIPT LOAD): a refusal fails it."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        setup: Sequence[Sequence[Any]],
        timeout: float,
        clock: Callable[[], float],
    ) -> None:
        self.host = host
        self.port = port
        self._setup = b"".join(hiredis.pack_command(tuple(c)) for c in setup)
        self._setup_count = len(setup)
        self._timeout = timeout
        self._clock = clock
        self._sock: socket.socket | None = None
        self._connected = False
        self._connect_error: str | None = None
        self._out = bytearray()
        self._reader = hiredis.Reader()
        #: Who gets each reply still awaited, in order; None for a set-up command.
        self._owed: deque[tuple[Replies, int] | None] = deque()
        #: When the last reply came (or the first awaited one was sent).
        self._since = 0.0

    def __repr__(self) -> str:
        return f"Link({self.host}:{self.port})"

    # ------------------------------------------------------------ what the loop polls

    def fileno(self) -> int | None:
        return self._sock.fileno() if self._sock is not None else None

    @property
    def events(self) -> int:
        """:data:`READ`, and :data:`WRITE` while there is something to write (or the
        connection is being made)."""
        writing = bool(self._out) or not self._connected
        return READ | (WRITE if writing else 0)

    @property
    def busy(self) -> bool:
        """Replies are still owed."""
        return bool(self._owed)

    # ------------------------------------------------------------ commands

    def send(self, command: Sequence[Any], replies: Replies, index: int) -> None:
        """Queue ``command``; its reply goes to ``replies`` at ``index``. Call
        :meth:`write` after queueing a batch."""
        if self._sock is None:
            self._connect()
        if not self._owed:
            self._since = self._clock()
        self._out += hiredis.pack_command(tuple(command))
        self._owed.append((replies, index))

    def handle(self, events: int) -> None:
        """What the poller reported for :meth:`fileno`: write, read."""
        if events & WRITE or (events and not self._connected):
            # While connecting, an error shows as POLLERR/POLLHUP alone: write() sees it.
            self.write()
        if events & ~WRITE:
            self.read()

    def write(self) -> None:
        """Write what the socket takes now."""
        sock = self._sock
        if sock is None or not self._out:
            return
        if not self._connected:
            if self._connect_error is None:
                if not ready(sock, select.POLLOUT, 0.0):
                    return  # still connecting
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code:
                    self._connect_error = os.strerror(code)
            if self._connect_error is not None:
                self.fail(
                    f"cannot connect to Redis at {self.host}:{self.port}: {self._connect_error}"
                )
                return
            self._connected = True
        try:
            sent = sock.send(self._out)
        except BlockingIOError:
            return
        except OSError as exc:
            self.fail(f"Redis at {self.host}:{self.port}: {exc}")
            return
        del self._out[:sent]

    def read(self) -> None:
        """Read and hand over every reply that has arrived."""
        sock = self._sock
        if sock is None or not self._connected:
            return
        while True:
            try:
                data = sock.recv(CHUNK)
            except BlockingIOError:
                return
            except OSError as exc:
                self.fail(f"Redis at {self.host}:{self.port}: {exc}")
                return
            if not data:
                self.fail(f"Redis at {self.host}:{self.port} closed the connection")
                return
            self._reader.feed(data)
            try:
                refused = self._dispatch()
            except hiredis.ProtocolError as exc:
                refused = f"sent what is not RESP: {exc}"
            if refused is not None:
                self.fail(f"Redis at {self.host}:{self.port} {refused}")
                return
            if len(data) < CHUNK:
                return

    def check(self) -> None:
        """Fail if a reply is owed and none came for ``timeout``."""
        if self._owed and self._clock() - self._since > self._timeout:
            self.fail(f"no reply from Redis at {self.host}:{self.port} in {self._timeout:g} s")

    def fail(self, why: str) -> None:
        """Close; every reply still owed is :class:`Unavailable`."""
        self.close()
        owed, self._owed = self._owed, deque()
        lost = Unavailable(why)
        for entry in owed:
            if entry is not None:
                entry[0].put(entry[1], lost)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._connected = False
        self._out.clear()
        self._reader = hiredis.Reader()

    # ------------------------------------------------------------ inside

    def _connect(self) -> None:
        # The name lookup may wait (a host name, as in the compose file); the connection
        # itself does not: it completes when the socket becomes writable.
        family, kind, proto, _, address = socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM
        )[0]
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(address)
        self._sock = sock
        self._connected = code == 0
        # Refused at once (nothing listens): the commands queued next fail on their
        # first write, without waiting for the timeout.
        self._connect_error = None if code in (0, errno.EINPROGRESS) else os.strerror(code)
        self._out += self._setup
        self._owed.extend([None] * self._setup_count)
        self._since = self._clock()

    def _dispatch(self) -> str | None:
        """Hand over the replies parsed; why the link must fail, if it must."""
        reader = self._reader
        owed = self._owed
        while (reply := reader.gets()) is not False:
            self._since = self._clock()
            if not owed:
                return "sent a reply nobody asked for"
            entry = owed.popleft()
            if entry is None:
                if isinstance(reply, hiredis.ReplyError):
                    return f"refused the connection's set-up: {reply}"
                continue
            entry[0].put(entry[1], reply)
        return None


def ready(sock: socket.socket, events: int, timeout: float) -> bool:
    """Whether ``sock`` is ready for ``events`` (select.POLLIN/POLLOUT) within ``timeout``
    seconds. poll, not select: a broker with thousands of clients has descriptors past 1024."""
    poller = select.poll()
    poller.register(sock, events)
    return bool(poller.poll(timeout * 1000))
