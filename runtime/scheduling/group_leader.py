"""The group leader: a thread inside an engine that fetches its group's work from the scheduler.

Every engine runs one once it knows the scheduler's address (`--scheduler HOST:PORT`, or the `Lead`
control message); the scheduler answers as leader only the group's first engine that still answers,
and tells the others to ask again later, so a group whose leader dies is led by its next engine.
The leader's loop: gather the members' reports (its own in-process, the others' with `Stats`), send
them in a `Fetch` (the scheduler holds the call up to a tick until there is work for the group), run
each fetched turn on its PE and DE as any client does, and report it `Done` or `Failed`.
A PE also asks the scheduler, leading or not, for each forward batch (`form_batch`): the policy that
forms batches lives with the scheduler.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from dualpath.runtime.engines.messages import Done, Failed, FailureKind, Fetch, FormBatch, Stats
from dualpath.runtime.scheduling.client import ClusterClient
from dualpath.runtime.transports.control import Channel, ControlError, connect

if TYPE_CHECKING:
    from dualpath.runtime.engines.worker import EngineBase

LOG = logging.getLogger("dualpath.runtime.scheduling.group_leader")
RETRY_S = 0.05  # after a failed fetch (the scheduler not up yet, or gone)


class GroupLeader:
    """Fetches and runs the work of `engine`'s group while the scheduler names `engine` its leader."""

    def __init__(self, engine: EngineBase) -> None:
        self.engine = engine
        self.name = engine.name
        self.client = ClusterClient(engine.secret, f"{engine.name}-leader")
        self.members: dict[str, tuple[str, int]] = {}
        self.health_timeout_s = 10.0
        self.leading = False
        self.num_fetched = 0  # assignments fetched so far
        self._target: tuple[str, int] | None = None
        self._channel: Channel | None = None
        self._batch_channel: Channel | None = None  # the PE's `FormBatch` calls, beside the long-polling fetch
        self._batch_lock = threading.Lock()
        self._batch_target: tuple[str, int] | None = None
        self._stopped = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def point(self, address: tuple[str, int] | None) -> None:
        """Serve the scheduler at `address` from now on (None: stop asking)."""
        target = (str(address[0]), int(address[1])) if address else None
        old = None
        with self._cond:
            if self._stopped:
                return
            if target != self._target:
                self._target, old, self._channel = target, self._channel, None
                self.leading, self.members = False, {}
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=f"leader:{self.name}", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        if old is not None:
            old.close()

    def stop(self) -> None:
        with self._cond:
            self._stopped, old, self._channel = True, self._channel, None
            self._cond.notify_all()
        with self._batch_lock:
            batch_channel, self._batch_channel = self._batch_channel, None
        for channel in (old, batch_channel):
            if channel is not None:
                channel.close()
        self.client.close()

    def form_batch(self, items: list[tuple[str, int, int, float]]) -> list[tuple[str, int]] | None:
        """The scheduler's policy's next forward batch out of this PE's queue `items` (request, cached
        tokens, new tokens, ready at): (request, new tokens) per item taken; None when no scheduler
        answers, and the PE applies the default rule."""
        with self._cond:
            target = None if self._stopped else self._target
        if target is None:
            return None
        with self._batch_lock:
            try:
                channel = self._batch_channel
                if channel is None or not channel.alive or self._batch_target != target:
                    if channel is not None:
                        channel.close()
                    channel = self._batch_channel = connect(target, self.engine.secret, f"{self.name}-batch")
                    self._batch_target = target
                reply, _ = channel.call(FormBatch(self.name, tuple(items)), timeout_s=self.health_timeout_s)
                return [(str(request), int(new)) for request, new in reply["batch"]]
            except ControlError as exc:
                LOG.warning("%s: no batch from the scheduler at %s (%s); taking the whole queue", self.name,
                            target, exc)
            except (KeyError, TypeError, ValueError) as exc:
                LOG.error("%s: malformed form_batch reply from %s: %r", self.name, target, exc)
        return None

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and self._target is None:
                    self._cond.wait()
                if self._stopped:
                    return
                target, channel = self._target, self._channel
            if target is None:  # never: the wait above ends with a target or a stop
                continue
            try:
                if channel is None or not channel.alive:
                    channel = connect(target, self.engine.secret, f"{self.name}-leader")
                    with self._cond:
                        if self._stopped or self._target != target:
                            channel.close()
                            continue
                        self._channel = channel
                reply, _ = channel.call(Fetch(self.name, self._reports()), timeout_s=self.health_timeout_s + 5.0)
            except ControlError as exc:
                LOG.debug("%s: no fetch from the scheduler at %s: %s", self.name, target, exc)
                if channel is not None and channel.alive:  # unanswered: start over (the scheduler requeues)
                    channel.close()
                self._pause(RETRY_S)
                continue
            try:
                self.leading = bool(reply["leader"])
                if not self.leading:
                    self.members = {}
                    self._pause(float(reply.get("retry_s", 0.25)))
                    continue
                self.members = {n: (str(a[0]), int(a[1])) for n, a in reply["members"].items()}
                self.health_timeout_s = float(reply["health_timeout_s"])
                assignments = list(reply["assignments"])
            except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
                LOG.error("%s: malformed fetch reply from %s: %r", self.name, target, exc)
                self._pause(RETRY_S)
                continue
            for assignment in assignments:
                self.num_fetched += 1
                threading.Thread(target=self._run, args=(channel, assignment), daemon=True,
                                 name=f"turn-{assignment['attempt']}").start()

    def _pause(self, seconds: float) -> None:
        with self._cond:
            if not self._stopped:
                self._cond.wait(seconds)

    def _reports(self) -> dict[str, dict[str, Any] | None]:
        """Each member's stats; None for one that does not answer (the scheduler takes it as dead)."""
        reports: dict[str, dict[str, Any] | None] = {self.name: self.engine.stats()}
        for name, address in self.members.items():
            if name != self.name:
                try:
                    reports[name] = self.client.channel(address).call(Stats(), timeout_s=self.health_timeout_s)[0]
                except ControlError as exc:
                    LOG.warning("%s: member %s does not answer: %s", self.name, name, exc)
                    reports[name] = None
        return reports

    def _run(self, channel: Channel, a: dict[str, Any]) -> None:
        """One fetched turn, exactly as a client runs it; the outcome goes back on the fetch's channel."""
        attempt = a["attempt"]
        outcome: Done | Failed
        try:
            result = self.client.submit(
                (a["pe_address"][0], a["pe_address"][1]), (a["de_address"][0], a["de_address"][1]), a["tokens"],
                a["max_new_tokens"], path="split", pe_blocks=a["pe_blocks"], request=attempt,
                chunk_tokens=a["chunk_tokens"], layerwise=a["layerwise"], timeout_s=None)
        except ControlError as exc:  # an engine gone, or the engine refused the turn: the scheduler probes
            outcome = Failed(attempt, str(exc), FailureKind.ENGINES)
        except Exception as exc:
            LOG.exception("%s: turn %s failed", self.name, attempt)
            outcome = Failed(attempt, f"{type(exc).__name__}: {exc}", FailureKind.TURN)
        else:
            outcome = Done(attempt, replace(result, logits=None))  # logits never asked for: none to send
        try:
            channel.call(outcome, timeout_s=self.health_timeout_s)
        except ControlError as exc:  # the scheduler requeues what a lost leader fetched
            LOG.warning("%s: could not report %s of %s: %s", self.name, outcome.op, attempt, exc)
