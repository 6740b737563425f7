"""What a person types, parsed: pure, shared by line mode and the terminal UI."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


class InputError(ValueError):
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
    "me": ("/me action", "say an action: * nick waves", 1, 1),
    "nick": ("/nick NEW", "change your nick", 1, 1),
    "who": ("/who [ROOM]", "list who is in a room", 0, 1),
    "topic": ("/topic [text]", "show or set the current room's topic", 0, 1),
    "quit": ("/quit [reason]", "leave the chat", 0, 1),
    "help": ("/help [command]", "list commands, or explain one", 0, 1),
}
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
    if name == "topic" and rest:
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
