"""``zchat bot`` and ``zchat ping``: the library, then real processes."""

from __future__ import annotations

import asyncio
import io
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ANY_PORT, BrokerThread, ZchatProcess
from helpers import wait_for, wait_for_line
from hypothesis import given
from hypothesis import strategies as st

from zchat import Client, CurveKeys, Joined, Left, Message, TopicSet
from zchat.broker.adapter import Broker
from zchat.broker.state import BrokerConfig
from zchat.client.probe import ping
from zchat.curve import generate_keypair, load_public, load_secret, load_server
from zchat.errors import NoAnswer, UsageError
from zchat.protocol import ErrorCode
from zchat.protocol.events import ErrorReply
from zchat.ratelimit import TokenBucket
from zchat.ui.bot import (
    COMMANDS_HELP,
    Bot,
    BotConfig,
    BotError,
    Show,
    answer,
    parse_lines,
    ration,
    read_script,
    run_bot,
)
from zchat.ui.input import Chat, SlashCommand

TIME_RE = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"


def env_for(broker: BrokerThread, **extra: str) -> dict[str, str]:
    return {"ZCHAT_ROUTER": broker.router, "ZCHAT_PUB": broker.pub, **extra}


def said_by(nick: str, text: str | None = None) -> Callable[[Message], bool]:
    def match(event: Message) -> bool:
        return event.nick == nick and (text is None or event.text == text)

    return match


# ---------------------------------------------------------------- pure parts


def test_parse_lines_skips_blanks_and_comments() -> None:
    lines = parse_lines(["hello", "", "  # a comment", "/me waves", "//slash", "/topic Gotham"])
    assert lines == (
        Chat("hello"),
        Chat("waves", action=True),
        Chat("/slash"),
        SlashCommand("topic", ("Gotham",)),
    )


@pytest.mark.parametrize("line", ["/join elsewhere", "/quit", "/topic", "/nosuch"])
def test_parse_lines_refuses_other_commands_with_the_line_number(line: str) -> None:
    with pytest.raises(BotError, match=r"^script line 2: "):
        parse_lines(["fine", line])


def test_read_script(tmp_path: Path) -> None:
    script = tmp_path / "lines.txt"
    script.write_text("# the bat-script\nTo the Batmobile!\n\n/me starts the engine\n")
    assert read_script(script) == (Chat("To the Batmobile!"), Chat("starts the engine", True))
    with pytest.raises(BotError, match="cannot read script"):
        read_script(tmp_path / "missing.txt")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nick": "bad nick", "lines": (Chat("x"),)}, "bad nick"),
        ({"nick": "Bot", "lines": (Chat("x"),), "room": "no room"}, "bad room"),
        ({"nick": "Bot"}, "needs lines"),
        ({"nick": "Bot", "respond": True, "interval": -1.0}, "negative"),
        ({"nick": "Bot", "lines": (Chat("x"),), "interval": 0.0}, "needs an interval"),
    ],
)
def test_config_refuses_what_cannot_work(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(BotError, match=message):
        BotConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "reply"),
    [
        ("!time", "Robin: 1970-01-01 00:00:00 UTC"),
        ("!TIME now", "Robin: 1970-01-01 00:00:00 UTC"),
        ("!echo  hi there ", "Robin: hi there"),
        ("!echo", "Robin: usage: !echo TEXT"),
        ("!who", "Robin: in lobby (3): Batman, robin, Superman"),
        ("!help", f"Robin: {COMMANDS_HELP}"),
        ("!nosuch", None),
        ("time", None),
        ("hello !time", None),
    ],
)
def test_answers(text: str, reply: str | None) -> None:
    users = ["robin", "Batman", "Superman"]
    assert answer(text, "Robin", room="lobby", users=users, now=0.0) == reply


def test_echo_is_bounded() -> None:
    reply = answer("!echo " + "x" * 5000, "Robin", room="lobby", users=[], now=0.0)
    assert reply is not None
    assert len(reply) < 500


nicks = st.text(
    alphabet=st.characters(blacklist_categories=("Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn")),
    min_size=1,
    max_size=32,
)


@given(asker=nicks, text=st.text(max_size=200), other=nicks)
def test_an_answer_is_never_a_command(asker: str, text: str, other: str) -> None:
    """Two responders can never set each other off: no answer is itself answered."""
    reply = answer("!" + text, asker, room="lobby", users=[asker], now=0.0)
    if reply is not None:
        assert answer(reply, other, room="lobby", users=[], now=0.0) is None


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=1.0, burst=2.0)
    assert bucket.take(100.0)
    assert bucket.take(100.0)
    assert not bucket.take(100.5)
    assert bucket.take(101.5)


def test_bot_answers_five_at_once_then_one_a_second() -> None:
    bucket = ration()
    assert all(bucket.take(100.0) for _ in range(5))
    assert not bucket.take(100.0)
    assert not bucket.take(100.9)
    assert bucket.take(101.0)
    assert not bucket.take(101.0)


# ---------------------------------------------------------------- the bot on a broker


async def test_bot_says_count_lines_cycling_then_leaves(broker: BrokerThread) -> None:
    async with Client("Gordon", router=broker.router, pub=broker.pub) as gordon:
        config = BotConfig(
            "Batman",
            parse_lines(["one", "/me two"]),
            interval=0.05,
            count=3,
            router=broker.router,
            pub=broker.pub,
        )
        out = io.StringIO()
        code = await run_bot(config, out=out)
        assert code == 0
        first = await wait_for(gordon, Message, said_by("Batman", "one"))
        assert first.action is False
        second = await wait_for(gordon, Message, said_by("Batman", "two"))
        assert second.action is True
        third = await wait_for(gordon, Message, said_by("Batman"))
        assert third.text == "one"
        await wait_for(gordon, Left, nick="Batman", reason="quit")
        assert third.seq > first.seq
    printed = out.getvalue().splitlines()
    assert any(line.endswith("<Batman> one") for line in printed), printed
    assert any(line.endswith("* Batman two") for line in printed), printed


async def test_bot_waits_delay_and_interval(broker: BrokerThread) -> None:
    async with Client("Gordon", router=broker.router, pub=broker.pub) as gordon:
        config = BotConfig(
            "Batman",
            (Chat("tick"),),
            interval=0.3,
            delay=0.2,
            count=2,
            router=broker.router,
            pub=broker.pub,
        )
        task = asyncio.create_task(run_bot(config, out=io.StringIO()))
        joined = await wait_for(gordon, Joined, nick="Batman")
        first = await wait_for(gordon, Message, said_by("Batman", "tick"))
        second = await wait_for(gordon, Message, said_by("Batman", "tick"))
        assert await task == 0
    # Broker timestamps: no line before its due time (the lower bound only).
    assert first.ts - joined.ts >= 0.2 - 0.05
    assert second.ts - first.ts >= 0.3 - 0.05


async def test_bot_sets_topic_from_its_script(broker: BrokerThread) -> None:
    async with Client("Gordon", router=broker.router, pub=broker.pub) as gordon:
        config = BotConfig(
            "Batman",
            parse_lines(["/topic Gotham at night"]),
            count=1,
            router=broker.router,
            pub=broker.pub,
        )
        assert await run_bot(config, out=io.StringIO()) == 0
        event = await wait_for(gordon, TopicSet, nick="Batman")
        assert event.text == "Gotham at night"


async def test_responder_answers_in_its_room_only(broker: BrokerThread) -> None:
    config = BotConfig("Batman", respond=True, show=Show.OWN, router=broker.router, pub=broker.pub)
    # In two rooms, but its bot talks in lobby only.
    bot_client = Client(
        "Batman", router=broker.router, pub=broker.pub, rooms=["lobby", "cave"], backlog=0
    )
    await bot_client.connect()
    out = io.StringIO()
    bot = Bot(config, bot_client, out=out)
    running = asyncio.create_task(bot.run())
    async with Client(
        "Robin", router=broker.router, pub=broker.pub, rooms=["lobby", "cave"]
    ) as robin:
        await robin.say("!echo not here", "cave")
        await robin.say("!time", "lobby")
        # Seen in that order: an answer in cave would come first.
        reply = await wait_for(robin, Message, said_by("Batman"))
        assert re.fullmatch(f"Robin: {TIME_RE}", reply.text), reply
        await robin.say("!echo holy echo, Batman", "lobby")
        reply = await wait_for(robin, Message, said_by("Batman"))
        assert reply.text == "Robin: holy echo, Batman"
        assert reply.room == "lobby"
        await robin.say("!who", "lobby")
        reply = await wait_for(robin, Message, said_by("Batman"))
        assert reply.text == "Robin: in lobby (2): Batman, Robin"
        bot.stop()
        await running
    assert bot.answered == 3
    printed = out.getvalue()
    # show=own: its own answers, not Robin's questions.
    assert "<Batman> Robin: holy echo, Batman" in printed
    assert "<Robin>" not in printed


async def test_responders_do_not_answer_themselves_or_each_other(broker: BrokerThread) -> None:
    bots: list[Bot] = []
    for nick, lines in (("Alfred", ()), ("Batman", ("!echo !echo !help",))):
        config = BotConfig(
            nick,
            tuple(Chat(text) for text in lines),
            count=1,
            respond=True,
            show=Show.NONE,
            router=broker.router,
            pub=broker.pub,
        )
        client = Client(nick, router=broker.router, pub=broker.pub, backlog=0)
        await client.connect()
        bots.append(Bot(config, client, out=io.StringIO()))
    # Both are in the room before Batman says his line.
    tasks = [asyncio.create_task(bot.run()) for bot in bots]
    async with Client("Robin", router=broker.router, pub=broker.pub) as robin:
        await wait_for(robin, Message, said_by("Batman", "!echo !echo !help"))
        answer_event = await wait_for(robin, Message, said_by("Alfred"))
        assert answer_event.text == "Batman: !echo !help"
        # Both bots see the marker after everything above: had either answered
        # the answer (or itself), that message would come before the marker's.
        await robin.say("!echo marker")
        seen: list[str] = []
        while len(seen) < 2:
            event = await wait_for(robin, Message, lambda e: e.nick != "Robin")
            assert event.text == "Robin: marker", f"unexpected {event.nick}: {event.text}"
            seen.append(event.nick)
        assert sorted(seen) == ["Alfred", "Batman"]
    for bot in bots:
        bot.stop()
    await asyncio.gather(*tasks)
    assert [bot.answered for bot in bots] == [2, 1]


# ---------------------------------------------------------------- processes


def test_bot_process_from_environment_only(
    broker: BrokerThread, zchat_proc: Callable[..., ZchatProcess]
) -> None:
    bot = zchat_proc(
        "bot",
        env=env_for(
            broker,
            ZCHAT_NICK="Robin",
            ZCHAT_SAY="Holy env vars!\n/me checks the utility belt\n",
            ZCHAT_COUNT="3",
            ZCHAT_INTERVAL="0.05",
            ZCHAT_ROOM="cave",
        ),
    )
    assert bot.wait() == 0, bot.stderr_lines
    bot.expect(r"^--> Robin joined cave$")
    bot.expect(r"<Robin> Holy env vars!$")
    bot.expect(r"\* Robin checks the utility belt$")
    bot.expect(r"<Robin> Holy env vars!$")


def test_bot_process_script_file(
    broker: BrokerThread, zchat_proc: Callable[..., ZchatProcess], tmp_path: Path
) -> None:
    script = tmp_path / "robin.txt"
    script.write_text("# Robin's lines\nHoly scripts, Batman!\n!time\n")
    responder = zchat_proc("bot", "--nick", "Batman", "--respond", env=env_for(broker))
    responder.expect(r"connected as Batman")
    robin = zchat_proc(
        "bot",
        "--nick",
        "Robin",
        "--script",
        str(script),
        "--count",
        "2",
        "--interval",
        "0",
        env=env_for(broker),
    )
    assert robin.wait() == 0, robin.stderr_lines
    responder.expect(r"<Robin> Holy scripts, Batman!$")
    responder.expect(r"<Robin> !time$")
    responder.expect(f"<Batman> Robin: {TIME_RE}$")
    responder.signal(signal.SIGTERM)
    assert responder.wait() == 0


def test_bot_process_sigterm_says_bye_and_exits_0(
    broker: BrokerThread, zchat_proc: Callable[..., ZchatProcess]
) -> None:
    listener = zchat_proc("client", "--json", "--nick", "Gordon", env=env_for(broker))
    listener.expect_json(type="status", state="connected")
    bot = zchat_proc(
        "bot", "--nick", "Batman", "--say", "forever", "--interval", "30", env=env_for(broker)
    )
    bot.expect(r"<Batman> forever$")
    bot.signal(signal.SIGTERM)
    assert bot.wait(timeout=5) == 0, bot.stderr_lines
    listener.expect_json(type="leave", nick="Batman", reason="quit")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nick", "Batman"], "needs lines"),
        (["--nick", "bad nick", "--say", "x"], "bad nick"),
        (["--nick", "Batman", "--say", "/quit"], r"--say line 1: only chat"),
        (["--nick", "Batman", "--say", "x", "--show", "loud"], "--show must be"),
        (["--nick", "Batman", "--say", "x", "--script", "f.txt"], "not both"),
    ],
)
def test_bot_process_usage_errors(
    zchat_proc: Callable[..., ZchatProcess], args: list[str], message: str
) -> None:
    proc = zchat_proc("bot", *args)
    assert proc.wait() == 2
    wait_for_line(proc.stderr_lines, message)
    assert not any("Traceback" in line for line in proc.stderr_lines)


def test_bot_process_without_broker(
    zchat_proc: Callable[..., ZchatProcess], dead_endpoint: Callable[[], str]
) -> None:
    proc = zchat_proc(
        "bot", "--nick", "Batman", "--respond", "--connect-timeout", "0.5",
        "--router", dead_endpoint(), "--pub", dead_endpoint(),
    )  # fmt: skip
    assert proc.wait() == 3
    wait_for_line(proc.stderr_lines, "^zchat: no broker answered at tcp://127.0.0.1:")


# ---------------------------------------------------------------- ping


def test_ping_library(broker: BrokerThread, dead_endpoint: Callable[[], str]) -> None:
    reply = ping(broker.router, 5.0)
    assert isinstance(reply.event, ErrorReply)
    assert reply.event.code == ErrorCode.NOT_REGISTERED
    assert "answered in" in reply.describe()
    nowhere = dead_endpoint()
    with pytest.raises(NoAnswer, match=f"no broker answered at {nowhere} within 0.2s"):
        ping(nowhere, 0.2)
    with pytest.raises(UsageError, match="bad endpoint"):
        ping("nonsense", 0.2)


def test_ping_process_success(
    broker: BrokerThread, zchat_proc: Callable[..., ZchatProcess]
) -> None:
    proc = zchat_proc("ping", "--router", broker.router, "--timeout", "5")
    assert proc.wait() == 0, proc.stderr_lines
    proc.expect(r"^zchat: broker at .* answered in [\d.]+ ms \(error not_registered\)$")


def test_ping_process_from_environment(
    broker: BrokerThread, zchat_proc: Callable[..., ZchatProcess]
) -> None:
    proc = zchat_proc("ping", env={"ZCHAT_ROUTER": broker.router, "ZCHAT_PING_TIMEOUT": "5"})
    assert proc.wait() == 0, proc.stderr_lines


def test_ping_process_failure_is_bounded_and_clear(
    zchat_proc: Callable[..., ZchatProcess], dead_endpoint: Callable[[], str]
) -> None:
    router = dead_endpoint()
    started = time.monotonic()
    proc = zchat_proc("ping", "--router", router, "--timeout", "0.5")
    # A hang guard, not a performance figure: the timeout is honoured, not exceeded by much.
    assert proc.wait(timeout=20) == 3
    assert time.monotonic() - started < 20
    line = wait_for_line(proc.stderr_lines, "no broker")
    assert line == f"zchat: no broker answered at {router} within 0.5s"


def test_ping_process_bad_endpoint(zchat_proc: Callable[..., ZchatProcess]) -> None:
    proc = zchat_proc("ping", "--router", "nonsense", "--timeout", "0.5")
    assert proc.wait() == 2
    wait_for_line(proc.stderr_lines, "^zchat: bad endpoint 'nonsense'")


# ---------------------------------------------------------------- CURVE


@dataclass
class CurveSetup:
    broker: BrokerThread
    server_key: Path
    client_key: Path
    keys: CurveKeys


@pytest.fixture
def curve_setup(tmp_path: Path) -> Iterator[CurveSetup]:
    server = generate_keypair(tmp_path, "broker")
    client = generate_keypair(tmp_path, "bot")
    public, secret = load_secret(client.secret)
    broker = BrokerThread(
        Broker(
            BrokerConfig(heartbeat=0.5),
            router=ANY_PORT,
            pub=ANY_PORT,
            curve=load_server(server.secret),
        )
    )
    yield CurveSetup(
        broker, server.public, client.secret, CurveKeys(load_public(server.public), public, secret)
    )
    broker.stop()


def test_ping_and_bot_speak_curve(
    curve_setup: CurveSetup, zchat_proc: Callable[..., ZchatProcess]
) -> None:
    broker = curve_setup.broker
    reply = ping(broker.router, 5.0, curve=curve_setup.keys)
    assert isinstance(reply.event, ErrorReply)
    with pytest.raises(NoAnswer):
        ping(broker.router, 0.3)  # a plain ping cannot pass a CURVE handshake
    keys = {
        "ZCHAT_SERVER_KEY": str(curve_setup.server_key),
        "ZCHAT_KEY": str(curve_setup.client_key),
    }
    probe = zchat_proc("ping", "--router", broker.router, "--timeout", "5", env=keys)
    assert probe.wait() == 0, probe.stderr_lines
    bot = zchat_proc(
        "bot", "--nick", "Batman", "--say", "encrypted", "--count", "1", env=env_for(broker, **keys)
    )
    assert bot.wait() == 0, bot.stderr_lines
    bot.expect("<Batman> encrypted$")
