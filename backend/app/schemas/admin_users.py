"""Bodies of the admin routes that change accounts."""

from typing import Literal

from pydantic import BaseModel

from app.schemas.common import StrictModel


class UserUpdateIn(StrictModel):
    """PATCH semantics: only the fields sent change; either change ends the account's sessions."""

    is_active: bool | None = None
    role: Literal["candidate", "admin"] | None = None


class AdminUserOut(BaseModel):
    id: int
    email: str
    full_name: str
    role: Literal["candidate", "admin"]
    is_active: bool
