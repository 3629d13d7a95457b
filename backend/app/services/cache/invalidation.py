"""Invalidation after commit: tags recorded on a session are sent once its transaction commits.

Services call `invalidate_on_commit(session, tag)`; when that session commits, the tags go to the
current `invalidation_scope`. A web request's scope holds them until its response starts (the
session dependency commits before the response, so the bump lands after the commit and before the
client can learn the write succeeded); a worker job's scope sends them at once. A rolled back
transaction invalidates nothing.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Final

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.services.cache.engine import Cache

logger = logging.getLogger(__name__)

_SESSION_KEY: Final = "cache_invalidate_on_commit"


@dataclass(slots=True, eq=False)
class InvalidationScope:
    """Where committed tags go: held while `holding` (a response is pending), else sent at once."""

    cache: Cache
    holding: bool
    tags: set[str] = field(default_factory=set)
    sending: set[asyncio.Task[None]] = field(default_factory=set)

    async def release(self) -> None:
        """Send the held tags; tags committed from now on are sent at commit."""
        self.holding = False
        if self.tags:
            tags = list(self.tags)
            self.tags.clear()
            await self.cache.invalidate(*tags)

    def _committed(self, tags: set[str]) -> None:
        if self.holding:
            self.tags.update(tags)
            return
        task = asyncio.get_running_loop().create_task(self.cache.invalidate(*tags))
        # Kept referenced until done, also past the scope (a commit after its request ended).
        _SENDING.add(task)
        self.sending.add(task)
        task.add_done_callback(_SENDING.discard)
        task.add_done_callback(self.sending.discard)


_SCOPE: ContextVar[InvalidationScope | None] = ContextVar("cache_invalidation_scope", default=None)
_SENDING: set[asyncio.Task[None]] = set()


@asynccontextmanager
async def invalidation_scope(cache: Cache, *, holding: bool) -> AsyncIterator[InvalidationScope]:
    """Collect the tags committed inside the block; on exit, send what is left and wait for it."""
    scope = InvalidationScope(cache, holding)
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)
        await scope.release()
        if scope.sending:
            await asyncio.gather(*scope.sending, return_exceptions=True)


@dataclass(slots=True)
class _SessionTags:
    target: InvalidationScope | None
    tags: set[str] = field(default_factory=set)


def invalidate_on_commit(session: AsyncSession | Session, *tags: str) -> None:
    """Invalidate `tags` once `session` commits, through the current `invalidation_scope`."""
    pending: _SessionTags = session.info.setdefault(_SESSION_KEY, _SessionTags(_SCOPE.get()))
    pending.tags.update(tags)


@event.listens_for(Session, "after_commit")
def _send_tags_after_commit(session: Session) -> None:
    pending: _SessionTags | None = session.info.pop(_SESSION_KEY, None)
    if pending is None:
        return
    if pending.target is None:
        logger.warning(
            "cache tags %s committed outside an invalidation scope: not invalidated",
            sorted(pending.tags),
        )
        return
    pending.target._committed(pending.tags)
