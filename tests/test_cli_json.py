"""``zchat client --json`` is a machine interface: every line on stdout is one JSON object
(docs/cli-json.md), errors and local output included, and nothing goes to stderr."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from conftest import ZchatProcess
from helpers import start_broker, start_client, wait_for_line

from zchat.ui.input import COMMANDS


def test_every_line_of_json_mode_is_a_json_object(
    zchat_proc: Callable[..., ZchatProcess],
) -> None:
    broker = start_broker(zchat_proc)
    bat = start_client(zchat_proc, broker, "Batman", "--json")
    bat.expect_json(type="join", nick="Batman")
    bat.send("/msg nobody hi")
    error = bat.expect_json(type="error", code="no_such_nick")
    assert (error["command"], error["to"], error["reason"]) == (
        "msg",
        "nobody",
        "no one is called nobody",
    )
    bat.send("/bogus x")
    error = bat.expect_json(type="error", code="bad_input")
    assert error["command"] == "bogus"
    assert "unknown command /bogus" in error["reason"]
    bat.send("/join " + "x" * 70)
    assert bat.expect_json(type="error", command="join")["code"] == "bad_room"
    bat.send("/who")
    who = bat.expect_json(type="info", what="who")
    assert (who["room"], who["users"], who["count"]) == ("lobby", ["Batman"], 1)
    assert isinstance(who["seq"], int)
    assert who["text"] == "lobby (1): Batman"
    bat.send("/help")
    helps = [bat.expect_json(type="info", what="help") for _ in range(len(COMMANDS) + 1)]
    assert helps[0]["text"].startswith("/join ROOM")
    bat.send("/topic")
    topic = bat.expect_json(type="info", what="topic")
    assert (topic["room"], topic["topic"]) == ("lobby", "")
    bat.send("/join den")
    assert bat.expect_json(type="info", what="joined")["room"] == "den"
    bat.send("hello den")
    bat.expect_json(type="msg", text="hello den", room="den")
    bat.close_stdin()
    assert bat.wait() == 0
    bat.events()  # drain
    assert bat.seen
    for line in bat.seen:
        assert isinstance(json.loads(line), dict), line
    assert bat.stderr_lines == []


def test_a_fatal_error_in_json_mode_is_a_json_object(
    zchat_proc: Callable[..., ZchatProcess],
) -> None:
    broker = start_broker(zchat_proc)
    bat = start_client(zchat_proc, broker, "Batman", "--json")
    bat.expect_json(type="join", nick="Batman")
    for nick, code in (("batman", "nick_taken"), ("bat man", "bad_nick")):
        dup = start_client(zchat_proc, broker, nick, "--json")
        assert dup.wait() == 1
        error = dup.expect_json(type="error")
        assert (error["code"], error["fatal"]) == (code, True)
        assert dup.stderr_lines == []
    bat.close_stdin()
    assert bat.wait() == 0


def test_an_unusable_log_dir_in_json_mode_is_a_json_object(
    zchat_proc: Callable[..., ZchatProcess], tmp_path: Path
) -> None:
    """Refused before connecting (nothing listens at the endpoints): exit 2, one JSON
    object on stdout, nothing on stderr; text mode says the same on stderr."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    target = ("tcp://127.0.0.1:1", "tcp://127.0.0.1:1")
    bad = str(blocker / "logs")
    client = start_client(zchat_proc, target, "Batman", "--json", "--log-dir", bad)
    assert client.wait() == 2
    error = client.expect_json(type="error")
    assert (error["code"], error["fatal"]) == ("bad_input", True)
    assert "--log-dir" in error["reason"]
    assert client.stderr_lines == []
    text = start_client(zchat_proc, target, "Batman", "--log-dir", bad)
    assert text.wait() == 2
    wait_for_line(text.stderr_lines, r"^zchat: cannot use --log-dir ")
