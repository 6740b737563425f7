"""Issue 16, daily use in line mode: real ``zchat client`` processes against a broker."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ROOT, BrokerThread, ZchatProcess
from helpers import start_broker, start_client

from zchat.protocol.events import Joined, Left, Message
from zchat.ui.config import load as load_config
from zchat.ui.noise import CROWD, Joins, hidden
from zchat.ui.transcript import log_file


@pytest.mark.parametrize(
    ("joins", "history", "members", "shown"),
    [
        (Joins.AUTO, False, CROWD, True),
        (Joins.AUTO, False, CROWD + 1, False),
        (Joins.AUTO, True, 2, False),
        (Joins.SHOW, True, CROWD + 1, True),
        (Joins.HIDE, False, 2, False),
    ],
)
def test_presence_lines_follow_the_setting(
    joins: Joins, history: bool, members: int, shown: bool
) -> None:
    events: list[Joined | Left] = [
        Joined("lobby", "Bob", 1.0, 1, history=history),
        Left("lobby", "Bob", "quit", 1.0, 2, history=history),
    ]
    for event in events:
        assert hidden(event, joins=joins, members=members, own_nick="Ann") is not shown
    own = Joined("lobby", "ann", 1.0, 3, history=history)
    assert not hidden(own, joins=joins, members=members, own_nick="Ann")
    said = Message("lobby", "Bob", "hi", 1.0, 4, history=history)
    assert not hidden(said, joins=joins, members=members, own_nick="Ann")


def test_line_mode_prints_a_nick_change_once(
    broker: BrokerThread, zchat_proc: Callable[..., ZchatProcess]
) -> None:
    rooms = ("--room", "lobby", "--room", "dev", "--room", "ops")
    watcher = start_client(zchat_proc, broker, "Watcher", *rooms)
    watcher.expect(r"connected as Watcher")
    robin = start_client(zchat_proc, broker, "Robin", *rooms)
    robin.expect(r"connected as Robin")
    watcher.expect(r"--> Robin joined ops")
    robin.send("/nick Bird")
    watcher.expect(r"-!- Robin is now known as Bird$")
    robin.expect(r"-!- Robin is now known as Bird$")
    # Something after it, in order, proves the other copies were not merely late.
    robin.send("after")
    watcher.expect(r"<Bird> after")
    robin.expect(r"<Bird> after")
    for proc in (watcher, robin):
        assert sum("now known as" in line for line in proc.seen) == 1, proc.seen


def test_line_mode_labels_dms_and_query_talks_directly(
    broker: BrokerThread, zchat_proc: Callable[..., ZchatProcess]
) -> None:
    batman = start_client(zchat_proc, broker, "Batman")
    batman.expect(r"connected as Batman")
    robin = start_client(zchat_proc, broker, "Robin")
    robin.expect(r"connected as Robin")
    batman.send("/msg Robin psst")
    batman.expect(r"\d \[DM to Robin\] psst$")
    robin.expect(r"\d \[DM from Batman\] psst$")
    robin.send("/query Batman")
    robin.expect(r"-!- talking to Batman directly")
    robin.send("a secret")
    batman.expect(r"\[DM from Robin\] a secret$")
    robin.expect(r"\[DM to Batman\] a secret$")
    robin.send("/query")
    robin.expect(r"-!- talking in lobby")
    robin.send("in public")
    batman.expect(r"<Robin> in public$")
    assert not any("a secret" in line and "DM" not in line for line in batman.seen)


def test_line_mode_list_shows_rooms_and_who_of_an_unknown_room_says_so(
    broker: BrokerThread, zchat_proc: Callable[..., ZchatProcess]
) -> None:
    batman = start_client(zchat_proc, broker, "Batman", "--room", "lobby", "--room", "cave")
    batman.expect(r"connected as Batman")
    robin = start_client(zchat_proc, broker, "Robin")
    robin.expect(r"connected as Robin")
    batman.send("/topic Bat business")  # the current room is the first: lobby
    batman.expect(r"set the topic of lobby")
    robin.send("/list")
    robin.expect(r"^-!- 2 rooms:$")
    robin.expect(r"^-!-   lobby \(2\): Bat business$")
    robin.expect(r"^-!-   cave \(1\)$")
    robin.send("/who nosuchroom")
    robin.expect(r"^-!- no room nosuchroom: nobody is in it")
    assert not any("nosuchroom (0)" in line for line in robin.seen)


def test_line_mode_backlog_keeps_the_conversation_not_the_joins(
    broker: BrokerThread, zchat_proc: Callable[..., ZchatProcess]
) -> None:
    robin = start_client(zchat_proc, broker, "Robin")
    robin.expect(r"connected as Robin")
    batman = start_client(zchat_proc, broker, "Batman")
    robin.expect(r"--> Batman joined lobby$")  # live, in a small room: shown
    batman.send("hello")
    robin.expect(r"<Batman> hello$")
    quiet = start_client(zchat_proc, broker, "Alfred")
    quiet.expect(r"\(history\) .*<Batman> hello$")
    quiet.send("/who")  # a later line: the backlog is all in by now
    quiet.expect(r"lobby \(3\)")
    assert not any("(history) -->" in line for line in quiet.seen), quiet.seen
    loud = start_client(zchat_proc, broker, "Lucius", "--joins", "show")
    loud.expect(r"\(history\) --> Batman joined lobby$")
    loud.expect(r"\(history\) .*<Batman> hello$")


def test_line_mode_ignore_and_away(
    broker: BrokerThread, zchat_proc: Callable[..., ZchatProcess]
) -> None:
    robin = start_client(zchat_proc, broker, "Robin")
    robin.expect(r"connected as Robin")
    joker = start_client(zchat_proc, broker, "Joker")
    joker.expect(r"connected as Joker")
    alfred = start_client(zchat_proc, broker, "Alfred")
    alfred.expect(r"connected as Alfred")
    robin.send("/ignore joker")
    robin.expect(r"-!- ignoring joker on this client")
    joker.send("ha ha ha")
    joker.send("/msg Robin boo")
    alfred.send("after the joker")
    robin.expect(r"<Alfred> after the joker$")
    robin.send("/ignore")
    robin.expect(r"-!- ignoring: joker$")
    assert not any("ha ha" in line or "boo" in line for line in robin.seen), robin.seen
    robin.send("/away patrolling")
    robin.expect(r"-!- away: ")
    alfred.send("/msg Robin dinner?")
    alfred.expect(r"\[DM from Robin\] \(away\) patrolling$")
    alfred.send("/msg Robin dinner??")
    alfred.send("/msg Robin marker")
    robin.expect(r"\[DM from Alfred\] marker$")
    # Robin decides on an answer before showing the next event: "done" comes after any.
    robin.send("/msg Alfred done")
    alfred.expect(r"\[DM from Robin\] done$")
    assert sum("(away)" in line for line in alfred.seen) == 1, "answered once per absence"
    robin.send("/unignore Joker")
    robin.expect(r"-!- showing Joker again")
    joker.send("back in view")
    robin.expect(r"<Joker> back in view$")


def test_line_mode_search_and_room_logs(
    broker: BrokerThread, zchat_proc: Callable[..., ZchatProcess], tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    robin = start_client(zchat_proc, broker, "Robin", "--log-dir", str(logs))
    robin.expect(r"connected as Robin")
    batman = start_client(zchat_proc, broker, "Batman")
    batman.expect(r"connected as Batman")
    for text in ("the bat SIGNAL is on", "nothing to see", "signal again"):
        batman.send(text)
    robin.expect(r"<Batman> signal again$")
    robin.send("/search signal")
    robin.expect(r"^-!- 2 lines contain signal:$")
    robin.expect(r"^-!-   \d\d:\d\d:\d\d <Batman> the bat SIGNAL is on$")
    robin.expect(r"^-!-   \d\d:\d\d:\d\d <Batman> signal again$")
    robin.send("/search batmobile")
    robin.expect(r"^-!- no line here contains batmobile$")
    written = (logs / "lobby.log").read_text(encoding="utf-8").splitlines()
    assert [line.split(" ", 1)[1] for line in written if "<Batman>" in line] == [
        "<Batman> the bat SIGNAL is on",
        "<Batman> nothing to see",
        "<Batman> signal again",
    ]


@pytest.mark.parametrize(
    ("room", "name"),
    [("lobby", "lobby.log"), ("../etc", "%2E.%2Fetc.log"), ("a/b", "a%2Fb.log"), ("%", "%25.log")],
)
def test_room_log_files_stay_in_their_directory(tmp_path: Path, room: str, name: str) -> None:
    path = log_file(tmp_path, room)
    assert path.name == name
    assert path.parent == tmp_path


# ---------------------------------------------------------------- the config file


def write_config(home: Path, text: str) -> dict[str, str]:
    """A config.toml where platformdirs looks for it; the environment that finds it."""
    (home / "zchat").mkdir(parents=True, exist_ok=True)
    (home / "zchat" / "config.toml").write_text(text, encoding="utf-8")
    return {"XDG_CONFIG_HOME": str(home)}


def test_client_with_no_flags_uses_the_config_file(
    broker: BrokerThread, zchat_proc: Callable[..., ZchatProcess], tmp_path: Path
) -> None:
    env = write_config(
        tmp_path,
        f'nick = "Robin"\nrooms = ["lobby", "cave"]\nserver = "here"\n'
        f'[servers.here]\nrouter = "{broker.router}"\npub = "{broker.pub}"\n'
        f'[servers.elsewhere]\nrouter = "tcp://127.0.0.1:1"\npub = "tcp://127.0.0.1:1"\n',
    )
    robin = zchat_proc("client", env=env)
    robin.expect(r"connected as Robin")
    robin.send("/who cave")
    robin.expect(r"-!- cave \(1\): Robin")
    # A variable overrides the file, and a flag overrides both.
    other = zchat_proc("client", env={**env, "ZCHAT_NICK": "Nightwing"})
    other.expect(r"connected as Nightwing")
    flagged = zchat_proc("client", "--nick", "Oracle", env={**env, "ZCHAT_NICK": "Nightwing"})
    flagged.expect(r"connected as Oracle")
    assert zchat_proc("ping", env=env).wait() == 0
    lost = zchat_proc("ping", "--timeout", "0.3", env={**env, "ZCHAT_SERVER": "elsewhere"})
    assert lost.wait() == 3


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("nick = ", "bad config file"),
        ('nikc = "Robin"', "unknown setting nikc"),
        ('server = "nowhere"', "no [servers.nowhere]"),
        ("rooms = 3", "rooms must be a list"),
    ],
)
def test_a_bad_config_file_is_one_clear_line(
    zchat_proc: Callable[..., ZchatProcess], tmp_path: Path, text: str, says: str
) -> None:
    proc = zchat_proc("client", "--nick", "Robin", env=write_config(tmp_path, text))
    assert proc.wait() == 2
    assert len(proc.stderr_lines) == 1, proc.stderr_lines
    assert says in proc.stderr_lines[0]
    assert proc.stderr_lines[0].startswith("zchat: ")


def test_the_readme_config_example_is_valid(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (example,) = re.findall(r"^```toml\n(.*?)^```$", readme, re.M | re.S)
    path = tmp_path / "config.toml"
    path.write_text(example, encoding="utf-8")
    settings = load_config(path, required=True)
    assert settings["nick"] == "Robin"
    assert settings["router"] == "tcp://localhost:5555"
    assert settings["log_dir"] == str(Path("~/zchat-logs").expanduser())


def test_a_broken_config_file_does_not_stop_a_broker(
    zchat_proc: Callable[..., ZchatProcess], tmp_path: Path
) -> None:
    env = write_config(tmp_path, "nick = ")
    server = start_broker(zchat_proc, env=env)
    assert zchat_proc("ping", "--router", server.router, env={}).wait() == 0
    assert zchat_proc("ping", "--router", server.router, env=env).wait() == 2
