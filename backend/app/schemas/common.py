"""Schema helpers shared by several features: the base of request bodies and the types that
keep client values inside what the database can store (no NUL in text, ids and counts within
their column's integer range), so bad input is a 422 and never reaches Postgres."""

from typing import Annotated, Any

from annotated_types import Ge, Le
from pydantic import AfterValidator, BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

from app.errors import InvalidInput

# Ids are BIGINT identity columns; other integer columns are 32-bit INTEGER.
BIGINT_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
NUL = "\x00"


def _nul_error() -> PydanticCustomError:
    return PydanticCustomError("nul_character", "Text must not contain NUL characters.")


def reject_nul(value: str) -> str:
    """Postgres cannot store NUL in text: refuse it as invalid input."""
    if NUL in value:
        raise _nul_error()
    return value


def _contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return NUL in value
    if isinstance(value, dict):
        return any(_contains_nul(key) or _contains_nul(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(_contains_nul(item) for item in value)
    return False


# A database id sent by a client (path, query or body): positive and within BIGINT.
ResourceId = Annotated[int, Ge(1), Le(BIGINT_MAX)]
# Text from a query string or path segment (bodies are covered by StrictModel).
SafeText = Annotated[str, AfterValidator(reject_nul)]


class StrictModel(BaseModel):
    """Request bodies: unknown fields are rejected, strings are stripped, and no string anywhere
    in the body (nested models and lists included) may carry a NUL character."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        if _contains_nul(data):
            raise _nul_error()
        return data

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
