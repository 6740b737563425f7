"""Three brokers as one chat on Redis (docs/cluster.md): real brokers, real clients,
a real redis-server (and a real 3-master Redis Cluster) started by the tests.
Skipped only where redis-server is not installed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from conftest import ANY_PORT, BrokerThread
from helpers import HEARTBEAT, client_for, wait_for
from redis_servers import REDIS_CLI, REDIS_SERVER, RedisCluster, RedisProcess, Server

from zchat.broker.adapter import Broker
from zchat.broker.serve import join_cluster
from zchat.broker.state import BrokerConfig
from zchat.client.events import ClientEvent
from zchat.errors import RegistrationError
from zchat.protocol.events import DirectMessage, Joined, Left, Message

pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None or REDIS_CLI is None, reason="redis-server is not installed"
)


@pytest.fixture(scope="module", params=["single", "cluster"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp(f"redis-{request.param}")
    started: Server = RedisProcess(workdir) if request.param == "single" else RedisCluster(workdir)
    yield started
    started.kill()


@pytest.fixture
def redis_url(server: Server) -> str:
    ports = [n.port for n in server.nodes] if isinstance(server, RedisCluster) else [server.port]
    for port in ports:
        client = redis.Redis(port=port)
        client.flushall()
        client.close()
    return server.url


@pytest.fixture
def make_node(redis_url: str) -> Iterator[Callable[..., BrokerThread]]:
    started: list[BrokerThread] = []

    def start(**config: Any) -> BrokerThread:
        config.setdefault("heartbeat", HEARTBEAT)
        cfg = BrokerConfig(**config)
        node = join_cluster(redis_url, cfg)
        broker = Broker(cfg, router=ANY_PORT, pub=ANY_PORT, store=node.store, cluster=node)
        thread = BrokerThread(broker)
        started.append(thread)
        return thread

    yield start
    for thread in started:
        thread.stop()


def said(text: str) -> Callable[[ClientEvent], bool]:
    return lambda e: isinstance(e, Message) and e.text == text


async def test_three_nodes_are_one_chat(make_node: Callable[..., BrokerThread]) -> None:
    a, b, c = make_node(), make_node(), make_node()
    async with (
        client_for(a, "ann") as ann,
        client_for(b, "bob") as bob,
        client_for(c, "cat") as cat,
    ):
        await wait_for(ann, Joined, nick="cat")
        await ann.say("hello from a")
        got = [await wait_for(x, Message, said("hello from a")) for x in (ann, bob, cat)]
        assert len({m.seq for m in got}) == 1, "one seq for everyone"
        await bob.say("hello from b")
        from_b = [await wait_for(x, Message, said("hello from b")) for x in (ann, cat)]
        assert {m.seq for m in from_b} == {got[0].seq + 1}
        for x in (ann, bob, cat):
            info = await x.who()
            assert sorted(info.users) == ["ann", "bob", "cat"]
            assert info.count == 3
        # A nick held on another node is taken cluster-wide.
        with pytest.raises(RegistrationError, match="in use"):
            async with client_for(c, "ANN", connect_timeout=3):
                pass
        # A DM to a nick on another node.
        await ann.dm("cat", "psst")
        dm = await wait_for(cat, DirectMessage, text="psst")
        assert (dm.nick, dm.to) == ("ann", "cat")
        # A late joiner on c gets the history written through a.
        async with client_for(c, "dan") as dan:
            await wait_for(dan, Message, said("hello from a"))
            await wait_for(dan, Message, said("hello from b"))
            await wait_for(ann, Joined, nick="dan")
        await wait_for(ann, Left, nick="dan")
