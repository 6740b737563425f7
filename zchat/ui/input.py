"""What a person types: parsed (pure), and run against the client by one function
that line mode and the terminal UI share, each showing the outcome its own way."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from zchat.client.client import Client
from zchat.errors import BrokerError, ProtocolError, UsageError, ZchatError
from zchat.protocol.events import DirectMessage
from zchat.protocol.names import check_nick
from zchat.ui.personal import Personal
from zchat.ui.render import clean, error_fields


class InputError(UsageError):
    """Typed input that is neither chat nor a valid command; show it, send nothing."""


@dataclass(frozen=True, slots=True)
class Chat:
    """Text to say in the current room (``action`` for ``/me``)."""

    text: str
    action: bool = False


@dataclass(frozen=True, slots=True)
class SlashCommand:
    """A ``/command``: ``name`` is canonical (``part`` becomes ``leave``)."""

    name: str
    args: tuple[str, ...] = ()


Input = Chat | SlashCommand

#: name -> (usage, help line, minimum args, maximum split: args after it stay joined)
COMMANDS: Final[dict[str, tuple[str, str, int, int]]] = {
    "join": ("/join ROOM", "join a room (or switch to it)", 1, 1),
    "leave": ("/leave [ROOM] [reason]", "leave a room (default: the current one)", 0, 2),
    "msg": ("/msg NICK text", "send a direct message", 2, 2),
    "query": ("/query [NICK]", "talk to NICK directly from now on; alone: back to the room", 0, 1),
    "me": ("/me action", "say an action: * nick waves", 1, 1),
    "nick": ("/nick NEW", "change your nick", 1, 1),
    "away": ("/away [text]", "away: DMs are answered with text, once each; alone: back", 0, 1),
    "ignore": ("/ignore [NICK]", "hide NICK's messages on this client; alone: list", 0, 1),
    "unignore": ("/unignore NICK", "show NICK's messages again", 1, 1),
    "who": ("/who [ROOM]", "list who is in a room", 0, 1),
    "search": ("/search TEXT", "lines of this room's scrollback with TEXT (Ctrl+F)", 1, 1),
    "list": ("/list", "rooms with people in them, busiest first, and their topics", 0, 1),
    "topic": ("/topic [text]", "show or set the current room's topic", 0, 1),
    "quit": ("/quit [reason]", "leave the chat", 0, 1),
    "help": ("/help [command]", "list commands, or explain one", 0, 1),
}
#: Most matching lines ``/search`` shows (the latest).
SEARCH_SHOWN: Final = 20

ALIASES: Final = {"part": "leave", "exit": "quit", "q": "quit", "j": "join"}


def parse_input(line: str) -> Input | None:
    """Parse one typed line; None for a blank line, ``InputError`` for a bad command."""
    line = line.rstrip("\r\n")
    if not line.strip():
        return None
    if line.startswith("//"):
        return Chat(line[1:])
    if not line.startswith("/"):
        return Chat(line)
    word, _, rest = line[1:].partition(" ")
    name = ALIASES.get(word.lower(), word.lower())
    if name not in COMMANDS:
        raise InputError(f"unknown command /{word}; /help lists them (// sends a literal /)")
    usage, _, minimum, split = COMMANDS[name]
    rest = rest.strip()
    if name == "me":
        if not rest:
            raise InputError(f"usage: {usage}")
        return Chat(rest, action=True)
    args = tuple(rest.split(None, split - 1)) if rest else ()
    if name in {"topic", "away", "search"} and rest:
        args = (rest,)
    if len(args) < minimum:
        raise InputError(f"usage: {usage}")
    return SlashCommand(name, args)


def help_text(name: str | None = None) -> list[str]:
    """Lines of help: every command, or one."""
    if name:
        key = ALIASES.get(name.lstrip("/").lower(), name.lstrip("/").lower())
        if key not in COMMANDS:
            raise InputError(f"no command /{name.lstrip('/')}")
        usage, text, _, _ = COMMANDS[key]
        return [f"{usage}: {text}"]
    lines = [f"{usage:<24} {text}" for usage, text, _, _ in COMMANDS.values()]
    lines.append(f"{'//text':<24} send text that starts with /")
    return lines


def complete(prefix: str, nicks: list[str]) -> list[str]:
    """Completions for the word being typed: commands after '/', else nicks."""
    if prefix.startswith("/"):
        word = prefix[1:].lower()
        return [f"/{name}" for name in COMMANDS if name.startswith(word)]
    low = prefix.lower()
    return sorted(n for n in nicks if n.lower().startswith(low)) if prefix else []


class Frontend(Protocol):
    """What :func:`run_line` needs of a front end: where it is and how it shows things."""

    @property
    def current(self) -> str | None:
        """The room that chat goes to, if any."""

    @property
    def current_dm(self) -> str | None:
        """The nick that chat goes to as direct messages (``/query``), if any."""

    async def talk_to(self, nick: str | None) -> None:
        """``/query NICK``: talk to ``nick`` directly; None ends the conversation."""

    def show_info(
        self, text: str, *, error: bool = False, data: Mapping[str, Any] | None = None
    ) -> None:
        """A local line for the person (``text`` is cleaned by the front end).

        ``data``: the same for a program (``what`` of an info, ``code`` of an error, ...).
        """

    def show_reply(self, event: DirectMessage) -> None:
        """The broker's confirmation of our own ``/msg``."""

    async def joined(self, room: str) -> None:
        """``/join`` succeeded: make ``room`` the current one."""

    async def left(self, room: str) -> None:
        """``/leave`` was sent for ``room``."""

    async def quit(self, reason: str | None) -> None:
        """``/quit``: leave the chat."""

    def nick_changed(self) -> None: ...

    @property
    def personal(self) -> Personal:
        """Ignored nicks, away state and notification settings."""

    def scrollback(self) -> list[str]:
        """The lines shown in the open room (or conversation), oldest first."""


async def run_line(client: Client, front: Frontend, line: str) -> bool:
    """Act on one typed line; every mistake becomes one local error line, never a raise.

    Returns False once the person asked to quit.
    """
    word = line.split(None, 1)[0] if line.strip() else ""
    is_command = word.startswith("/") and not word.startswith("//")
    command = ALIASES.get(word[1:].lower(), word[1:].lower()) if is_command else "say"
    try:
        parsed = parse_input(line)
        if parsed is None:
            return True
        if isinstance(parsed, Chat):
            if front.current_dm is not None:
                sent = await client.dm(front.current_dm, parsed.text, action=parsed.action)
                front.show_reply(sent)
                return True
            if front.current is None or front.current not in client.rooms:
                raise InputError("not in a room: /join ROOM first")
            await client.say(parsed.text, front.current, action=parsed.action)
            return True
        return await run_command(client, front, parsed)
    except (ZchatError, TimeoutError) as exc:
        data = {**error_fields(exc), "command": command}
        if isinstance(exc, BrokerError | ProtocolError):
            # ProtocolError: a room or nick refused before sending (too long, ...).
            text = f"{clean(exc.code)}: {clean(exc.reason)}"
            data["reason"] = exc.reason
        elif isinstance(exc, InputError):
            text = str(exc)
        else:
            text = str(exc) or "no answer from the broker"
        front.show_info(text, error=True, data=data)
    return True


async def run_command(client: Client, front: Frontend, cmd: SlashCommand) -> bool:
    """Run one slash command; False for ``/quit``."""
    args = cmd.args
    if cmd.name == "quit":
        await front.quit(args[0] if args else None)
        return False
    if cmd.name == "help":
        for text in help_text(args[0] if args else None):
            front.show_info(text, data={"what": "help"})
    elif cmd.name == "join":
        state = await client.join(args[0])
        await front.joined(state.name)
    elif cmd.name == "query":
        if args:
            check_nick(args[0])
        await front.talk_to(args[0] if args else None)
    elif cmd.name == "leave" and not args and front.current_dm is not None:
        await front.talk_to(None)
    elif cmd.name == "leave":
        room = args[0] if args else front.current
        if room is None:
            raise InputError("not in a room")
        await client.leave(room, args[1] if len(args) > 1 else None)
        await front.left(room)
    elif cmd.name == "msg":
        front.show_reply(await client.dm(args[0], args[1]))
    elif cmd.name == "nick":
        await client.change_nick(args[0])
        front.nick_changed()
    elif cmd.name == "away":
        front.personal.set_away(args[0] if args else None)
        if args:
            front.show_info(f"away: a DM is answered (away) {args[0]}; /away alone: back")
        else:
            front.show_info("back: no longer away")
        front.nick_changed()
    elif cmd.name == "ignore" and not args:
        ignored = ", ".join(sorted(front.personal.ignored.values(), key=str.casefold))
        front.show_info(f"ignoring: {ignored}" if ignored else "ignoring nobody")
    elif cmd.name == "ignore":
        check_nick(args[0])
        if not front.personal.ignore(args[0]):
            raise InputError("too many ignored nicks: /unignore some first")
        front.show_info(f"ignoring {args[0]} on this client; /unignore {args[0]} undoes it")
    elif cmd.name == "unignore":
        if not front.personal.unignore(args[0]):
            raise InputError(f"{args[0]} is not ignored")
        front.show_info(f"showing {args[0]} again")
    elif cmd.name == "search":
        needle = args[0].casefold()
        found = [line for line in front.scrollback() if needle in line.casefold()]
        if not found:
            front.show_info(f"no line here contains {args[0]}")
        else:
            last = f", the last {SEARCH_SHOWN}" if len(found) > SEARCH_SHOWN else ""
            front.show_info(f"{len(found)} lines contain {args[0]}{last}:")
            for line in found[-SEARCH_SHOWN:]:
                front.show_info(f"  {line}")
    elif cmd.name == "who":
        info = await client.who(args[0] if args else _room(front))
        fields = {k: v for k, v in info.to_wire().items() if k not in ("type", "re")}
        if info.count == 0:
            # The broker answers any name; an empty room is one nobody is in.
            text = f"no room {info.room}: nobody is in it (/list shows the rooms)"
        else:
            text = f"{info.room} ({info.count}): {', '.join(info.users)}"
        front.show_info(text, data={"what": "who", **fields})
    elif cmd.name == "list":
        listing = await client.list_rooms()
        shown = len(listing.rooms)
        if not shown:
            front.show_info("no rooms: nobody is in any")
        more = f", the {shown} busiest shown" if listing.total > shown else ""
        if shown:
            front.show_info(f"{listing.total} rooms{more}:")
        for entry in listing.rooms:
            topic = f": {entry.topic}" if entry.topic else ""
            front.show_info(f"  {entry.room} ({entry.count}){topic}")
    elif cmd.name == "topic":
        if args:
            if _room(front) is None:
                raise InputError("not in a room")
            await client.set_topic(args[0], _room(front))
        else:
            current = client.rooms.get(_room(front) or "")
            topic = current.topic if current and current.topic else "(no topic)"
            data = {
                "what": "topic",
                "room": _room(front),
                "topic": current.topic if current else "",
            }
            front.show_info(f"topic of {_room(front) or '?'}: {topic}", data=data)
    return True


def _room(front: Frontend) -> str | None:
    """The room a room command means: none while talking to a nick directly."""
    return None if front.current_dm is not None else front.current
