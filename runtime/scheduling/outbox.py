"""The scheduler's outbox: per engine group, the assignments filed for it until its leader fetches them.

It also remembers each group's leader (its control channel) and when it last fetched, so the
scheduler can drop a leader that stopped fetching. Not thread-safe: the scheduler holds its lock.
"""

from __future__ import annotations

from dualpath.runtime.scheduling.scheduler_state import TurnTicket
from dualpath.runtime.transports.control import Channel


class Outbox:
    """Filed `TurnTicket`s by group, and each group's leader channel and last fetch."""

    def __init__(self) -> None:
        self.filed: dict[str, list[TurnTicket]] = {}  # group key -> tickets, in filing order
        self.leaders: dict[str, Channel] = {}  # group key -> the channel its leader fetches on
        self.fetch_at: dict[str, float] = {}  # group key -> its leader's last fetch (time.monotonic())

    def file(self, group: str, ticket: TurnTicket) -> None:
        ticket.leader = None
        self.filed.setdefault(group, []).append(ticket)

    def has_work(self, group: str) -> bool:
        return bool(self.filed.get(group))

    def fetched(self, group: str, channel: Channel, now: float) -> None:
        self.leaders[group], self.fetch_at[group] = channel, now

    def take(self, group: str, channel: Channel) -> list[TurnTicket]:
        """Everything filed for `group`, now the responsibility of the leader on `channel`."""
        batch = self.filed.pop(group, [])
        for ticket in batch:
            ticket.leader = channel
        return batch

    def recall(self, engine: str) -> list[TurnTicket]:
        """Take back the tickets filed for `engine` (as their PE or DE): they never reached it."""
        out = []
        for group, tickets in self.filed.items():
            out += [t for t in tickets if engine in (t.placed.pe, t.placed.de)]
            self.filed[group] = [t for t in tickets if engine not in (t.placed.pe, t.placed.de)]
        return out

    def stale_leaders(self, now: float, timeout_s: float) -> list[Channel]:
        """Leaders still connected that have not fetched for `timeout_s`."""
        return [ch for group, ch in self.leaders.items() if ch.alive and now - self.fetch_at[group] > timeout_s]

    def clear(self) -> None:
        self.filed.clear()
