"""The caller's notifications."""

from typing import Annotated

from fastapi import APIRouter, Query

from app.deps import CurrentUser, SessionDep
from app.domain import notifications
from app.schemas.common import ResourceId
from app.schemas.notification import NotificationListOut, NotificationOut

router = APIRouter(prefix="/api/notifications", tags=["notifications"])


@router.get("")
async def list_notifications(
    user: CurrentUser,
    session: SessionDep,
    unread_only: bool = False,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> NotificationListOut:
    """Newest first, with the number still unread."""
    return NotificationListOut.model_validate(
        await notifications.list_notifications(
            session, user.user_id, unread_only=unread_only, limit=limit
        )
    )


@router.post("/{notification_id}/read")
async def mark_read(
    notification_id: ResourceId, user: CurrentUser, session: SessionDep
) -> NotificationOut:
    """Mark one notification read (idempotent)."""
    return NotificationOut.model_validate(
        await notifications.mark_read(session, user.user_id, notification_id)
    )
