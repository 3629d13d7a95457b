"""Admin routes for the circuit breakers: read every breaker's state, set an operator state."""

import logging

from fastapi import APIRouter

from app.deps import AdminUser, BreakersDep
from app.errors import NotFound
from app.schemas.breakers import BreakerListOut, BreakerOut, BreakerStateIn
from app.services.circuit_breaker import CircuitBreaker, State

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/admin/breakers", tags=["admin"])

_OPERATOR_STATES: dict[str, State | None] = {
    "forced_open": State.FORCED_OPEN,
    "disabled": State.DISABLED,
    "auto": None,
}


def _out(breaker: CircuitBreaker) -> BreakerOut:
    return BreakerOut.model_validate({"name": breaker.name, **breaker.describe()})


@router.get("")
async def list_breakers(user: AdminUser, breakers: BreakersDep) -> BreakerListOut:
    """Every circuit breaker's state, read from Redis (shared by all processes), with its policy."""
    await breakers.refresh()
    return BreakerListOut(items=[_out(breaker) for breaker in breakers])


@router.put("/{name}")
async def set_breaker_state(
    name: str, body: BreakerStateIn, user: AdminUser, breakers: BreakersDep
) -> BreakerOut:
    """Force a breaker open, disable it, or return it to automatic control (`auto`).

    The change reaches every process through Redis; each change is logged with the admin's id.
    """
    breaker = breakers.find(name)
    if breaker is None:
        raise NotFound(f"There is no circuit breaker called {name!r}.")
    before = await breaker.refresh()
    after = await breaker.set_operator_state(_OPERATOR_STATES[body.state])
    if after is not before:
        # The audit record of an operator action.
        logger.warning(
            "circuit breaker %s set from %s to %s by admin %s",
            name,
            before.value,
            after.value,
            user.user_id,
            extra={
                "event": "breaker_state_set",
                "breaker": name,
                "from_state": before.value,
                "to_state": after.value,
                "admin_user_id": user.user_id,
            },
        )
    return _out(breaker)
