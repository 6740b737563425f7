"""What a client knows of its rooms, kept by an I/O-free tracker: seq, gaps, held
events, dedupe of resent messages, roster and topic.

Pure, like the broker's core: no sockets, no event loop, no clock. The client
feeds it what arrives (live events, room infos, history replies) and carries
out what it returns: events for the application, and :class:`Fetch` requests
for history. Tests drive it as a conversation.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from zchat.client.events import ClientEvent, Missed
from zchat.protocol.events import (
    HistoryReply,
    Joined,
    Left,
    Message,
    NickChanged,
    RoomEvent,
    RoomInfo,
    TopicSet,
    as_history,
)
from zchat.protocol.names import MAX_HISTORY_LIMIT

#: Message ids remembered to drop copies a broker restart may publish twice.
MAX_SEEN_IDS = 10_000


@dataclass(frozen=True, slots=True)
class Fetch:
    """Ask the broker for ``room``'s events with after < seq < before.

    ``history`` marks backlog shown on joining (never counted as missed);
    ``repair`` a gap seen in live events.
    """

    room: str
    after: int
    before: int
    limit: int
    history: bool = False
    repair: bool = False


@dataclass(frozen=True, slots=True)
class Confirmed:
    """Our own message ``id`` came back on the PUB: it need not be resent."""

    id: str


@dataclass(frozen=True, slots=True)
class SelfLeft:
    """Our own ``leave`` of ``room`` was published."""

    room: str


Effect = ClientEvent | Fetch | Confirmed | SelfLeft


@dataclass(slots=True)
class RoomState:
    """What the client knows of one room it is in."""

    name: str
    topic: str = ""
    users: list[str] = field(default_factory=list)
    #: seq of the last event handed to the application; None before the first.
    seq: int | None = None
    #: Live events held back while the backlog or a gap repair is in flight.
    held: list[RoomEvent] | None = None


class RoomTracker:
    def __init__(self, nick: str) -> None:
        #: Our own nick, to recognise our own messages and leaves.
        self.nick = nick
        self.rooms: dict[str, RoomState] = {}
        #: Copies of messages dropped because their (room, nick, id) was seen already.
        self.duplicates = 0
        self._seen_ids: OrderedDict[tuple[str, str, str], None] = OrderedDict()

    def hold(self, name: str) -> RoomState:
        """Hold ``name``'s live events until :meth:`settle` (its state is being fetched)."""
        state = self.rooms.setdefault(name, RoomState(name))
        state.held = []
        return state

    def forget(self, name: str) -> None:
        self.rooms.pop(name, None)

    def restart(self) -> None:
        """The broker has a new epoch: every room's seq starts over."""
        for state in self.rooms.values():
            state.seq = None

    def adopt(self, info: RoomInfo, *, first: bool, backlog: int) -> Fetch | None:
        """Take a room's info (``welcome`` or ``who``); the fetch of what came before it.

        ``first``: the room is new to us, so what came before is backlog; else
        it is exactly what we missed while away. Call :meth:`settle` after.
        """
        state = self.rooms.setdefault(info.room, RoomState(info.room, held=[]))
        state.topic = info.topic
        state.users = list(info.users)
        joined_at = info.seq
        # A room can start over within an epoch: forgotten by the broker while
        # empty, then joined again. Its seq then goes back; treat it as new.
        if first or state.seq is None or joined_at <= state.seq:
            if backlog > 0 and joined_at > 1:
                return Fetch(info.room, 0, joined_at, backlog, history=True)
            return None
        if joined_at - state.seq > 1:
            limit = min(joined_at - state.seq - 1, MAX_HISTORY_LIMIT)
            return Fetch(info.room, state.seq, joined_at, limit)
        return None

    def settle(self, room: str, seq: int) -> list[Effect]:
        """Everything up to ``seq`` is handled: release the held live events."""
        state = self.rooms.get(room)
        if state is None:
            return []
        state.seq = seq
        return self._release(state)

    def fetched(self, fetch: Fetch, reply: HistoryReply) -> list[Effect]:
        state = self.rooms.get(fetch.room)
        if state is None:
            return []
        out: list[Effect] = []
        # What is missing is always older than what came back: report it first.
        if not fetch.history and reply.missing > 0:
            out.append(Missed(fetch.room, reply.missing))
        for event in reply.events:
            if fetch.history:
                # The welcome's roster is current; old joins must not change it.
                out.append(as_history(event))
            elif event.seq is not None and (state.seq is None or event.seq > state.seq):
                out.extend(self._deliver(state, event))
                state.seq = event.seq
        return out

    @staticmethod
    def unavailable(fetch: Fetch) -> list[Effect]:
        """The fetch failed for good: live events in its range are lost."""
        if fetch.history:
            return []
        return [Missed(fetch.room, fetch.before - fetch.after - 1)]

    def repaired(self, fetch: Fetch) -> list[Effect]:
        """A repair is over (done, or given up): release what was held behind the gap."""
        state = self.rooms.get(fetch.room)
        if state is None:
            return []
        state.seq = max(state.seq or 0, fetch.before - 1)
        return self._release(state)

    def live(self, event: RoomEvent) -> list[Effect]:
        """A room event from the PUB."""
        state = self.rooms.get(event.room) if event.room is not None else None
        if state is None or event.seq is None:
            return []
        if state.held is not None:
            state.held.append(event)
            return []
        return self._on_event(state, event)

    def _on_event(self, state: RoomState, event: RoomEvent) -> list[Effect]:
        seq = event.seq
        assert seq is not None
        if state.seq is not None and seq <= state.seq:
            return []  # already seen (backlog overlap or a repaired range)
        if state.seq is not None and seq > state.seq + 1:
            state.held = [event]
            limit = min(seq - state.seq - 1, MAX_HISTORY_LIMIT)
            return [Fetch(state.name, state.seq, seq, limit, repair=True)]
        state.seq = seq
        return self._deliver(state, event)

    def _release(self, state: RoomState) -> list[Effect]:
        held, state.held = state.held or [], None
        out: list[Effect] = []
        for event in sorted(held, key=lambda e: e.seq or 0):
            if state.held is not None:
                state.held.append(event)  # a new gap opened: keep holding
            else:
                out.extend(self._on_event(state, event))
        return out

    def _deliver(self, state: RoomState, event: RoomEvent) -> list[Effect]:
        """One live room event for the application, unless it is a resent copy."""
        out = self._track(state, event)
        if isinstance(event, Message) and event.id is not None:
            # A broker restarted without --db forgets which ids it has seen, so a
            # message resent across the restart can be published twice.
            key = (state.name, event.nick, event.id)
            if key in self._seen_ids:
                self.duplicates += 1
                return out
            self._seen_ids[key] = None
            if len(self._seen_ids) > MAX_SEEN_IDS:
                self._seen_ids.popitem(last=False)
        out.append(event)
        return out

    def _track(self, state: RoomState, event: RoomEvent) -> list[Effect]:
        """Keep roster and topic up to date; note our own messages and leaves."""
        if isinstance(event, Joined):
            if event.nick not in state.users:
                state.users.append(event.nick)
        elif isinstance(event, Left):
            if event.nick in state.users:
                state.users.remove(event.nick)
            if event.nick == self.nick:
                return [SelfLeft(state.name)]
        elif isinstance(event, TopicSet):
            state.topic = event.text
        elif isinstance(event, NickChanged):
            state.users = [event.new if u == event.old else u for u in state.users]
        elif isinstance(event, Message) and event.nick == self.nick and event.id is not None:
            return [Confirmed(event.id)]
        return []
