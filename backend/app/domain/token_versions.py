"""Token versions: an access token is good only while its account is active, has the role the
token names and is still at the token version it was issued under.

An account's token version is bumped (in the transaction that makes the change) when it is
deactivated, changes role or changes password, so tokens issued before stop working.

Where the check reads the account's state, cheapest first:
1. this process's map, user id -> state, trusted for TOKEN_VERSION_LOCAL_TTL_SECONDS (2 s): a
   request of a recently seen user costs a dict lookup, no round trip;
2. one Redis key per user (`<cache prefix>:tv:<user id>`, TOKEN_VERSION_REDIS_TTL_SECONDS): one GET
   per user per process per local TTL;
3. the database (the truth), on a Redis miss; the state read is stored in Redis.

A change writes the new state into this process's map and into Redis right after its commit, so
other processes see it once their local copy expires: within the local TTL. Redis writes are
"newer version wins" (a Lua script), so a reader storing a state it read before the change can
never overwrite the change's. A token whose version is newer than the state a process holds (a
login right after a change, seen by a process with an older copy) makes that process read the
database at once instead of refusing it.

Redis unset, down or in back-off: the state comes from the database. That keeps revocations
exact (the database is the truth, and a change made while Redis is down is still seen everywhere
within the local TTL), and the cost stays bounded: at most one query per user per process per
local TTL, shared by concurrent requests. A change whose Redis write failed is sent again before
this process reads Redis again; until then it reads the database. Should another process still
read the old state from a Redis that missed the write, the Redis key's TTL bounds how long.
"""

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Final

import redis
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from app.config import Settings
from app.database import Database
from app.models import User
from app.services.redis import RedisService

logger = logging.getLogger(__name__)

# KEYS[1] the user's key; ARGV: version, encoded state, TTL in ms. Stores the state unless the
# key holds the same or a newer version (versions only grow), so an old read cannot win.
_STORE_IF_NEWER = """
local current = redis.call('GET', KEYS[1])
if current then
  local stored = tonumber(string.match(current, '^(%d+):'))
  if stored and stored >= tonumber(ARGV[1]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""

# The local map is pruned of expired entries past this size (and cleared if they are all live).
_LOCAL_MAX_ENTRIES: Final = 100_000
_SESSION_KEY: Final = "token_versions_on_commit"


@dataclass(frozen=True, slots=True)
class AccountState:
    """What a token is checked against: the account's token version, whether it is active, and
    its role."""

    version: int
    active: bool
    role: str

    def encode(self) -> str:
        return f"{self.version}:{int(self.active)}:{self.role}"

    @classmethod
    def decode(cls, raw: bytes) -> "AccountState | None":
        """The state stored in Redis, or None for a value this code does not understand."""
        try:
            version, active, role = raw.decode().split(":")
            return cls(version=int(version), active=active == "1", role=role)
        except ValueError:
            return None

    @classmethod
    def of(cls, user: User) -> "AccountState":
        return cls(version=user.token_version, active=user.is_active, role=user.role)


# None: no such account (a deleted user's token).
Lookup = AccountState | None


@dataclass(slots=True)
class _Pending:
    target: "TokenVersions"
    states: dict[int, AccountState] = field(default_factory=dict)


class TokenVersions:
    """The account states tokens are checked against (one per process; see the module doc)."""

    def __init__(self, settings: Settings, database: Database, redis_service: RedisService) -> None:
        self._database = database
        self._redis = redis_service
        self._local_ttl = settings.token_version_local_ttl_seconds
        self._redis_ttl_ms = str(settings.token_version_redis_ttl_seconds * 1000)
        # No hash tag: each key is used alone, so on Cluster users spread over the slots.
        self._prefix = f"{settings.cache_key_prefix}:tv"
        self._store = redis_service.script(_STORE_IF_NEWER)
        self._local: dict[int, tuple[float, Lookup]] = {}
        # One load per user at a time in this process: concurrent requests share it.
        self._flights: dict[tuple[int, bool], asyncio.Task[Lookup]] = {}
        # States whose Redis write failed: sent again before Redis is read again.
        self._unsent: dict[int, AccountState] = {}
        self._sending: set[asyncio.Task[None]] = set()

    async def state(self, user_id: int, *, newer_than: int | None = None) -> Lookup:
        """The account's state, from this process's copy while it is fresh.

        `newer_than`: the version of the token being checked. A copy older than it is out of
        date (the token was issued after a change this process has not seen): the state is read
        from the database at once.
        """
        entry = self._local.get(user_id)
        if entry is not None and entry[0] > time.monotonic():
            state = entry[1]
            if newer_than is None or state is None or state.version >= newer_than:
                return state
            return await self._single_flight(user_id, from_database=True)
        state = await self._single_flight(user_id, from_database=False)
        if newer_than is not None and state is not None and state.version < newer_than:
            return await self._single_flight(user_id, from_database=True)
        return state

    def changed_on_commit(self, session: AsyncSession | Session, user: User) -> None:
        """Publish `user`'s new state (local map and Redis) once `session` commits."""
        pending: _Pending = session.info.setdefault(_SESSION_KEY, _Pending(self))
        pending.states[user.id] = AccountState.of(user)

    # Internals.

    def _key(self, user_id: int) -> str:
        return f"{self._prefix}:{user_id}"

    def _remember(self, user_id: int, state: Lookup) -> None:
        now = time.monotonic()
        if len(self._local) >= _LOCAL_MAX_ENTRIES:
            self._local = {uid: item for uid, item in self._local.items() if item[0] > now}
            if len(self._local) >= _LOCAL_MAX_ENTRIES:
                self._local.clear()
        self._local[user_id] = (now + self._local_ttl, state)

    async def _single_flight(self, user_id: int, *, from_database: bool) -> Lookup:
        """One load per user (and kind) at a time in this process, in a task of its own: a
        cancelled request cannot fail the others waiting for the same load."""
        flight_key = (user_id, from_database)
        flight = self._flights.get(flight_key)
        if flight is None:
            load = self._refresh(user_id) if from_database else self._load(user_id)
            flight = self._flights[flight_key] = asyncio.get_running_loop().create_task(load)
            flight.add_done_callback(lambda done: self._landed(flight_key, done))
        return await asyncio.shield(flight)

    def _landed(self, flight_key: tuple[int, bool], flight: "asyncio.Task[Lookup]") -> None:
        del self._flights[flight_key]
        if not flight.cancelled():
            flight.exception()  # retrieved: every waiter may have gone

    async def _load(self, user_id: int) -> Lookup:
        """Redis first (when usable), else or on a miss the database."""
        if not self._redis_usable() or (self._unsent and not await self._send_unsent()):
            return await self._refresh(user_id, store=False)
        try:
            raw = await self._redis_get(user_id)
        except redis.RedisError as exc:
            self._redis.mark_failure(exc)
            return await self._refresh(user_id, store=False)
        state = AccountState.decode(raw) if raw is not None else None
        if state is None:
            return await self._refresh(user_id)
        self._remember(user_id, state)
        return state

    async def _refresh(self, user_id: int, *, store: bool = True) -> Lookup:
        """Read the database; remember the state, and store it in Redis when `store`."""
        async with self._database.read_connection("default") as connection:
            row = (
                await connection.execute(
                    select(User.token_version, User.is_active, User.role).where(User.id == user_id)
                )
            ).one_or_none()
        state = None if row is None else AccountState(row[0], bool(row[1]), row[2])
        self._remember(user_id, state)
        if state is not None and store and self._redis_usable():
            await self._store_in_redis(user_id, state)
        return state

    def _redis_usable(self) -> bool:
        return self._redis.client is not None and self._redis.available

    async def _redis_get(self, user_id: int) -> bytes | None:
        client = self._redis.client
        if client is None:
            return None
        raw = await client.get(self._key(user_id))
        return raw.encode() if isinstance(raw, str) else raw

    async def _store_in_redis(self, user_id: int, state: AccountState) -> bool:
        try:
            await self._store(
                keys=[self._key(user_id)],
                args=[state.version, state.encode(), self._redis_ttl_ms],
            )
        except redis.RedisError as exc:
            self._redis.mark_failure(exc)
            return False
        return True

    async def _send_unsent(self) -> bool:
        """Send the changes whose Redis write failed; False while Redis still refuses them."""
        for user_id, state in list(self._unsent.items()):
            if not await self._store_in_redis(user_id, state):
                return False
            if self._unsent.get(user_id) is state:
                del self._unsent[user_id]
        return True

    def _committed(self, states: dict[int, AccountState]) -> None:
        for user_id, state in states.items():
            self._remember(user_id, state)
        if self._redis.client is None:
            return
        task = asyncio.get_running_loop().create_task(self._publish(states))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _publish(self, states: dict[int, AccountState]) -> None:
        for user_id, state in states.items():
            if not self._redis.available or not await self._store_in_redis(user_id, state):
                self._unsent[user_id] = state
                logger.warning(
                    "token version of user %s not written to Redis: sent again later", user_id
                )


@event.listens_for(Session, "after_commit")
def _publish_after_commit(session: Session) -> None:
    pending: _Pending | None = session.info.pop(_SESSION_KEY, None)
    if pending is not None:
        pending.target._committed(pending.states)


@event.listens_for(Session, "after_transaction_end")
def _forget_after_rollback(session: Session, transaction: SessionTransaction) -> None:
    # A rolled back change publishes nothing (after a commit the entry is already gone).
    if transaction.parent is None:
        session.info.pop(_SESSION_KEY, None)
