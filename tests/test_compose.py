"""docker-compose.yml, proven without a Docker engine.

The file is read as Compose would read it, then every default service's
``command`` runs as ``python -m zchat <command>`` (the image's entrypoint is
``zchat``) with the service's ``environment``: the broker's service name and
wildcard binds become 127.0.0.1, the broker binds ports of its own choosing and
every mention of a port it binds becomes the one it got. The bots'
conversation must reach a listening client, and the healthcheck, as written,
must pass. That tests the demo's commands, options and environment, not just
its syntax (``docker-compose config -q`` in CI checks that).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest
import yaml
from conftest import ANY_PORT, ROOT, ZchatProcess
from helpers import listening, web_listening
from websockets.sync.client import connect
from websockets.typing import Origin

from zchat.ui.bot import parse_lines
from zchat.ui.input import Chat

COMPOSE = ROOT / "docker-compose.yml"
IMAGE = "zchat:local"
ENDPOINT = re.compile(r"tcp://([^:/\s]+):(\d+)")
LOCAL_HOSTS = {"*", "0.0.0.0", "127.0.0.1", "localhost"}
TRUE = {"1", "true", "yes", "on"}


def load() -> dict[str, Any]:
    spec = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(spec, dict)
    return spec


def interpolate(value: str) -> str:
    """Compose's variable syntax, with an empty environment (defaults apply)."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        assert match.group(1), f"unsupported variable syntax in {value!r}"
        return match.group(3) or ""

    return re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}|\$", sub, value)


def services(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = spec["services"]
    assert isinstance(out, dict)
    return out


def default_services(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What a plain ``docker compose up`` starts: every service without a profile."""
    return {name: svc for name, svc in services(spec).items() if not svc.get("profiles")}


def command(svc: dict[str, Any]) -> list[str]:
    raw = svc.get("command", [])
    args = shlex.split(raw) if isinstance(raw, str) else [str(a) for a in raw]
    return [interpolate(a) for a in args]


def environment(svc: dict[str, Any]) -> dict[str, str]:
    raw = svc.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {str(k): interpolate("" if v is None else str(v)) for k, v in raw.items()}


@dataclass
class Localiser:
    """Turns the file's endpoints into local ones. A server binds port 0; then each
    port of the file maps to the port its server really got (:meth:`learn`)."""

    hosts: set[str]
    ports: dict[str, str] = field(default_factory=dict)

    def __call__(self, text: str, *, bind: bool = False) -> str:
        def sub(match: re.Match[str]) -> str:
            host, port = match.groups()
            assert host in self.hosts, f"{text!r}: host {host!r} is no service of this file"
            if bind:
                return ANY_PORT
            assert port in self.ports, f"{text!r}: port {port} is bound by no service started"
            return f"tcp://127.0.0.1:{self.ports[port]}"

        return ENDPOINT.sub(sub, text)

    def env(self, svc: dict[str, Any], *, bind: bool = False) -> dict[str, str]:
        return {key: self(value, bind=bind) for key, value in environment(svc).items()}

    def learn(self, written: str, bound: str) -> None:
        """The endpoint ``written`` in the file was bound locally as ``bound``."""
        found, real = ENDPOINT.search(written), ENDPOINT.fullmatch(bound)
        assert found is not None, written
        assert real is not None, bound
        self.ports[found.group(2)] = real.group(2)


def said(nick: str, text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event.get("nick") == nick and event.get("text") == text


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the file configures the services: no ZCHAT_* from the test's environment."""
    for key in list(os.environ):
        if key.startswith("ZCHAT_"):
            monkeypatch.delenv(key)


# ---------------------------------------------------------------- the file itself


def cluster_services(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What ``docker compose --profile cluster up`` adds (docs/cluster.md)."""
    return {n: svc for n, svc in services(spec).items() if "cluster" in svc.get("profiles", [])}


def test_compose_file_shape() -> None:
    spec = load()
    assert "name" not in spec, "docker-compose 1.29 rejects a top-level name"
    every = {n: svc for n, svc in services(spec).items() if n not in cluster_services(spec)}
    defaults = default_services(spec)
    builders = [name for name, svc in every.items() if "build" in svc]
    assert builders == ["broker"], "one service builds the image"
    for name, svc in every.items():
        assert svc.get("image") == IMAGE, f"{name} reuses the one image"
        assert svc.get("init") is True, f"{name}: an init forwards SIGTERM"
        assert "start_interval" not in svc.get("healthcheck", {}), "1.29 rejects it"
        assert len(command(svc)) == 1, f"{name}: configured by environment only"
        if name != "broker":
            assert svc.get("pull_policy") == "never", f"{name}: the image is built, not pulled"
            assert svc["depends_on"] == {"broker": {"condition": "service_healthy"}}
    assert {"batman", "superman", "robin"} <= set(defaults)
    bots = [svc for svc in defaults.values() if command(svc) == ["bot"]]
    assert len(bots) >= 3
    assert any(environment(svc).get("ZCHAT_RESPOND", "").lower() in TRUE for svc in bots)
    client = every["client"]
    assert client.get("profiles"), "the interactive client is not started by `up`"
    assert command(client) == ["client"]
    assert client.get("stdin_open") is True
    assert client.get("tty") is True
    assert "ZCHAT_NICK" in environment(client)
    health = every["broker"]["healthcheck"]["test"]
    assert health[:3] == ["CMD", "zchat", "ping"]
    web = defaults["web"]
    assert command(web) == ["web"]
    assert web["ports"] == ["8080:8080"]
    assert environment(web)["ZCHAT_WEB_LISTEN"] == "0.0.0.0:8080"


def test_broker_is_reachable_from_the_host_and_keeps_history() -> None:
    spec = load()
    broker = services(spec)["broker"]
    env = environment(broker)
    # The broker's own default is loopback: inside a container that reaches nobody.
    for key in ("ZCHAT_ROUTER", "ZCHAT_PUB"):
        found = ENDPOINT.fullmatch(env[key])
        assert found is not None, env[key]
        assert found.group(1) == "0.0.0.0", f"{key} must listen on every interface"
        assert f"127.0.0.1:{found.group(2)}:{found.group(2)}" in broker["ports"]
    db = env["ZCHAT_DB"]
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in broker["volumes"]}
    folder = db.rpartition("/")[0]
    assert folder in mounts, f"{db} is not on a volume"
    assert mounts[folder] in spec["volumes"], "a named volume, kept across `down`"


def test_cluster_profile_shape() -> None:
    spec = load()
    cluster = cluster_services(spec)
    assert cluster["redis"]["image"].startswith("redis:")
    assert "--appendonly" in cluster["redis"]["command"]
    nodes = {n: svc for n, svc in cluster.items() if command(svc) == ["broker"]}
    assert len(nodes) == 3
    ids = set()
    for svc in nodes.values():
        env = environment(svc)
        assert env["ZCHAT_CLUSTER"] == "redis://redis:6379/0"
        ids.add(env["ZCHAT_NODE_ID"])
        assert svc["depends_on"]["redis"] == {"condition": "service_healthy"}
        assert svc["healthcheck"]["test"][:3] == ["CMD", "zchat", "ping"]
    assert len(ids) == 3
    bots = [svc for svc in cluster.values() if command(svc) == ["bot"]]
    assert len(bots) >= 3
    used: set[str] = set()
    for bot in bots:
        env = environment(bot)
        routers = env["ZCHAT_ROUTER"].split(",")
        assert len(routers) == len(env["ZCHAT_PUB"].split(",")) >= 2, "a bot fails over"
        used.add(routers[0])
    assert len(used) == 3, "the bots start spread over the three nodes"
    # The default `up` stays one broker.
    assert not set(cluster) & set(default_services(spec))


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
@pytest.mark.parametrize("profile", [[], ["--profile", "cluster"]])
def test_docker_compose_accepts_the_file(profile: list[str]) -> None:
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), *profile, "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------- the services, run


def test_default_services_hold_a_conversation(
    zchat_proc: Callable[..., ZchatProcess], clean_env: None, tmp_path: Path
) -> None:
    spec = load()
    defaults = default_services(spec)
    local = Localiser(LOCAL_HOSTS | set(defaults))
    procs: dict[str, ZchatProcess] = {}

    # The broker first, as its dependants wait for it to be healthy; its
    # database goes where the volume would be.
    broker = defaults["broker"]
    broker_env = local.env(broker, bind=True)
    if "ZCHAT_DB" in broker_env:
        broker_env["ZCHAT_DB"] = str(tmp_path / Path(broker_env["ZCHAT_DB"]).name)
    procs["broker"] = zchat_proc(*command(broker), env=broker_env)
    router, pub = listening(procs["broker"])
    local.learn(environment(broker)["ZCHAT_ROUTER"], router)
    local.learn(environment(broker)["ZCHAT_PUB"], pub)
    check = broker["healthcheck"]
    test = [local(interpolate(str(arg))) for arg in check["test"]]
    assert test[:2] == ["CMD", "zchat"]
    failures: list[list[str]] = []
    # Compose would try `retries` times; a few tries show a broker that starts.
    for _ in range(min(int(check.get("retries", 3)), 3)):
        probe = zchat_proc(*test[2:], env=local.env(broker))
        if probe.wait(timeout=30) == 0:
            break
        failures.append(probe.stderr_lines)
    else:
        pytest.fail(f"the healthcheck never passed: {failures}")

    # A listener on the bots' endpoints, then every other default service.
    bots = {name: svc for name, svc in defaults.items() if command(svc) == ["bot"]}
    webs = {name: svc for name, svc in defaults.items() if command(svc) == ["web"]}
    assert set(defaults) == {"broker", *bots, *webs}
    some_bot = local.env(next(iter(bots.values())))
    listener = zchat_proc(
        "client",
        "--json",
        env={
            "ZCHAT_NICK": "Listener",
            "ZCHAT_ROUTER": some_bot["ZCHAT_ROUTER"],
            "ZCHAT_PUB": some_bot["ZCHAT_PUB"],
        },
    )
    listener.expect_json(type="status", state="connected")
    for name, svc in bots.items():
        procs[name] = zchat_proc(*command(svc), env=local.env(svc))
    for name, svc in webs.items():
        # The file's port is published by Docker; here the gateway picks a free one.
        env = local.env(svc) | {"ZCHAT_WEB_LISTEN": "127.0.0.1:0"}
        procs[name] = zchat_proc(*command(svc), env=env)

    # Each bot's first line reaches the listener; a command gets its answer.
    wanted: dict[str, Callable[[dict[str, Any]], bool]] = {}
    responders = []
    first_command: tuple[str, str, str] | None = None
    for name, svc in bots.items():
        env = environment(svc)
        nick = env["ZCHAT_NICK"]
        lines = parse_lines(env["ZCHAT_SAY"].splitlines(), "ZCHAT_SAY")
        first = lines[0]
        assert isinstance(first, Chat)
        wanted[f"{nick}'s first line"] = said(nick, first.text)
        if env.get("ZCHAT_RESPOND", "").lower() in TRUE:
            responders.append(nick)
        elif first.text.startswith("!") and first_command is None:
            first_command = (name, nick, first.text)
    assert responders, "no bot answers"
    assert first_command is not None, "no bot opens with a !command for the responder"
    asking, asker, question = first_command
    wanted[f"an answer to {asker}'s {question}"] = lambda e: (
        e.get("nick") in responders and str(e.get("text", "")).startswith(f"{asker}: ")
    )
    missing = dict(wanted)

    def progress(line: str) -> bool:
        event = json.loads(line)
        if event.get("type") == "msg":
            for what, match in list(missing.items()):
                if match(event):
                    del missing[what]
        return not missing

    listener.expect(progress, timeout=40)

    # What `docker compose up` shows: each bot prints its own lines.
    procs[asking].expect(re.escape(f"<{asker}> {question}"))

    # The browser gateway serves the page, and a page from the allowed origin gets in.
    for name in webs:
        port = web_listening(procs[name])
        allowed = environment(webs[name])["ZCHAT_WEB_ALLOW_ORIGIN"]
        with urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
            assert "Content-Security-Policy" in page.headers
        with connect(f"ws://127.0.0.1:{port}/ws", origin=Origin(allowed)) as ws:
            ws.send(json.dumps({"type": "hello", "nick": "Visitor"}))
            welcome = json.loads(ws.recv(timeout=10))
            assert welcome["type"] == "welcome", welcome
            assert set(responders) <= set(welcome["rooms"]["lobby"]["users"])

    # `docker compose down`: SIGTERM, and every service leaves at once with 0.
    for name in [*bots, *webs, "broker"]:
        procs[name].signal(signal.SIGTERM)
        assert procs[name].wait(timeout=10) == 0, (name, procs[name].stderr_lines[-5:])


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_cluster_profile_holds_one_conversation_across_nodes(
    zchat_proc: Callable[..., ZchatProcess], clean_env: None, tmp_path: Path
) -> None:
    """`docker compose --profile cluster up`, locally: a real Redis for the redis
    service, the three node services as brokers, the cluster bots; a listener on
    one node hears every bot, whichever node it is on."""
    from redis_servers import RedisProcess

    spec = load()
    cluster = cluster_services(spec)
    redis_server = RedisProcess(tmp_path)
    try:
        real: dict[tuple[str, str], str] = {}

        def localise(text: str) -> str:
            def sub(match: re.Match[str]) -> str:
                return real[(match.group(1), match.group(2))]

            return ENDPOINT.sub(sub, text)

        procs: dict[str, ZchatProcess] = {}
        nodes = {n: svc for n, svc in cluster.items() if command(svc) == ["broker"]}
        for name, svc in nodes.items():
            env = environment(svc)
            assert env["ZCHAT_CLUSTER"].startswith("redis://redis:6379/")
            env.update(
                ZCHAT_ROUTER=ANY_PORT,
                ZCHAT_PUB=ANY_PORT,
                ZCHAT_CLUSTER=redis_server.url,
                ZCHAT_HEARTBEAT="0.5",
            )
            procs[name] = zchat_proc(*command(svc), env=env)
            router, pub = listening(procs[name])
            real[(name, "5555")], real[(name, "5556")] = router, pub
        bots = {n: svc for n, svc in cluster.items() if command(svc) == ["bot"]}
        first_node = next(iter(nodes))
        listener = zchat_proc(
            "client",
            "--json",
            env={
                "ZCHAT_NICK": "Listener",
                "ZCHAT_ROUTER": real[(first_node, "5555")],
                "ZCHAT_PUB": real[(first_node, "5556")],
            },
        )
        listener.expect_json(type="status", state="connected")
        missing: dict[str, Callable[[dict[str, Any]], bool]] = {}
        for name, svc in bots.items():
            env = {key: localise(value) for key, value in environment(svc).items()}
            procs[name] = zchat_proc(*command(svc), env=env)
            first = parse_lines(env["ZCHAT_SAY"].splitlines(), "ZCHAT_SAY")[0]
            assert isinstance(first, Chat)
            missing[env["ZCHAT_NICK"]] = said(env["ZCHAT_NICK"], first.text)

        def progress(line: str) -> bool:
            event = json.loads(line)
            for nick, match in list(missing.items()):
                if event.get("type") == "msg" and match(event):
                    del missing[nick]
            return not missing

        listener.expect(progress, timeout=40)
        for name in [*bots, *nodes]:
            procs[name].signal(signal.SIGTERM)
            assert procs[name].wait(timeout=10) == 0, (name, procs[name].stderr_lines[-5:])
    finally:
        redis_server.kill()
