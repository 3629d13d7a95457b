"""A user's in-app notifications."""

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import NotFound
from app.models import Notification
from app.models.base import utcnow

_COLUMNS = (
    Notification.id,
    Notification.kind,
    Notification.title,
    Notification.body,
    Notification.created_at,
    Notification.read_at,
)


def notify(session: AsyncSession, user_id: int, kind: str, title: str, body: str) -> None:
    """Add a notification for the user to the session's transaction."""
    session.add(Notification(user_id=user_id, kind=kind, title=title, body=body))


async def list_notifications(
    session: AsyncSession, user_id: int, *, unread_only: bool, limit: int
) -> dict[str, Any]:
    """The newest notifications first, with the count of unread ones."""
    statement = select(*_COLUMNS).where(Notification.user_id == user_id)
    if unread_only:
        statement = statement.where(Notification.read_at.is_(None))
    rows = await session.execute(
        statement.order_by(Notification.created_at.desc(), Notification.id.desc()).limit(limit)
    )
    unread = await session.scalar(
        select(func.count())
        .select_from(Notification)
        .where(Notification.user_id == user_id, Notification.read_at.is_(None))
    )
    return {"items": [dict(row) for row in rows.mappings()], "unread": unread or 0}


async def mark_read(session: AsyncSession, user_id: int, notification_id: int) -> dict[str, Any]:
    """Mark one of the user's notifications read (idempotent); NotFound for others' ids."""
    await session.execute(
        update(Notification)
        .where(
            Notification.id == notification_id,
            Notification.user_id == user_id,
            Notification.read_at.is_(None),
        )
        .values(read_at=utcnow())
    )
    row = (
        (
            await session.execute(
                select(*_COLUMNS).where(
                    Notification.id == notification_id, Notification.user_id == user_id
                )
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise NotFound("Notification not found.")
    return dict(row)
