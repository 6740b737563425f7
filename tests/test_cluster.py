"""Three brokers as one chat on Redis (docs/cluster.md): real brokers, real clients,
a real redis-server (and a real 3-master Redis Cluster) started by the tests.
Skipped only where redis-server is not installed."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest
import zmq
from conftest import ANY_PORT, BrokerThread, ZchatProcess
from helpers import HEARTBEAT, client_for, collect_until, start_broker, wait_for
from redis_servers import Server, fresh, needs_redis

from zchat import Client
from zchat.broker.adapter import Broker
from zchat.broker.serve import join_cluster
from zchat.broker.state import BrokerConfig
from zchat.client.events import ClientEvent
from zchat.errors import BrokerError, RegistrationError
from zchat.protocol.commands import Hello, History, Nick, Ping, Say, to_wire
from zchat.protocol.events import DirectMessage, ErrorReply, Joined, Left, Message, NickChanged
from zchat.protocol.wire import pack

pytestmark = needs_redis


@pytest.fixture(autouse=True)
def _node_story(caplog: pytest.LogCaptureFixture) -> None:
    # A failed test shows what the nodes did (Redis back, a node found dead, its
    # leaves published), not only their warnings.
    caplog.set_level(logging.INFO, logger="zchat.broker.cluster")


@pytest.fixture
def redis_url(server: Server) -> str:
    fresh(server)
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


def texts(events: list[ClientEvent], prefix: str) -> list[str]:
    return [e.text for e in events if isinstance(e, Message) and e.text.startswith(prefix)]


async def test_a_killed_node_s_clients_resume_elsewhere_and_the_rest_leave_once(
    zchat_proc: Callable[..., ZchatProcess], redis_url: str
) -> None:
    a, b, c = (start_broker(zchat_proc, "--cluster", redis_url) for _ in range(3))
    # ann knows two brokers; zed only a, so zed does not come back.
    ann = Client("ann", router=f"{a.router},{b.router}", pub=f"{a.pub},{b.pub}")
    async with ann, client_for(a, "zed"), client_for(b, "bob") as bob, client_for(c, "cat") as cat:
        await wait_for(bob, Joined, nick="cat")
        for i in range(10):
            await bob.say(f"m{i:02}")
        seen_by_ann = await collect_until(ann, lambda e: texts([e], "m09") != [])
        a.proc.signal(signal.SIGKILL)
        # Said into the dead broker: kept unconfirmed, resent through b, deduped.
        await ann.say("ann-1")
        for i in range(10, 30):
            await bob.say(f"m{i:02}")
        seen_by_ann += await collect_until(ann, lambda e: texts([e], "m29") != [], timeout=30)
        assert texts(seen_by_ann, "m") == [f"m{i:02}" for i in range(30)], "lost or doubled"
        seen_by_cat = await collect_until(cat, lambda e: texts([e], "ann-1") != [], timeout=30)
        if not any(isinstance(e, Left) and e.nick == "zed" for e in seen_by_cat):
            seen_by_cat += await collect_until(
                cat, lambda e: isinstance(e, Left) and e.nick == "zed", timeout=30
            )
        # One more message through every node after the clean-up: then count.
        await bob.say("end")
        seen_by_cat += await collect_until(cat, lambda e: texts([e], "end") != [], timeout=10)
        await wait_for(ann, Message, lambda m: m.text == "end", timeout=10)
        zed_leaves = [e for e in seen_by_cat if isinstance(e, Left) and e.nick == "zed"]
        assert [e.reason for e in zed_leaves] == ["timeout"]
        ann_leaves = [e for e in seen_by_cat if isinstance(e, Left) and e.nick == "ann"]
        assert len(ann_leaves) <= 1, ann_leaves
        assert texts(seen_by_cat, "ann-") == ["ann-1"]
        assert sorted((await cat.who()).users) == ["ann", "bob", "cat"]
        assert ann.router == b.router


async def test_a_client_started_while_its_first_node_is_down_joins_through_the_next(
    make_node: Callable[..., BrokerThread],
) -> None:
    a, b, c = make_node(), make_node(), make_node()
    a.stop()
    # ann lists the stopped a first: her first registration moves on to b.
    ann = Client("ann", router=f"{a.router},{b.router}", pub=f"{a.pub},{b.pub}", connect_timeout=1)
    async with client_for(c, "cat") as cat, ann:
        assert ann.router == b.router
        await wait_for(cat, Joined, nick="ann")
        await ann.say("via b")
        await wait_for(cat, Message, said("via b"))
        assert sorted((await ann.who()).users) == ["ann", "cat"]


async def test_nodes_ride_out_a_redis_restart(
    server: Server, make_node: Callable[..., BrokerThread]
) -> None:
    a, b = make_node(), make_node()
    async with client_for(a, "ann") as ann, client_for(b, "bob") as bob:
        await wait_for(ann, Joined, nick="bob")
        await ann.say("before")
        await wait_for(bob, Message, lambda m: m.text == "before")
        # In a thread: killing and starting Redis can take seconds (an fsync to finish,
        # the append-only file to load), and a client whose loop is held that long
        # finds its broker silent and registers again.
        await asyncio.to_thread(server.kill)
        # Not stored, so not acknowledged: the client is told.
        refused = await ann.say("lost")
        await wait_for(ann, ErrorReply, code="unavailable", re=refused, timeout=10)
        await asyncio.to_thread(server.restart)
        # Until the nodes are back on Redis a say is refused (unavailable) or, said
        # into the gap, resent; either way one that gets through is seen once.
        deadline = time.monotonic() + 30
        got: Message | None = None
        attempt = 0
        while got is None and time.monotonic() < deadline:
            attempt += 1
            await ann.say(f"after-{attempt}")
            try:
                got = await wait_for(
                    bob, Message, lambda m: m.text.startswith("after-"), timeout=1.5
                )
            except pytest.fail.Exception:
                continue
        assert got is not None, "the nodes did not recover from the Redis restart"
        # Acknowledged before the restart, kept by Redis (append-only file, fsync always).
        page = await bob.history("lobby")
        assert "before" in [e.text for e in page.events if isinstance(e, Message)]


async def test_a_leave_during_a_redis_outage_is_published_when_it_is_back(
    server: Server, make_node: Callable[..., BrokerThread]
) -> None:
    a, b = make_node(), make_node()
    async with client_for(a, "ann") as ann:
        bob = client_for(b, "bob")
        await bob.connect()
        await wait_for(ann, Joined, nick="bob")
        await asyncio.to_thread(server.kill)  # in a thread: see the test above
        # bob's session ends while Redis is away: its leave cannot be refused.
        await bob.close("bye for now")
        await asyncio.to_thread(server.restart)
        left = await wait_for(ann, Left, nick="bob", timeout=30)
        assert (left.reason, left.message) == ("quit", "bye for now")
        assert (await ann.who()).users == ("ann",)


async def test_a_nick_change_is_cluster_wide(make_node: Callable[..., BrokerThread]) -> None:
    a, b = make_node(), make_node()
    async with client_for(a, "ann") as ann, client_for(b, "bob") as bob:
        await wait_for(ann, Joined, nick="bob")
        with pytest.raises(BrokerError, match="in use"):
            await ann.request(Nick("BOB"), NickChanged)
        await ann.change_nick("anna")
        changed = await wait_for(bob, NickChanged, old="ann", new="anna")
        assert changed.seq is not None
        assert sorted((await bob.who()).users) == ["anna", "bob"]
        # The old nick is free again, on any node.
        async with client_for(b, "ann") as again:
            assert again.nick == "ann"


# ---------------------------------------------------------------- a stalled Redis (raw sockets)


Context = zmq.Context[zmq.Socket[bytes]]


def _dealer(zctx: Context, node: BrokerThread, nick: str) -> zmq.Socket[bytes]:
    dealer = zctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(node.router)
    dealer.send(pack(to_wire(Hello(nick, ("lobby",), id="h"))))
    assert _reply(dealer)["type"] == "welcome"
    return dealer


def _reply(dealer: zmq.Socket[bytes], timeout: float = 10.0) -> dict[str, Any]:
    assert dealer.poll(int(timeout * 1000)), "no reply"
    reply: dict[str, Any] = msgpack.unpackb(dealer.recv())
    return reply


def _say(text: str, ref: str) -> bytes:
    return pack(to_wire(Say("lobby", text, id=ref)))


def test_a_stalled_redis_stalls_no_one_else_and_nothing_unstored_is_acknowledged(
    server: Server, make_node: Callable[..., BrokerThread], zctx: Context
) -> None:
    a = make_node(heartbeat=5.0, rate_limit=0)
    ann, bob = _dealer(zctx, a, "ann"), _dealer(zctx, a, "bob")
    server.pause()
    try:
        ann.send(_say("during", "d1"))
        # bob is answered, again and again, while ann's say still waits for Redis:
        # the broker's loop does not.
        for i in range(3):
            bob.send(pack(to_wire(Ping(id=f"p{i}"))))
            assert _reply(bob) == {"type": "pong", "re": f"p{i}"}
            assert not ann.poll(0), "ann was answered first: the loop waited for Redis"
        # Not stored (as far as the broker knows): refused, never acknowledged.
        refused = _reply(ann)
        assert (refused["type"], refused["code"], refused["re"]) == ("error", "unavailable", "d1")
        # Still stalled: refused at once, without waiting on Redis again.
        ann.send(_say("later", "d2"))
        refused = _reply(ann)
        assert (refused["type"], refused["code"], refused["re"]) == ("error", "unavailable", "d2")
        bob.send(pack(to_wire(Ping(id="p9"))))
        assert _reply(bob) == {"type": "pong", "re": "p9"}
    finally:
        server.resume()
    # Recovery without a restart. Redis may still run the say it had read when it
    # stopped: the client resends with the same id, and gets it once either way.
    deadline = time.monotonic() + 30
    refusals = 1
    while refusals:
        assert time.monotonic() < deadline, "the node did not recover"
        # A ping after it: its pong comes after the say's answer, if it has one (an
        # error, or an ack with dup; a published say is confirmed by its msg only).
        ann.send(_say("during", "d1"))
        ann.send(pack(to_wire(Ping(id="after"))))
        replies = []
        while (reply := _reply(ann))["type"] != "pong":
            replies.append(reply)
        refusals = sum(1 for r in replies if r["type"] == "error" and r["code"] == "unavailable")
        assert len(replies) == refusals or replies == [
            {"type": "ack", "re": "d1", "room": "lobby", "seq": replies[0].get("seq"), "dup": True}
        ], replies
    ann.send(pack(to_wire(History("lobby", 0, None, 100, id="h1"))))
    page = _reply(ann)
    texts = [e.get("text") for e in page["events"]]
    assert [t for t in texts if t is not None] == ["during"], texts


async def test_a_dm_to_a_nick_on_a_node_that_just_died_is_refused_not_lost(
    zchat_proc: Callable[..., ZchatProcess], redis_url: str
) -> None:
    a, b = (start_broker(zchat_proc, "--cluster", redis_url) for _ in range(2))
    async with client_for(a, "ann") as ann:
        bob = client_for(b, "bob")
        await bob.connect()
        await wait_for(ann, Joined, nick="bob")
        await ann.dm("bob", "before")
        await wait_for(bob, DirectMessage, text="before")
        b.proc.signal(signal.SIGKILL)
        assert await asyncio.to_thread(b.proc.wait) == -signal.SIGKILL
        # bob's nick is still registered to b (until its lease runs out and a survivor
        # cleans up): the DM would go to a channel no one reads.
        with pytest.raises(BrokerError) as refused:
            await ann.dm("bob", "after")
        assert (refused.value.code, refused.value.data.get("to")) == ("unavailable", "bob")
        await bob.close()
