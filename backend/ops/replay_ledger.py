"""The database side of ``ops.dlq_replay``: the replay ledger (table ``dlq_replays``) and the
worker's failure records (``failed_jobs``), on the app's own engine (DATABASE_URL; through the
transaction pooler too, every statement being its own short transaction)."""

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from app.config import Settings
from app.database import create_engine
from app.errors import DatabaseTimeout, DatabaseUnavailable
from app.models import DlqReplay, FailedJob
from ops.dead_letter_queue import DeadLetter, Route


class LedgerUnavailable(Exception):
    """The database could not be read or written (the message says why)."""


@dataclass(frozen=True, slots=True)
class Replay:
    """A dead letter whose copy is on the source queue."""

    letter: DeadLetter
    replayed_message_id: str


def _reason(exc: BaseException) -> str:
    # The driver's own error says more than the app's client-facing wrapper.
    cause = exc.__cause__ or exc
    return f"{type(cause).__name__}: {cause}".splitlines()[0][:300]


@asynccontextmanager
async def _guarded(what: str) -> AsyncIterator[None]:
    try:
        yield
    except (SQLAlchemyError, DatabaseUnavailable, DatabaseTimeout, OSError) as exc:
        raise LedgerUnavailable(f"{what}: {_reason(exc)}") from exc


class ReplayLedger:
    """Which DLQ messages were replayed, and why jobs failed (close with :meth:`close`)."""

    def __init__(self, settings: Settings) -> None:
        self._engine = create_engine(settings, role="ops")

    async def check(self) -> None:
        """Fail early, with advice, when the database or the ledger table is missing."""
        async with (
            _guarded("the database has no dlq_replays table (run: alembic upgrade head)"),
            self._engine.connect() as connection,
        ):
            await connection.execute(select(DlqReplay.id).limit(1))

    async def replayed(self, letters: Sequence[DeadLetter]) -> set[str]:
        """The ids, among ``letters``, of messages the ledger says were sent already."""
        ids = [letter.message_id for letter in letters]
        async with (
            _guarded("could not read the replay ledger"),
            self._engine.connect() as connection,
        ):
            rows = await connection.scalars(
                select(DlqReplay.dlq_message_id).where(DlqReplay.dlq_message_id.in_(ids))
            )
            return set(rows)

    async def record(self, route: Route, replays: Sequence[Replay]) -> None:
        """Record ``replays`` in one transaction. A row already there (a concurrent run that
        took the same message after its visibility timeout) is kept as it is."""
        if not replays:
            return
        rows = [
            {
                "dlq_message_id": replay.letter.message_id,
                "dead_letter_queue": route.dlq_name[:255],
                "source_queue": route.source_name[:255],
                "replayed_message_id": replay.replayed_message_id,
                "job_key": (replay.letter.job_key or "")[:255] or None,
            }
            for replay in replays
        ]
        dialect = postgresql if self._engine.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(DlqReplay).on_conflict_do_nothing(
            index_elements=[DlqReplay.dlq_message_id]
        )
        async with (
            _guarded("could not write the replay ledger"),
            self._engine.begin() as connection,
        ):
            await connection.execute(statement, rows)

    async def first_failures(self, letters: Sequence[DeadLetter]) -> dict[str, str]:
        """The reason of each letter's first recorded failure, by message id: found by the
        job's key (the same across replays) or, for messages without a job, by message id."""
        keys = {letter.job_key: letter.message_id for letter in letters if letter.job_key}
        ids = {letter.message_id for letter in letters if not letter.job_key}
        query = (
            select(FailedJob.key, FailedJob.message_id, FailedJob.reason)
            .where(or_(FailedJob.key.in_(keys), FailedJob.message_id.in_(ids)))
            .order_by(FailedJob.failed_at, FailedJob.id)
        )
        reasons: dict[str, str] = {}
        async with _guarded("could not read failed_jobs"), self._engine.connect() as connection:
            for key, message_id, reason in await connection.execute(query):
                letter_id = keys.get(key) or (message_id if message_id in ids else None)
                if letter_id is not None:
                    reasons.setdefault(letter_id, reason)
        return reasons

    async def close(self) -> None:
        await self._engine.dispose()
