"""Admin routes that change accounts: deactivation and role changes end the account's sessions."""

from fastapi import APIRouter

from app.deps import AdminSessionDep, AdminUser, TokenVersionsDep
from app.domain import auth
from app.schemas.admin_users import AdminUserOut, UserUpdateIn
from app.schemas.common import ResourceId

router = APIRouter(prefix="/api/admin/users", tags=["admin"])


@router.patch("/{user_id}")
async def update_user(
    user_id: ResourceId,
    body: UserUpdateIn,
    user: AdminUser,
    session: AdminSessionDep,
    versions: TokenVersionsDep,
) -> AdminUserOut:
    """Activate or deactivate an account, or change its role. A change ends the account's
    sessions (its tokens stop working on every process within seconds); an admin cannot
    deactivate or demote themselves (403)."""
    account = await auth.change_account(session, versions, user.user_id, user_id, body.changes())
    return AdminUserOut.model_validate(account, from_attributes=True)
