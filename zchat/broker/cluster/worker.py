"""The thread that runs a cluster node's say batches and lease renewals on Redis.

The broker's loop never waits for these: it hands a job over (:meth:`Worker.submit`)
and carries on; the worker runs the jobs one after another, in the order given,
on its own engine (its own ``_sha`` and epoch; redis-py's clients are
thread-safe), and wakes the loop through a socket pair whose read end the loop
polls beside the ROUTER. Consecutive say batches waiting in the queue go to
Redis as one pipeline.

After a failed job the worker answers say batches ``unavailable`` without
trying Redis, until a renewal (the probe) gets through: a stalled Redis costs one
socket timeout per probe, on this thread, and never the loop's time.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections import deque
from dataclasses import dataclass, replace

from zchat.broker.cluster.engine import Append, Engine, Renewal, Unavailable
from zchat.broker.shared import Said
from zchat.errors import ProtocolError
from zchat.protocol.names import ErrorCode

log = logging.getLogger("zchat.broker.cluster")

#: Most says in one pipeline (one round trip).
MAX_PIPELINE = 2000


@dataclass(slots=True)
class Says:
    """Say events to append, each with the outcome to fill in for the core."""

    batch: list[tuple[Said, Append]]


@dataclass(frozen=True, slots=True)
class Renew:
    """Renew the node's lease and read the epoch (also the probe after a failure)."""


Job = Says | Renew


@dataclass(frozen=True, slots=True)
class SaysDone:
    outcomes: list[Said]
    #: Why Redis refused the batch (its outcomes carry ``unavailable``), or None.
    failure: str | None = None


@dataclass(frozen=True, slots=True)
class Renewed:
    renewal: Renewal | None
    epoch: str
    failure: str | None = None


Done = SaysDone | Renewed


def refused() -> ProtocolError:
    return ProtocolError(ErrorCode.UNAVAILABLE, "the cluster's store is unavailable")


class Worker:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cv = threading.Condition()
        self._jobs: deque[Job | None] = deque()
        #: True while a job taken from the queue is running.
        self._busy = False
        self._done: deque[Done] = deque()
        self._wake_out, self._wake_in = socket.socketpair()
        self._wake_out.setblocking(False)
        self._wake_in.setblocking(False)
        self._failed = False
        self._thread = threading.Thread(target=self._serve, name="zchat-redis", daemon=True)
        self._thread.start()

    def fileno(self) -> int:
        """Readable when :meth:`results` has something."""
        return self._wake_out.fileno()

    def submit(self, job: Job | None) -> None:
        """Run ``job`` after those before it (None: stop once they are done)."""
        with self._cv:
            self._jobs.append(job)
            self._cv.notify()

    def results(self) -> list[Done]:
        with contextlib.suppress(BlockingIOError):
            while self._wake_out.recv(4096):
                pass
        done: list[Done] = []
        while self._done:
            done.append(self._done.popleft())
        return done

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every job submitted so far has run; False if that took too long
        (Redis is slow: the caller treats it as unavailable)."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._jobs and not self._busy, timeout)

    def close(self, timeout: float = 5.0) -> None:
        self.submit(None)
        self._thread.join(timeout)
        self._wake_out.close()
        self._wake_in.close()

    # ------------------------------------------------------------ the thread

    def _next(self) -> Job | None:
        with self._cv:
            self._cv.wait_for(lambda: bool(self._jobs))
            job = self._jobs.popleft()
            if isinstance(job, Says):
                # What else waits goes in the same round trip, in order.
                batch = list(job.batch)
                while self._jobs and isinstance(self._jobs[0], Says) and len(batch) < MAX_PIPELINE:
                    following = self._jobs.popleft()
                    assert isinstance(following, Says)
                    batch.extend(following.batch)
                job = Says(batch)
            self._busy = job is not None
            return job

    def _serve(self) -> None:
        while (job := self._next()) is not None:
            try:
                done = self._says(job) if isinstance(job, Says) else self._renew()
            except Exception as exc:
                # A bug here must not leave the loop waiting for ever: the job fails.
                log.exception("Redis worker failed")
                done = self._failure(job, f"{type(exc).__name__}: {exc}")
            self._done.append(done)
            with self._cv:
                self._busy = False
                self._cv.notify_all()
            with contextlib.suppress(BlockingIOError):
                # A full socket buffer means the loop has a wake-up waiting already.
                self._wake_in.send(b"\0")

    def _failure(self, job: Job, why: str) -> Done:
        self._failed = True
        if isinstance(job, Says):
            error = refused()
            return SaysDone([replace(said, error=error) for said, _ in job.batch], why)
        return Renewed(None, self.engine.epoch, why)

    def _says(self, job: Says) -> Done:
        if self._failed:
            return self._failure(job, "Redis failed; waiting for a renewal to get through")
        try:
            results = self.engine.append([append for _, append in job.batch])
        except Unavailable as exc:
            return self._failure(job, str(exc))
        return SaysDone(
            [
                replace(said, seq=result.seq, dup=result.status == "dup")
                for (said, _), result in zip(job.batch, results, strict=True)
            ]
        )

    def _renew(self) -> Done:
        try:
            renewal = self.engine.renew()
        except Unavailable as exc:
            return self._failure(Renew(), str(exc))
        self._failed = False
        return Renewed(renewal, self.engine.epoch)
