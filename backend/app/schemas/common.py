"""Schema helpers shared by several features."""

from typing import Any

from pydantic import BaseModel, ConfigDict

from app.errors import InvalidInput


class StrictModel(BaseModel):
    """Request bodies: unknown fields are rejected, strings are stripped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    def changes(self, *, nullable: frozenset[str] = frozenset()) -> dict[str, Any]:
        """The fields the client sent (PATCH semantics); null only where a field allows it."""
        sent = self.model_dump(exclude_unset=True)
        nulls = sorted(
            name for name, value in sent.items() if value is None and name not in nullable
        )
        if nulls:
            raise InvalidInput("These fields cannot be null.", code="null_field", fields=nulls)
        return sent


class MessageOut(BaseModel):
    message: str
