"""The connections a cluster node drives from its loop without waiting (says and
renewals: ``zchat.broker.cluster.link``/``links``), against a real redis-server and
a real 3-master Redis Cluster: pipelines larger than the socket buffers, a server
that is not there or does not answer, a refused set-up, say batches spread over
the cluster's primaries. Skipped only where redis-server is not installed."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable, Iterator

import pytest
import redis
import zmq
from redis_servers import RedisProcess, needs_redis
from redis_servers import Server as RedisServer
from test_cluster_engine import say

from zchat.broker.cluster import keys
from zchat.broker.cluster.engine import Engine
from zchat.broker.cluster.link import READ, WRITE, Link, Replies, Server, server_of
from zchat.broker.cluster.links import Links, Renewed, SaysDone
from zchat.broker.cluster.node import ClusterNode
from zchat.broker.cluster.records import Unavailable
from zchat.broker.shared import Said
from zchat.errors import ProtocolError

pytestmark = needs_redis


class Clock:
    """A clock the test moves: a link's timeout can only come from it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    started = RedisProcess(tmp_path_factory.mktemp("redis-links"))
    yield started
    started.kill()


def turn(links_or_link: Links | Link, wait: float = 0.5) -> dict[int, int]:
    """One turn of a loop like the broker's: poll what it asks for, as zmq would report."""
    polls = (
        links_or_link.polls()
        if isinstance(links_or_link, Links)
        else [(links_or_link.fileno(), links_or_link.events)]
    )
    poller = select.poll()
    for fd, events in polls:
        if fd is not None:
            poller.register(fd, select.POLLIN | (select.POLLOUT if events & WRITE else 0))
    happened: dict[int, int] = {}
    for fd, events in poller.poll(wait * 1000):
        happened[fd] = (READ if events & ~select.POLLOUT else 0) | (
            WRITE if events & select.POLLOUT else 0
        )
    return happened


def drive(link: Link, done: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Turn a loop around ``link`` until ``done()``; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        happened = turn(link, 0.05).get(link.fileno() or -1, 0)
        if happened:
            link.handle(happened)


def pump_until(links: Links, wanted: int) -> list[SaysDone | Renewed]:
    """Turn a loop around ``links`` until ``wanted`` outcomes came; fails after 10 s."""
    done: list[SaysDone | Renewed] = []
    deadline = time.monotonic() + 10
    while len(done) < wanted:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {wanted} outcomes (got {done})")
        done.extend(links.pump(turn(links, 0.05)))
    return done


def test_link_events_are_zmq_poll_flags() -> None:
    # The broker's zmq.Poller gets them as they are.
    assert (READ, WRITE) == (zmq.POLLIN, zmq.POLLOUT)


def test_a_pipeline_larger_than_the_socket_buffers_arrives_whole_and_in_order(
    plain: RedisProcess,
) -> None:
    link = Link("127.0.0.1", plain.port, setup=[], timeout=10.0, clock=Clock())
    got: list[Replies] = []
    count, size = 2000, 16 * 1024
    replies = Replies(count, got.append)
    for i in range(count):
        link.send(("ECHO", f"{i:06d}".encode() + b"x" * size), replies, i)
    link.write()
    drive(link, lambda: bool(got), "the replies")
    assert len(got) == 1
    assert [value[:6] for value in got[0].values] == [f"{i:06d}".encode() for i in range(count)]
    assert all(len(value) == size + 6 for value in got[0].values)
    assert not link.busy
    link.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_nothing_listening_is_unavailable_at_once() -> None:
    link = Link("127.0.0.1", _free_port(), setup=[], timeout=0.5, clock=Clock())
    got: list[Replies] = []
    link.send(("PING",), Replies(1, got.append), 0)
    drive(link, lambda: bool(got), "the refusal")
    # The clock never moved, so no timeout can have answered: the refusal did.
    (reply,) = got[0].values
    assert isinstance(reply, Unavailable)
    assert "cannot connect" in str(reply)


def test_a_server_that_never_answers_fails_the_link_after_its_timeout() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        clock = Clock()
        port = listener.getsockname()[1]
        link = Link("127.0.0.1", port, setup=[], timeout=0.5, clock=clock)
        got: list[Replies] = []
        link.send(("PING",), Replies(1, got.append), 0)
        drive(link, lambda: not link.events & WRITE, "the command to be written")
        clock.now += 0.4
        link.check()
        assert not got
        clock.now += 0.2
        link.check()
        (reply,) = got[0].values
        assert isinstance(reply, Unavailable)
        assert "no reply" in str(reply)
        assert link.fileno() is None
    finally:
        listener.close()


def test_a_refused_set_up_fails_the_link(plain: RedisProcess) -> None:
    # This Redis has no password: AUTH is refused, and nothing runs on that connection.
    link = Link("127.0.0.1", plain.port, setup=[("AUTH", "secret")], timeout=5.0, clock=Clock())
    got: list[Replies] = []
    link.send(("SET", "links:after-auth", "1"), Replies(1, got.append), 0)
    drive(link, lambda: bool(got), "the refusal")
    (reply,) = got[0].values
    assert isinstance(reply, Unavailable)
    assert "set-up" in str(reply)


def test_says_of_many_rooms_are_one_batch_in_order_per_room(
    server: RedisServer, make_engine: Callable[..., Engine]
) -> None:
    engine = make_engine("n1")
    links = Links(engine, clock=Clock())
    rooms = [f"#links-{i}" for i in range(12)]
    batch = [
        (Said(b"p", "r", room, f"{room}-{n}"), say(room, "ann", f"{n}", f"{room}-{n}"))
        for n in range(30)
        for room in rooms
    ]
    links.says(batch)
    (done,) = pump_until(links, 1)
    assert isinstance(done, SaysDone)
    assert done.failure is None
    for room in rooms:
        seqs = [o.seq for o in done.outcomes if o.room == room]
        assert seqs == list(range(1, 31))
    # Resent: the same say ids, answered dup at their seq, nothing published again.
    links.says(batch[:3])
    (again,) = pump_until(links, 1)
    assert isinstance(again, SaysDone)
    assert [(o.seq, o.dup) for o in again.outcomes] == [(1, True)] * 3
    links.renew()
    (renewed,) = pump_until(links, 1)
    assert isinstance(renewed, Renewed)
    assert renewed.renewal is not None
    assert not renewed.renewal.epoch_changed
    links.close()


def test_a_stopped_redis_refuses_the_waiting_says_and_the_links_recover(
    server: RedisServer, make_engine: Callable[..., Engine]
) -> None:
    engine = make_engine("n1")
    clock = Clock()
    links = Links(engine, clock=clock)
    links.says([(Said(b"p", "r", "#stop", "a"), say("#stop", "ann", "a", "a"))])
    pump_until(links, 1)
    server.pause()
    try:
        links.says([(Said(b"p", "r", "#stop", "b"), say("#stop", "ann", "b", "b"))])
        links.pump(turn(links, 0.05))
        clock.now += engine.timeout + 0.1
        (done,) = links.pump({})
    finally:
        server.resume()
    assert isinstance(done, SaysDone)
    assert done.failure is not None
    assert done.outcomes[0].error is not None
    # A new connection: the resent say is stored once (the first attempt may have run
    # when Redis woke up), at the next seq.
    links.says([(Said(b"p", "r", "#stop", "b"), say("#stop", "ann", "b", "b"))])
    (after,) = pump_until(links, 1)
    assert isinstance(after, SaysDone)
    assert after.failure is None
    assert after.outcomes[0].seq == 2
    links.close()


def test_a_failing_node_renews_its_lease_before_it_runs_out(
    make_engine: Callable[..., Engine],
) -> None:
    """While a node's other calls fail (its subscription, say), its renewal still goes
    out every third of a short lease: held back for the second of refusal after each
    failure, the lease would lapse between probes and another node would clean up
    after a live one."""
    clock = Clock()
    node = ClusterNode(make_engine("a", lease=1.5), history=10, clock=clock)

    def broken() -> None:
        raise Unavailable("the subscription failed")

    try:
        with pytest.raises(ProtocolError):
            node.call(broken)
        assert node.failed
        clock.now += 0.5  # a third of the lease: the refusal (RETRY_AFTER) has not ended
        assert clock.now < node.down_until
        node.tick(time.time())
        assert node.links.busy, "no renewal went out while the node refused"
        assert node.links.wait_idle(5)
        node.ready({})
        assert not node.failed
        assert 0 < node.engine.client.pttl(keys.node_lease("a")) <= 1500
    finally:
        node.close()


@pytest.mark.parametrize("url", ["unix:///tmp/zchat-redis.sock", "rediss://127.0.0.1:6380/0"])
def test_only_plain_tcp_is_taken(url: str) -> None:
    # redis-py connects lazily: nothing is contacted here.
    client = redis.Redis.from_url(url)
    with pytest.raises(ValueError, match=r"redis://HOST:PORT/DB"):
        server_of(client)
    client.close()


def test_the_url_s_user_password_and_database_reach_the_set_up() -> None:
    client = redis.Redis.from_url("redis://bot:pw@127.0.0.1:6390/3")
    assert server_of(client) == Server(False, ("127.0.0.1", 6390), ("AUTH", "bot", "pw"), 3)
    client.close()
