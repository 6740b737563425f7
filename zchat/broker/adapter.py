"""The broker's socket adapter: a ROUTER and a PUB around :class:`BrokerCore`.

It receives, hands each frame to the core with the time, and sends what the
core returns. All decisions live in the core; this file only moves bytes.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import zmq
import zmq.backend
from zmq.utils.monitor import parse_monitor_message

from zchat import native
from zchat.broker.auth import BrokerAuth, check_refuses_unknown
from zchat.broker.core import BrokerCore
from zchat.broker.routing import chosen, seed_routing_ids
from zchat.broker.shared import Shared
from zchat.broker.state import BrokerConfig, Output, Publish
from zchat.broker.store import Store
from zchat.curve import CurveServer, apply_server
from zchat.protocol.names import MAX_WIRE_FRAME

log = logging.getLogger("zchat.broker")

# Loopback only, as Redis does: listening on every interface is a choice to make.
DEFAULT_ROUTER = "tcp://127.0.0.1:5555"
DEFAULT_PUB = "tcp://127.0.0.1:5556"

#: Longest subscription message the PUB accepts (a longer one closes the
#: connection): a flag byte and a topic, at most "#" + a room of 64 characters
#: of up to 4 bytes + a terminator, or a short sync token.
MAX_SUBSCRIPTION = 1024
#: Replies queued for one peer before more are dropped (libzmq's default is 1000).
ROUTER_SNDHWM = 100
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

    def polls(self) -> tuple[tuple[int, int], ...]:
        """(fd, events) to poll, events as zmq.POLLIN / zmq.POLLOUT: when one is
        ready, :meth:`ready` has work."""

    @property
    def more(self) -> bool:
        """:meth:`ready` has work that no descriptor shows: poll without sleeping."""

    def ready(self, events: Mapping[Any, int]) -> list[Output]:
        """What arrived from Redis and the other brokers, to send; never blocks for long.
        ``events``: what the poller reported (socket or fd -> events)."""

    def flush(self) -> list[Output]:
        """Send the says gathered since the last call to the shared store."""

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
        # libzmq reads the first routing id it will generate when the ROUTER is made.
        seed_routing_ids()
        self.router = self._socket(zmq.ROUTER)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        # What libzmq queues for a peer that does not read is bounded in messages
        # only: this many times the largest reply (a history of about 2.2 MB).
        self.router.setsockopt(zmq.SNDHWM, ROUTER_SNDHWM)
        self.router.setsockopt(zmq.MAXMSGSIZE, MAX_WIRE_FRAME)
        # libzmq's default listen backlog (100) drops the SYNs of a crowd reconnecting
        # at once (a broker restart), costing each 1-30 s of TCP retries; the kernel
        # caps this at net.core.somaxconn.
        self.router.setsockopt(zmq.BACKLOG, 4096)
        self.pub = self._socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, pub_hwm)
        # Subscriptions are the only thing a PUB reads, and libzmq buffers each
        # whole: unbounded, one 16 MB subscription cost +733 MB of RSS.
        self.pub.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION)
        # Connections that close (a killed client) are noticed at once, not after three
        # silent heartbeats: the monitor reports the socket's fd, which each peer's
        # first message maps to its routing id (zmq.SRCFD).
        self._monitor: zmq.Socket[bytes] = self.router.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self._fd_of: dict[bytes, int] = {}
        self._peer_at: dict[int, bytes] = {}
        #: DISCONNECTED events still to come for fds a new connection has reused already.
        self._stale: Counter[int] = Counter()
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
            "broker listening: router %s, pub %s, heartbeat %gs, epoch %s, core %s",
            self.router_endpoint,
            self.pub_endpoint,
            self.config.heartbeat,
            self.core.epoch,
            native.describe(),
        )
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        interval = self.core.tick_interval
        next_tick = self._clock() + interval
        caught_up = self._clock()
        cluster = self.cluster
        cluster_polls: tuple[tuple[int, int], ...] = ()
        while not self._stop.is_set():
            wait = min(max(next_tick - self._clock(), 0.0), _MAX_POLL)
            if cluster is not None:
                # The cluster's connections change (Redis came back), and so does what
                # they wait for (writable while a pipeline is only partly written).
                polls = cluster.polls()
                if polls != cluster_polls:
                    for fd, _ in cluster_polls:
                        poller.unregister(fd)
                    for fd, events in polls:
                        poller.register(fd, events)
                    cluster_polls = polls
                if cluster.more:
                    wait = 0.0
            ready = dict(poller.poll(int(wait * 1000)))
            if self.router in ready:
                started, emptied = self._drain()
                if emptied:
                    # All that arrived before the drain began was read, and stamped
                    # with its start: a slow drain (one huge message) shows no one silent.
                    caught_up = started
                if cluster is not None:
                    # Before anything else can publish: the batch's says come first.
                    self._send(cluster.flush())
            else:
                caught_up = self._clock()
            if self._monitor in ready:
                self._read_monitor()
            if cluster is not None:
                self._send(cluster.ready(ready))
                self._send(cluster.flush())
            now = self._clock()
            if now >= next_tick:
                # Commit first, as _drain does: timeouts publish leave events too.
                outputs = self.core.tick(now, caught_up=caught_up)
                if cluster is not None:
                    outputs += cluster.tick(now)
                self.core.store.flush()
                self._send(outputs)
                next_tick = now + interval

    def _drain(self) -> tuple[float, bool]:
        """Handle up to a batch of envelopes; (the time they were stamped with,
        whether the queue was left empty)."""
        router = self.router
        core = self.core
        curve = self._curve is not None
        sessions = core.registry.by_peer
        now = self._clock()
        started = time.perf_counter()
        handled = 0
        # With a durable store, nothing goes out before it is committed: a broker
        # killed mid-batch must never hand out again a seq that clients have seen.
        held: list[Output] | None = [] if core.store.durable else None
        emptied = False
        for _ in range(_DRAIN_BATCH):
            try:
                peer = router.recv(zmq.NOBLOCK)
            except zmq.Again:
                emptied = True
                break
            handled += 1
            if chosen(peer):
                # A peer that picks its own routing id could present another
                # connection's: it never acts as anyone (see zchat.broker.routing).
                self._skip_rest()
                core.counters.drops["chosen_routing_id"] += 1
                count = core.counters.drops["chosen_routing_id"]
                if count & (count - 1) == 0:
                    log.warning(
                        "dropped an envelope from a peer-chosen routing id (%d so far)", count
                    )
                continue
            # A ROUTER always has at least one frame after the routing id. Per-frame
            # .more is much cheaper than recv_multipart's RCVMORE lookups.
            frame = router.recv(copy=False)
            # libzmq hands over a message only whole, and the next one only after
            # every frame of this one has been read: the rest cannot be skipped,
            # only read without copying (about 3 us a frame). run() keeps the time
            # this takes from counting against anyone's heartbeats.
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
            try:
                outputs = core.receive(peer, frame.bytes, now, frames=frames, key=key)
            except Exception:
                # The core turns every bad envelope into a reply; this is a bug in
                # it, and one envelope must not stop the broker for everyone.
                core.counters.drops["internal_error"] += 1
                log.exception("internal error on an envelope from %s", peer.hex()[:16])
                continue
            # Only sessions are watched: garbage from strangers must not grow the map.
            if peer not in self._fd_of and peer in sessions:
                self._track(peer, frame, now, outputs)
            if held is None:
                self._send(outputs)
            else:
                held.extend(outputs)
        core.store.flush()
        if held:
            self._send(held)
        if self.on_batch is not None and handled:
            self.on_batch(handled, time.perf_counter() - started)
        return now, emptied

    def _skip_rest(self) -> None:
        while self.router.recv(copy=False).more:
            pass

    def _track(self, peer: bytes, frame: zmq.Frame, now: float, out: list[Output]) -> None:
        """Remember which connection (fd) ``peer`` arrived on."""
        try:
            fd = int(frame.get(zmq.SRCFD))
        except zmq.ZMQError:
            return  # the connection closed already: heartbeats will tell
        old = self._peer_at.get(fd)
        if old is not None:
            # The fd was closed and reused before its DISCONNECTED event was read:
            # the old connection is gone, and that event must not hit the new one.
            self._stale[fd] += 1
            out.extend(self._forget_connection(old, now))
        self._peer_at[fd] = peer
        self._fd_of[peer] = fd

    def _forget_connection(self, peer: bytes, now: float) -> list[Output]:
        self._peer_at.pop(self._fd_of.pop(peer), None)
        return self.core.disconnected(peer, now)

    def _read_monitor(self) -> None:
        now = self._clock()
        outputs: list[Output] = []
        while True:
            try:
                event = parse_monitor_message(self._monitor.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                break
            fd = int(event["value"])
            if self._stale[fd] > 0:
                self._stale[fd] -= 1
                continue
            self._stale.pop(fd, None)
            peer = self._peer_at.get(fd)
            if peer is not None:
                outputs.extend(self._forget_connection(peer, now))
        self.core.store.flush()
        self._send(outputs)

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
        with contextlib.suppress(zmq.ZMQError):
            self.router.disable_monitor()
        self._monitor.close(0)
        if self.cluster is not None:
            self.cluster.close()
        self.router.close(0)
        self.pub.close()
        if self.auth is not None:
            self.auth.stop()
            self.auth = None
        if self._own_context:
            self.context.term()
