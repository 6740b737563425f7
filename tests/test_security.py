"""Security: CURVE keys and ZAP, nicks bound to keys, limits against abuse.

Pure tests drive the core in memory; integration tests use real CURVE sockets
on 127.0.0.1 and, for the command line, real ``zchat`` processes.
"""

from __future__ import annotations

import asyncio
import signal
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth
from conftest import ANY_PORT, BrokerThread, ZchatProcess, recv_until
from helpers import start_broker, wait_event, wait_for, wait_for_line
from test_core import A, B, C, Conversation

from zchat import (
    Client,
    ConnectTimeout,
    CurveKeys,
    ErrorReply,
    Left,
    Message,
    RegistrationError,
)
from zchat.broker.adapter import Broker
from zchat.broker.auth import check_refuses_unknown
from zchat.broker.sqlite import SqliteStore
from zchat.broker.state import BrokerConfig
from zchat.broker.store import MemoryStore, Store
from zchat.curve import (
    CurveServer,
    client_curve,
    default_config_dir,
    generate_keypair,
    load_secret,
    load_server,
)
from zchat.errors import SecurityError
from zchat.handshake import HandshakeWatch
from zchat.protocol import MAX_FRAME, MAX_WIRE_FRAME, pack, split_pub_frame, unpack

# ====================================================================== pure core


def test_first_key_owns_a_nick_and_no_other_key_gets_it() -> None:
    conv = Conversation()
    assert conv.hello(A, "Robin", key="key-1")["type"] == "welcome"
    assert conv.hello(B, "ROBIN", key="key-2")["code"] == "nick_taken"
    conv.send(A, key="key-1", type="bye")
    # Free, but owned: only key-1 may have it.
    assert conv.hello(B, "Robin", key="key-2")["code"] == "nick_taken"
    assert conv.hello(B, "Robin")["code"] == "nick_taken"  # no key at all
    assert conv.hello(C, "Robin", key="key-1")["type"] == "welcome"


def test_a_nick_change_claims_the_new_nick_and_respects_owners() -> None:
    conv = Conversation()
    conv.hello(A, "Robin", key="key-1")
    conv.hello(B, "Batman", key="key-2")
    (err,) = conv.send(B, key="key-2", type="nick", nick="robin")
    assert err["code"] == "nick_taken"
    (ok,) = conv.send(A, key="key-1", type="nick", nick="Redbird")
    assert ok["new"] == "Redbird"
    conv.send(A, key="key-1", type="bye")
    assert conv.hello(C, "Redbird", key="key-2")["code"] == "nick_taken"


def test_without_keys_nothing_is_owned() -> None:
    conv = Conversation()
    conv.hello(A, "Robin")
    conv.send(A, type="bye")
    assert conv.hello(B, "Robin")["type"] == "welcome"


def test_owner_takeover_replaces_the_old_session_and_tells_it() -> None:
    conv = Conversation(max_clients=1)
    conv.hello(A, "Robin", key="key-1")
    # Full, but a takeover does not add a session.
    assert conv.hello(B, "Robin", key="key-1")["type"] == "welcome"
    assert [(e["nick"], e["reason"]) for e in conv.events("leave")] == [("Robin", "replaced")]
    told = [env for peer, env in conv.replies if peer == A and env["type"] == "error"]
    assert [env["code"] for env in told] == ["replaced"]
    assert conv.core.nick_of(A) is None
    assert conv.core.nick_of(B) == "Robin"
    conv.core.check_invariants()


def test_resume_token_of_another_key_does_not_take_over() -> None:
    conv = Conversation()
    welcome = conv.hello(A, "Robin", key="key-1")
    stolen = conv.hello(B, "Robin", key="key-2", resume=welcome["session"])
    assert stolen["code"] == "nick_taken"


def test_non_ascii_resume_token_is_refused_not_a_crash() -> None:
    conv = Conversation()
    conv.hello(A, "Robin")
    assert conv.hello(B, "Robin", resume="é")["code"] == "nick_taken"


def test_envelope_fields_cannot_change_the_stamped_nick() -> None:
    conv = Conversation()
    conv.hello(A, "Robin", key="key-1")
    conv.hello(B, "Batman", key="key-2")
    claim = {"type": "say", "room": "lobby", "text": "hi", "nick": "Robin", "key": "key-1"}
    conv.raw(B, pack(claim), key="key-2")
    conv.send(B, key="key-2", type="dm", to="Robin", text="psst", nick="Robin")
    (msg,) = conv.events("msg")
    assert msg["nick"] == "Batman"
    dms = [env for peer, env in conv.replies if peer == A and env["type"] == "dm"]
    assert [d["nick"] for d in dms] == ["Batman"]


def test_bye_and_hello_again_does_not_refill_the_bucket() -> None:
    conv = Conversation(rate_limit=1, rate_burst=10)
    conv.hello(A, "Robin", key="key-1", rooms=["a", "b", "c"])
    refused = 0
    for _ in range(10):
        conv.send(A, key="key-1", type="bye")
        welcome = conv.send(A, key="key-1", type="hello", v=1, nick="Robin", rooms=["a", "b", "c"])
        if welcome[0]["type"] == "error":
            assert welcome[0]["code"] == "rate_limited"
            refused += 1
    # 10 tokens, 4 per return: two comebacks, then refused until refilled.
    assert refused == 8
    conv.now += 4  # 4 tokens back
    assert conv.hello(A, "Robin", key="key-1", rooms=["a", "b", "c"])["type"] == "welcome"


def test_flooder_is_dropped_and_comes_back_with_its_penalty() -> None:
    conv = Conversation(rate_limit=10, rate_burst=5, flood_threshold=20)
    conv.hello(A, "Flooder", key="key-1")
    conv.hello(B, "Robin", key="key-2")
    for _ in range(40):
        conv.send(A, key="key-1", type="say", room="lobby", text="flood")
    assert [(e["nick"], e["reason"]) for e in conv.events("leave")] == [("Flooder", "flood")]
    # Straight back from another connection with the same key: still no tokens.
    assert conv.hello(C, "Flooder", key="key-1")["code"] == "rate_limited"
    conv.send(B, key="key-2", type="say", room="lobby", text="still here")
    assert conv.events("msg")[-1]["nick"] == "Robin"
    assert conv.core.counters.errors["rate_limited"] > 0


def test_limits_on_clients_and_rooms() -> None:
    conv = Conversation(max_clients=2, max_rooms_per_session=2)
    assert conv.hello(A, "a", rooms=["x", "y", "z"])["code"] == "too_many_rooms"
    conv.hello(A, "a", rooms=["x", "y"])
    (err,) = conv.send(A, type="join", room="z")
    assert err["code"] == "too_many_rooms"
    conv.hello(B, "b")
    assert conv.hello(C, "c")["code"] == "full"
    conv.core.check_invariants()


def test_memory_store_past_its_bound_records_no_new_claim_and_evicts_none() -> None:
    store = MemoryStore(10, max_owners=3)
    for n in range(5):
        store.set_owner(f"nick{n}", f"key{n}")
    assert [store.owner(f"nick{n}") for n in range(5)] == ["key0", "key1", "key2", None, None]


def test_sqlite_store_keeps_owners_across_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    store = SqliteStore(db, 10)
    first = conversation_on(store)
    first.hello(A, "Robin", key="key-1")
    store.close()
    store = SqliteStore(db, 10)
    second = conversation_on(store)
    assert second.hello(B, "Robin", key="key-2")["code"] == "nick_taken"
    assert second.hello(C, "Robin", key="key-1")["type"] == "welcome"
    store.close()


def conversation_on(store: Store) -> Conversation:
    conv = Conversation()
    conv.core.store = store
    return conv


# ====================================================================== key files


def test_keygen_writes_an_owner_only_secret(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    files = generate_keypair(directory, "broker")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(files.secret.stat().st_mode) == 0o600
    public, secret = load_secret(files.secret)
    assert zmq.auth.load_certificate(files.public) == (public, None)
    assert len(public) == len(secret) == 40
    assert sorted(p.name for p in directory.iterdir()) == ["broker.key", "broker.key_secret"]


def test_keygen_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    first = generate_keypair(tmp_path, "broker")
    old = first.secret.read_bytes()
    with pytest.raises(SecurityError, match="exists; pass --force"):
        generate_keypair(tmp_path, "broker")
    assert first.secret.read_bytes() == old
    generate_keypair(tmp_path, "broker", force=True)
    assert first.secret.read_bytes() != old


@pytest.mark.parametrize("name", ["", "..", "a/b"])
def test_keygen_refuses_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(SecurityError, match="bad key name"):
        generate_keypair(tmp_path, name)


def test_keygen_into_a_file_or_under_one_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SecurityError, match="not a directory"):
        generate_keypair(blocker, "k")
    with pytest.raises(SecurityError, match="cannot create"):
        generate_keypair(blocker / "sub", "k")


def test_bad_key_files_are_clear_errors(tmp_path: Path) -> None:
    files = generate_keypair(tmp_path, "broker")
    with pytest.raises(SecurityError, match="no secret key"):
        load_secret(files.public)
    junk = tmp_path / "junk.key"
    junk.write_text("hello\n")
    with pytest.raises(SecurityError, match="not a ZeroMQ certificate"):
        load_secret(junk)
    with pytest.raises(SecurityError, match="cannot read"):
        load_secret(tmp_path / "missing.key_secret")
    with pytest.raises(SecurityError, match="not a directory"):
        load_server(files.secret, allow=tmp_path / "nowhere")


def test_client_keys_are_made_once_and_reused(tmp_path: Path) -> None:
    server = generate_keypair(tmp_path / "srv", "broker")
    assert client_curve(None, None) is None
    with pytest.raises(SecurityError, match="--key needs --server-key"):
        client_curve(None, server.secret)
    config = tmp_path / "config" / "zchat"
    first = client_curve(server.public, None, config_dir=config)
    again = client_curve(server.public, None, config_dir=config)
    assert first is not None
    assert first == again
    assert first.server_public == load_secret(server.secret)[0]
    assert stat.S_IMODE((config / "client.key_secret").stat().st_mode) == 0o600
    own = client_curve(server.public, server.secret)
    assert own is not None
    assert own.public == first.server_public


def test_config_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_config_dir() == tmp_path / "zchat"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_config_dir() == tmp_path / "home" / ".config" / "zchat"


# ====================================================================== real sockets


class Keys:
    """A broker pair, an allow-list directory holding alice's key, and loose pairs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.broker = generate_keypair(root / "keys", "broker")
        self.allow = root / "allow"
        self.allow.mkdir()
        self.server_public, _ = load_secret(self.broker.secret)

    def pair(self, name: str, *, allowed: bool = False) -> CurveKeys:
        files = generate_keypair(self.root / "keys", name)
        if allowed:
            (self.allow / f"{name}.key").write_bytes(files.public.read_bytes())
        public, secret = load_secret(files.secret)
        return CurveKeys(self.server_public, public, secret)

    def server(self, *, allow: bool) -> CurveServer:
        return load_server(self.broker.secret, self.allow if allow else None)


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path)


@pytest.fixture
def curve_broker(make_broker: Callable[..., BrokerThread]) -> Callable[..., BrokerThread]:
    """``make_broker`` with the CURVE server keys as first argument."""

    def start(curve: CurveServer, **kwargs: Any) -> BrokerThread:
        return make_broker(curve=curve, **kwargs)

    return start


def client_for(broker: BrokerThread, nick: str, curve: CurveKeys | None, **kw: Any) -> Client:
    kw.setdefault("connect_timeout", 5.0)
    return Client(nick, router=broker.router, pub=broker.pub, curve=curve, **kw)


async def test_curve_conversation_and_keys_stamped(
    keys: Keys, curve_broker: Callable[..., BrokerThread]
) -> None:
    broker = curve_broker(keys.server(allow=False))
    alice_keys, bob_keys = keys.pair("alice"), keys.pair("bob")
    async with (
        client_for(broker, "alice", alice_keys) as alice,
        client_for(broker, "bob", bob_keys) as bob,
    ):
        await alice.say("over CURVE")
        event = await wait_for(bob, Message)
        assert (event.nick, event.text) == ("alice", "over CURVE")
        # The nick is bound to the public key the handshake authenticated.
        assert broker.core.store.owner("alice") == alice_keys.public.decode()
        assert broker.core.store.owner("bob") == bob_keys.public.decode()


async def test_plaintext_client_is_refused_with_a_hint(
    keys: Keys, curve_broker: Callable[..., BrokerThread]
) -> None:
    broker = curve_broker(keys.server(allow=False))
    started = time.monotonic()
    with pytest.raises(ConnectTimeout, match=r"requires CURVE|--server-key"):
        await client_for(broker, "mallory", None, connect_timeout=1.0).connect()
    assert time.monotonic() - started < 5
    assert broker.core.counters.envelopes_in == 0


async def test_wrong_server_key_fails_within_the_timeout(
    keys: Keys, curve_broker: Callable[..., BrokerThread]
) -> None:
    broker = curve_broker(keys.server(allow=False))
    own = keys.pair("alice")
    wrong = CurveKeys(zmq.curve_keypair()[0], own.public, own.secret)
    started = time.monotonic()
    with pytest.raises(ConnectTimeout, match="is --server-key the broker's public key"):
        await client_for(broker, "alice", wrong, connect_timeout=1.0).connect()
    assert time.monotonic() - started < 5
    assert broker.core.counters.envelopes_in == 0


async def test_curve_client_against_a_plain_broker_fails_with_a_hint(
    keys: Keys, broker: BrokerThread
) -> None:
    # libzmq reports the failed handshake as a protocol error, or (seen under heavy
    # load) without detail; either way the person is pointed at the CURVE options.
    with pytest.raises(ConnectTimeout, match=r"does not use CURVE|CURVE handshake failed"):
        await client_for(broker, "alice", keys.pair("alice"), connect_timeout=1.0).connect()


async def test_allow_list_admits_listed_keys_only(
    keys: Keys, curve_broker: Callable[..., BrokerThread]
) -> None:
    alice_keys = keys.pair("alice", allowed=True)
    broker = curve_broker(keys.server(allow=True))
    assert broker.broker.auth is not None
    assert broker.broker.auth.running
    with pytest.raises(ConnectTimeout, match="refused our key"):
        await client_for(broker, "eve", keys.pair("eve"), connect_timeout=1.0).connect()
    async with client_for(broker, "alice", alice_keys) as alice:
        await alice.say("listed")
        await wait_event(alice, type="msg", text="listed")
    assert broker.core.counters.registrations == 1


async def test_allow_list_is_reread_on_reload(
    keys: Keys, curve_broker: Callable[..., BrokerThread]
) -> None:
    broker = curve_broker(keys.server(allow=True))
    late = keys.pair("late", allowed=True)  # listed after the broker started
    with pytest.raises(ConnectTimeout, match="refused our key"):
        await client_for(broker, "late", late, connect_timeout=1.0).connect()
    assert broker.broker.auth is not None
    assert broker.broker.auth.reload() == 1
    async with client_for(broker, "late", late):
        pass


def test_self_test_notices_a_broker_that_accepts_any_key(
    keys: Keys, curve_broker: Callable[..., BrokerThread]
) -> None:
    open_broker = curve_broker(keys.server(allow=False))
    with pytest.raises(SecurityError, match="was accepted"):
        check_refuses_unknown(open_broker.router, keys.server_public)
    listed = curve_broker(keys.server(allow=True))
    check_refuses_unknown(listed.router, keys.server_public)


def test_plain_sub_cannot_read_what_a_curve_sub_reads(
    keys: Keys,
    curve_broker: Callable[..., BrokerThread],
    zctx: zmq.Context[zmq.Socket[bytes]],
) -> None:
    broker = curve_broker(keys.server(allow=False))
    plain = zctx.socket(zmq.SUB)
    plain.setsockopt(zmq.LINGER, 0)
    plain.setsockopt(zmq.SUBSCRIBE, b"")
    watch = HandshakeWatch(plain)
    plain.connect(broker.pub)
    # Positive evidence first: the plain SUB's handshake is refused.
    assert watch.wait(5.0) in (
        zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
        zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
    )
    watch.close()

    alice = keys.pair("alice")
    sub = zctx.socket(zmq.SUB)
    dealer = zctx.socket(zmq.DEALER)
    for sock in (sub, dealer):
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.CURVE_SERVERKEY, alice.server_public)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, alice.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, alice.secret)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(broker.pub)
    dealer.connect(broker.router)
    # Sync until the CURVE SUB sees its own token: then it is live.
    deadline = time.monotonic() + 5
    while not sub.poll(100):
        assert time.monotonic() < deadline, "CURVE SUB never became live"
        dealer.send(pack({"type": "sync", "token": "t1"}))
    dealer.send(pack({"type": "hello", "v": 1, "nick": "alice", "rooms": ["secret"]}))
    dealer.send(pack({"type": "say", "room": "secret", "text": "for members only"}))
    seen: list[dict[str, Any]] = []
    while not any(env.get("text") == "for members only" for env in seen):
        assert sub.poll(5000), f"CURVE SUB saw only {seen}"
        _topic, body = split_pub_frame(sub.recv())
        seen.append(unpack(body))
    # The plain SUB was connected all along and got nothing at all.
    assert plain.poll(0) == 0


async def test_nick_owned_by_one_key_cannot_be_taken_by_another(
    keys: Keys, curve_broker: Callable[..., BrokerThread]
) -> None:
    broker = curve_broker(keys.server(allow=False))
    alice_keys, eve_keys = keys.pair("alice"), keys.pair("eve")
    async with client_for(broker, "alice", alice_keys):
        with pytest.raises(RegistrationError) as busy:
            await client_for(broker, "ALICE", eve_keys).connect()
        assert busy.value.code == "nick_taken"
    # alice is gone; her nick is still hers.
    with pytest.raises(RegistrationError) as owned:
        await client_for(broker, "Alice", eve_keys).connect()
    assert owned.value.code == "nick_taken"
    assert "another key" in owned.value.reason


async def test_nick_ownership_survives_a_broker_restart_with_db(
    keys: Keys, zchat_proc: Callable[..., ZchatProcess], tmp_path: Path
) -> None:
    args = ["--db", str(tmp_path / "chat.db"), "--secret-key", str(keys.broker.secret)]
    alice_keys, eve_keys = keys.pair("alice"), keys.pair("eve")
    broker = start_broker(zchat_proc, *args)

    def client(nick: str, curve: CurveKeys) -> Client:
        return Client(nick, router=broker.router, pub=broker.pub, curve=curve, connect_timeout=10)

    async with client("alice", alice_keys):
        pass
    broker.proc.signal(signal.SIGTERM)
    assert await asyncio.to_thread(broker.proc.wait) == 0
    broker = start_broker(zchat_proc, *args)
    with pytest.raises(RegistrationError) as owned:
        await client("alice", eve_keys).connect()
    assert owned.value.code == "nick_taken"
    async with client("alice", alice_keys) as alice:
        assert alice.nick == "alice"


async def test_owner_takeover_replaces_and_the_old_client_gives_up(
    keys: Keys, curve_broker: Callable[..., BrokerThread]
) -> None:
    broker = curve_broker(keys.server(allow=False))
    alice_keys = keys.pair("alice")
    async with client_for(broker, "watcher", keys.pair("watcher")) as watcher:
        old = client_for(broker, "alice", alice_keys)
        await old.connect()
        await wait_event(watcher, type="join", nick="alice")
        async with client_for(broker, "alice", alice_keys) as new:
            left = await wait_for(watcher, Left, nick="alice")
            assert left.reason == "replaced"
            told = await wait_for(old, ErrorReply)
            assert told.code == "replaced"
            # The old client closes itself instead of taking the nick back.
            while await old.next_event(timeout=5) is not None:
                pass
            await new.say("still me")
            await wait_event(watcher, type="msg", text="still me")
            assert broker.core.counters.leaves["replaced"] == 1
            assert broker.core.sessions == 2


async def test_flooder_is_limited_and_dropped_while_others_chat(
    make_broker: Callable[..., BrokerThread], zctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    broker = make_broker(rate_limit=20, rate_burst=5, flood_threshold=30)
    async with (
        client_for(broker, "robin", None) as robin,
        client_for(broker, "batman", None) as batman,
    ):
        flooder = zctx.socket(zmq.DEALER)
        flooder.setsockopt(zmq.LINGER, 0)
        flooder.connect(broker.router)
        flooder.send(pack({"type": "hello", "v": 1, "nick": "flooder"}))
        await wait_event(robin, type="join", nick="flooder")
        for n in range(300):
            flooder.send(pack({"type": "say", "room": "lobby", "text": f"spam {n}"}))
        left = await wait_for(robin, Left, nick="flooder")
        assert left.reason == "flood"
        recv_until(flooder, lambda frame: unpack(frame).get("code") == "rate_limited")
        await batman.say("still chatting")
        await wait_event(robin, type="msg", nick="batman", text="still chatting")
        counters = broker.core.counters
        assert counters.errors["rate_limited"] > 0
        assert counters.messages < 300


async def test_max_clients_holds(make_broker: Callable[..., BrokerThread]) -> None:
    broker = make_broker(max_clients=2)
    async with client_for(broker, "a", None), client_for(broker, "b", None):
        with pytest.raises(RegistrationError) as full:
            await client_for(broker, "c", None).connect()
        assert full.value.code == "full"
        assert broker.core.sessions == 2


# ====================================================================== command line


def test_cli_keygen_broker_and_clients_over_curve(
    zchat_proc: Callable[..., ZchatProcess], tmp_path: Path
) -> None:
    keydir, allow = tmp_path / "keys", tmp_path / "allow"
    for name in ("broker", "alice", "bob"):
        gen = zchat_proc("keygen", str(keydir), "--name", name)
        gen.expect(r"secret key: .*\.key_secret")
        assert gen.wait() == 0
    assert stat.S_IMODE((keydir / "alice.key_secret").stat().st_mode) == 0o600
    again = zchat_proc("keygen", str(keydir), "--name", "alice")
    assert again.wait() == 1
    allow.mkdir()
    for name in ("alice", "bob"):
        (allow / f"{name}.key").write_bytes((keydir / f"{name}.key").read_bytes())

    broker = start_broker(
        zchat_proc,
        heartbeat=0.2,
        env={"ZCHAT_SECRET_KEY": str(keydir / "broker.key_secret"), "ZCHAT_ALLOW": str(allow)},
    )
    endpoints = ["--router", broker.router, "--pub", broker.pub]
    server = ["--server-key", str(keydir / "broker.key")]
    common = [*endpoints, *server, "--json", "--connect-timeout", "10"]
    bob = zchat_proc("client", "--nick", "bob", *common, "--key", str(keydir / "bob.key_secret"))
    bob.expect_json(type="status", state="connected")
    alice = zchat_proc(
        "client", "--nick", "alice", *common, env={"ZCHAT_KEY": str(keydir / "alice.key_secret")}
    )
    alice.expect_json(type="status", state="connected")
    alice.send("hello over CURVE")
    msg = bob.expect_json(type="msg", nick="alice")
    assert msg["text"] == "hello over CURVE"

    # A plaintext client, and one whose key is not listed: clear, non-zero, in time.
    plain = zchat_proc("client", "--nick", "mallory", *endpoints, "--connect-timeout", "1")
    assert plain.wait(10) == 3
    wait_for_line(plain.stderr_lines, "--server-key")
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    stranger = zchat_proc(
        "client", "--nick", "eve", *endpoints, *server, "--connect-timeout", "1", env=env
    )
    assert stranger.wait(10) == 3
    wait_for_line(stranger.stderr_lines, "refused our key")
    # Its keypair was made on first use, owner-only.
    made = tmp_path / "config" / "zchat" / "client.key_secret"
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    assert [e for e in bob.events() if e.get("nick") in ("mallory", "eve")] == []


def test_cli_refuses_bad_security_options(
    zchat_proc: Callable[..., ZchatProcess], tmp_path: Path
) -> None:
    lonely = zchat_proc("broker", "--allow", str(tmp_path))
    assert lonely.wait(10) == 2
    wait_for_line(lonely.stderr_lines, "--allow needs --secret-key")
    public = generate_keypair(tmp_path, "broker").public
    wrong = zchat_proc("broker", "--secret-key", str(public))
    assert wrong.wait(10) == 2
    wait_for_line(wrong.stderr_lines, "no secret key")
    key_only = zchat_proc("client", "--nick", "a", "--key", str(public))
    assert key_only.wait(10) == 2
    wait_for_line(key_only.stderr_lines, "--key needs --server-key")


def test_broker_socket_options_enforce_zap(keys: Keys) -> None:
    broker = Broker(
        BrokerConfig(),
        router=ANY_PORT,
        pub=ANY_PORT,
        curve=keys.server(allow=False),
    )
    try:
        for sock in (broker.router, broker.pub):
            assert sock.getsockopt(zmq.CURVE_SERVER) == 1
            assert sock.getsockopt(zmq.ZAP_ENFORCE_DOMAIN) == 1
            assert sock.getsockopt_string(zmq.ZAP_DOMAIN) == "zchat"
    finally:
        broker.close(farewell=False)
    assert broker.auth is None


async def test_oversized_frames_under_curve_cost_only_their_sender(
    keys: Keys,
    curve_broker: Callable[..., BrokerThread],
    zctx: zmq.Context[zmq.Socket[bytes]],
) -> None:
    broker = curve_broker(keys.server(allow=False))
    async with client_for(broker, "robin", keys.pair("robin")) as robin:
        big = keys.pair("big")
        dealer = zctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.CURVE_SERVERKEY, big.server_public)
        dealer.setsockopt(zmq.CURVE_PUBLICKEY, big.public)
        dealer.setsockopt(zmq.CURVE_SECRETKEY, big.secret)
        dealer.connect(broker.router)
        # Past the application's limit, within the wire limit (CURVE overhead
        # included): a clear error, and the connection stays.
        dealer.send(pack({"type": "hello", "v": 1, "nick": "big", "pad": "x" * (MAX_FRAME + 1)}))
        error = unpack(recv_until(dealer, lambda frame: True))
        assert error["code"] == "too_large"
        # Past the wire limit: libzmq drops the connection before the broker sees it.
        dealer.send(b"\x00" * (MAX_WIRE_FRAME + 1))
        await robin.say("unbothered")
        await wait_event(robin, type="msg", text="unbothered")
        assert broker.core.counters.errors["too_large"] == 1


@pytest.mark.parametrize("command", ["ping", "stats"])
def test_health_checks_say_why_a_curve_broker_refuses_them(
    keys: Keys,
    curve_broker: Callable[..., BrokerThread],
    zchat_proc: Callable[..., ZchatProcess],
    tmp_path: Path,
    command: str,
) -> None:
    keys.pair("alice", allowed=True)  # before the broker reads its allow list
    broker = curve_broker(keys.server(allow=True))
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}  # a fresh, unlisted own key
    base = [command, "--router", broker.router, "--timeout", "1"]
    server_key = ["--server-key", str(keys.broker.public)]
    cases = [
        # libzmq reports a plaintext peer as a protocol error or without detail.
        ([], "--server-key"),
        (server_key, "the broker refused our key"),
    ]
    for extra, cause in cases:
        proc = zchat_proc(*base, *extra, env=env)
        assert proc.wait() == 3
        assert len(proc.stderr_lines) == 1, proc.stderr_lines
        assert cause in proc.stderr_lines[0], proc.stderr_lines
        assert "no broker answered" not in proc.stderr_lines[0]
    alice = ["--key", str(keys.root / "keys" / "alice.key_secret")]
    assert zchat_proc(*base, *server_key, *alice, env=env).wait() == 0


def test_broker_counts_and_logs_refused_handshakes(
    keys: Keys, zchat_proc: Callable[..., ZchatProcess], tmp_path: Path
) -> None:
    keys.pair("alice", allowed=True)
    args = ["--secret-key", str(keys.broker.secret), "--allow", str(keys.allow)]
    broker = start_broker(zchat_proc, *args)
    server_key = ["--server-key", str(keys.broker.public)]
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}  # a fresh, unlisted own key
    stranger = zchat_proc(
        "ping", "--router", broker.router, "--timeout", "0.5", *server_key, env=env
    )
    assert stranger.wait() == 3
    wait_for_line(broker.proc.stderr_lines, r"refused a CURVE handshake from 127\.0\.0\.1")
    alice = ["--key", str(keys.root / "keys" / "alice.key_secret")]
    reading = zchat_proc("stats", "--router", broker.router, "--json", *server_key, *alice)
    assert reading.wait() == 0
    assert reading.expect_json()["handshakes_refused"] >= 1


def test_a_plaintext_client_says_why_it_keeps_reconnecting(
    keys: Keys, zchat_proc: Callable[..., ZchatProcess]
) -> None:
    broker = start_broker(zchat_proc)
    client = zchat_proc("client", "--nick", "Robin", "--router", broker.router, "--pub", broker.pub)
    client.expect(r"connected as Robin")
    broker.proc.signal(signal.SIGKILL)
    broker.proc.wait()
    # Back on the same endpoints, now with CURVE: the plaintext client cannot get in.
    start_broker(zchat_proc, "--secret-key", str(keys.broker.secret), endpoints=broker.endpoints)
    line = client.expect(r"still reconnecting: ", timeout=30)
    assert "--server-key" in line
