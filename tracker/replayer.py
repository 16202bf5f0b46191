"""The spool replayer: every tick, if Redis answers, the spool goes back into the stream.

Redis being down is the normal reason for a tick to do nothing; it is
retried every tick, so the stream catches up within one of Redis' return.
A failing disk (``SpoolError``) is retried with a backoff, and anything else
(a bug) ends ``run``; ``supervise`` logs it and starts it again after the
same backoff, so one bad file or one bug never stops replay for good, as an
EIO once did. ``failure`` says why it is failing, for /healthz.
"""

from __future__ import annotations

import asyncio
import logging

from .appender import REDIS_ERRORS, Appender
from .spool import SpoolError

log = logging.getLogger(__name__)

INTERVAL_S = 0.5
MAX_BACKOFF_S = 10.0


class Replayer:
    def __init__(self, appender: Appender, *, interval_s: float = INTERVAL_S,
                 max_backoff_s: float = MAX_BACKOFF_S) -> None:
        self._appender = appender
        self._interval_s = interval_s
        self._max_backoff_s = max_backoff_s
        self._failures = 0  # in a row
        self.failure: str | None = None  # why the last tick failed; None once one succeeds
        self.restarts = 0

    def backoff_s(self) -> float:
        return min(self._interval_s * 2 ** self._failures, self._max_backoff_s)

    async def run(self) -> None:
        """Tick forever; returns only by raising what no tick should (a bug)."""
        while True:
            await asyncio.sleep(self.backoff_s())
            try:
                await self._appender.replay_spool()
            except SpoolError as exc:
                self._failed(str(exc))
                continue
            except REDIS_ERRORS as exc:
                log.debug("redis still unavailable", extra={"error": repr(exc)})
            self._failures, self.failure = 0, None

    async def supervise(self) -> None:
        """``run``, started again whenever it dies, until cancelled."""
        while True:
            try:
                await self.run()
            except Exception as exc:
                log.exception("the spool replayer died, restarting it")
                self.restarts += 1
                self._failed(f"replayer died: {exc!r}")

    def _failed(self, reason: str) -> None:
        self._failures += 1
        self.failure = reason
        log.warning("spool replay failing, backing off", extra={"error": reason, "backoff_s": self.backoff_s()})
