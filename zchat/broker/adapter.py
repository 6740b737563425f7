"""The broker's socket adapter: a ROUTER and a PUB around :class:`BrokerCore`.

It receives, hands each frame to the core with the time, and sends what the
core returns. All decisions live in the core; this file only moves bytes.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

import zmq
import zmq.backend

from zchat.broker.auth import BrokerAuth, check_refuses_unknown
from zchat.broker.core import BrokerCore
from zchat.broker.shared import Shared
from zchat.broker.state import BrokerConfig, Output, Publish
from zchat.broker.store import Store
from zchat.curve import CurveServer, apply_server
from zchat.protocol.names import MAX_WIRE_FRAME

log = logging.getLogger("zchat.broker")

DEFAULT_ROUTER = "tcp://*:5555"
DEFAULT_PUB = "tcp://*:5556"

#: Envelopes handled per wake-up before timers get a turn.
_DRAIN_BATCH = 1000
#: Longest sleep in poll, so a stop request is seen promptly.
_MAX_POLL = 0.1
#: pyzmq's Socket.send wraps this in a Python layer for the draft API's
#: routing_id and group, about 1 us a call: the same send without it.
_send_frame = zmq.backend.Socket.send


class Cluster(Shared, Protocol):
    """A broker's part in a cluster (``zchat.broker.cluster.node.ClusterNode``):
    the core's seam to shared state, plus a socket the loop polls beside the ROUTER."""

    def bind(self, core: BrokerCore) -> None: ...

    def fileno(self) -> int | None:
        """A file descriptor that becomes readable when :meth:`ready` has work."""

    def ready(self) -> list[Output]:
        """What arrived from the other brokers, to send; never blocks for long."""

    def tick(self, now: float) -> list[Output]: ...

    def close(self) -> None: ...


class Broker:
    """Bind, serve until :meth:`stop`, then :meth:`close`. One thread only."""

    def __init__(
        self,
        config: BrokerConfig | None = None,
        *,
        router: str = DEFAULT_ROUTER,
        pub: str = DEFAULT_PUB,
        store: Store | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        curve: CurveServer | None = None,
        pub_hwm: int = 10_000,
        clock: Callable[[], float] = time.time,
        cluster: Cluster | None = None,
    ) -> None:
        self.config = config or BrokerConfig()
        self._clock = clock
        self.core = BrokerCore(self.config, store=store, now=clock(), shared=cluster)
        self.cluster = cluster
        if cluster is not None:
            cluster.bind(self.core)
        self._own_context = context is None
        self.context = context or zmq.Context()
        self._curve = curve
        self.auth: BrokerAuth | None = None
        if curve is not None:
            # Before any socket exists: the handler must answer the first handshake.
            self.auth = BrokerAuth(self.context, curve.domain, curve.allow)
        self._stop = threading.Event()
        #: Called after each drained batch with (envelopes, seconds from the first
        #: receive to the last send); the metrics exporter's latency histogram.
        self.on_batch: Callable[[int, float], None] | None = None
        self.router = self._socket(zmq.ROUTER)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.setsockopt(zmq.MAXMSGSIZE, MAX_WIRE_FRAME)
        # libzmq's default listen backlog (100) drops the SYNs of a crowd reconnecting
        # at once (a broker restart), costing each 1-30 s of TCP retries; the kernel
        # caps this at net.core.somaxconn.
        self.router.setsockopt(zmq.BACKLOG, 4096)
        self.pub = self._socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, pub_hwm)
        self.router.bind(router)
        self.pub.bind(pub)
        self.router_endpoint: str = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.pub_endpoint: str = self.pub.getsockopt_string(zmq.LAST_ENDPOINT)
        if curve is not None and curve.allow is not None:
            try:
                check_refuses_unknown(self.router_endpoint, curve.public)
            except BaseException:
                self.close(farewell=False)
                raise

    def _socket(self, kind: int) -> zmq.Socket[bytes]:
        sock = self.context.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        if self._curve is not None:
            apply_server(sock, self._curve)
        return sock

    def stop(self) -> None:
        """Ask :meth:`run` to return; safe from signal handlers and other threads."""
        self._stop.set()

    def run(self) -> None:
        log.info(
            "broker listening: router %s, pub %s, heartbeat %gs, epoch %s",
            self.router_endpoint,
            self.pub_endpoint,
            self.config.heartbeat,
            self.core.epoch,
        )
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        interval = self.core.tick_interval
        next_tick = self._clock() + interval
        cluster = self.cluster
        cluster_fd: int | None = None
        while not self._stop.is_set():
            if cluster is not None:
                # The cluster's connection can change (Redis came back): poll the current one.
                fd = cluster.fileno()
                if fd != cluster_fd:
                    if cluster_fd is not None:
                        poller.unregister(cluster_fd)
                    if fd is not None:
                        poller.register(fd, zmq.POLLIN)
                    cluster_fd = fd
            wait = min(max(next_tick - self._clock(), 0.0), _MAX_POLL)
            if poller.poll(int(wait * 1000)):
                self._drain()
            if cluster is not None:
                self._send(cluster.ready())
            now = self._clock()
            if now >= next_tick:
                # Commit first, as _drain does: timeouts publish leave events too.
                outputs = self.core.tick(now)
                if cluster is not None:
                    outputs += cluster.tick(now)
                self.core.store.flush()
                self._send(outputs)
                next_tick = now + interval

    def _drain(self) -> None:
        router = self.router
        core = self.core
        curve = self._curve is not None
        now = self._clock()
        started = time.perf_counter()
        handled = 0
        # With a durable store, nothing goes out before it is committed: a broker
        # killed mid-batch must never hand out again a seq that clients have seen.
        held: list[Output] | None = [] if core.store.durable else None
        for _ in range(_DRAIN_BATCH):
            try:
                peer = router.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            handled += 1
            # A ROUTER always has at least one frame after the routing id. Per-frame
            # .more is much cheaper than recv_multipart's RCVMORE lookups.
            frame = router.recv(copy=False)
            frames = 1
            last = frame
            while last.more:
                last = router.recv(copy=False)
                frames += 1
            key = None
            if curve:
                try:
                    user = frame.get("User-Id")
                except zmq.ZMQError:
                    user = None  # no ZAP verdict attached: the envelope owns no nick
                key = user if isinstance(user, str) else None
            outputs = core.receive(peer, frame.bytes, now, frames=frames, key=key)
            if held is None:
                self._send(outputs)
            else:
                held.extend(outputs)
        core.store.flush()
        if held:
            self._send(held)
        if self.on_batch is not None and handled:
            self.on_batch(handled, time.perf_counter() - started)

    def _send(self, outputs: Iterable[Output]) -> None:
        router = self.router
        pub = self.pub
        send = _send_frame
        for output in outputs:
            if isinstance(output, Publish):
                send(pub, output.data, zmq.NOBLOCK)
                continue
            try:
                send(router, output.peer, zmq.SNDMORE | zmq.NOBLOCK)
                send(router, output.data, zmq.NOBLOCK)
            except zmq.ZMQError as exc:
                # The peer is gone (EHOSTUNREACH) or not reading (EAGAIN): never wait for it.
                if exc.errno not in (errno.EHOSTUNREACH, errno.EAGAIN):
                    raise
                self.core.counters.drops["reply_unroutable"] += 1

    def close(self, *, farewell: bool = True) -> None:
        """Publish a ``shutdown`` leave for every session, then close the sockets."""
        if farewell:
            self._send(self.core.shutdown(self._clock()))
            # Give the farewell events a moment on the wire; bounded, never a hang.
            self.pub.setsockopt(zmq.LINGER, 500)
        if self.cluster is not None:
            self.cluster.close()
        self.router.close(0)
        self.pub.close()
        if self.auth is not None:
            self.auth.stop()
            self.auth = None
        if self._own_context:
            self.context.term()
