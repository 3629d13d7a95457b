"""Limits on what the auth routes target, beside the per-address auth tier: failed logins per
account and per client address, and password-reset e-mails per recipient.

Failed logins (OWASP's design against credential stuffing without lock-out): every login attempt
counts as a failure in advance, in one atomic step with the check, so concurrent attempts on
several processes cannot overshoot; a success or an answer that was not a wrong password gives its
count back. Past the threshold, attempts for the account are refused (429 `login_throttled`) before
the password is checked, except from addresses that logged in to that account recently (kept per
account, bounded), so a botnet cannot lock the real user out. A success never resets the count for
the others. Unknown accounts are counted alike, so a refusal says nothing about existence. The
same counters per client address, across accounts, stop password spraying.

Backends: Redis (Lua, the server's clock; keys of one step share a hash tag for Cluster); without
REDIS_URL, in-process counters (one dev process); Redis configured but down: no limit (fail open,
logged once) - the per-address auth tier still applies.
"""

import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, NoReturn, cast

import redis
from prometheus_client import Counter

from app.config import Settings
from app.errors import AppError, NotAuthenticated
from app.services.redis import RedisService

logger = logging.getLogger(__name__)

AUTH_LIMIT_REFUSALS = Counter(
    "hiringpro_auth_limit_refusals_total",
    "Requests an auth limit refused: login_account and login_address (429 login_throttled), "
    "reset_email (a reset e-mail not sent; the answer is the same 202).",
    ["limit"],
)
AUTH_LIMIT_FAIL_OPEN = Counter(
    "hiringpro_auth_limit_fail_open_total",
    "Auth-limit checks skipped because Redis was unavailable (the request was admitted).",
)

# KEYS[1]: a counter. ARGV: limit, window (ms). Count one unless the counter is at the limit.
# Returns {admitted 1/0, ms until the window ends (when refused)}.
TAKE_LUA = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if count >= tonumber(ARGV[1]) then
  return {0, redis.call('PTTL', KEYS[1])}
end
if redis.call('INCR', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return {1, 0}
"""

# KEYS[1]: an account's failure counter, KEYS[2]: its known addresses (sorted set, address -> last
# successful login, server seconds). ARGV: address, limit, window (ms), remember (s).
# Returns {admitted 1/0, address known 1/0, ms until the window ends (when refused)}.
ACCOUNT_TAKE_LUA = """
local now = tonumber(redis.call('TIME')[1])
local seen = redis.call('ZSCORE', KEYS[2], ARGV[1])
local known = 0
if seen and tonumber(seen) > now - tonumber(ARGV[4]) then known = 1 end
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if known == 0 and count >= tonumber(ARGV[2]) then
  return {0, 0, redis.call('PTTL', KEYS[1])}
end
if redis.call('INCR', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return {1, known, 0}
"""

# KEYS[1]: a counter. Give back one count taken in advance (never below zero; the TTL stays).
GIVE_BACK_LUA = """
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then redis.call('DECR', KEYS[1]) end
return 1
"""

# KEYS[1]: an account's failure counter, KEYS[2]: its known addresses. ARGV: address, remember
# (s), most addresses kept. A successful login: give back its count, remember the address (the
# least recent beyond the bound are dropped).
ACCOUNT_SUCCESS_LUA = """
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then redis.call('DECR', KEYS[1]) end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local remember = tonumber(ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - remember)
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if extra > 0 then redis.call('ZREMRANGEBYRANK', KEYS[2], 0, extra - 1) end
redis.call('EXPIRE', KEYS[2], remember)
return 1
"""


class LoginThrottled(AppError):
    """Too many failed logins for the account (or from the address) within the window."""

    status_code = 429
    code = "login_throttled"
    message = "Too many failed login attempts. Try again later."


@dataclass(slots=True)
class _Taken:
    """What an admitted login attempt counted in advance, to give back unless it failed."""

    account: str
    address: str
    counted_account: bool = False
    counted_address: bool = False


class AuthLimits:
    """The account, address and recipient limits of the auth routes; one per RedisService."""

    def __init__(self, settings: Settings, redis_service: RedisService) -> None:
        self.redis = redis_service
        self._key = settings.jwt_signing_key().encode()
        self._account_limit = settings.login_account_failure_limit
        self._account_window_ms = settings.login_account_failure_window_seconds * 1000
        self._address_limit = settings.login_address_failure_limit
        self._address_window_ms = settings.login_address_failure_window_seconds * 1000
        self._remember_seconds = settings.login_known_address_days * 86_400
        self._remember_max = settings.login_known_addresses_max
        self._reset_limit = settings.reset_email_limit
        self._reset_window_ms = settings.reset_email_window_seconds * 1000
        self._take = redis_service.script(TAKE_LUA)
        self._account_take = redis_service.script(ACCOUNT_TAKE_LUA)
        self._give_back = redis_service.script(GIVE_BACK_LUA)
        self._account_success = redis_service.script(ACCOUNT_SUCCESS_LUA)
        self._local = _LocalCounters(settings.rate_limit_local_max_keys)
        self._open = False

    def digest(self, value: str) -> str:
        """A keyed hash of an e-mail address: for Redis keys and log lines, never the address."""
        return hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()[:32]

    @asynccontextmanager
    async def login(self, account: str, address: str) -> AsyncIterator[None]:
        """Guard one login for `account` (the normalised e-mail) from client key `address`.

        Raises LoginThrottled before the body runs when the account or the address is over its
        failure limit and the address has not logged in to the account recently. The body's
        NotAuthenticated is a failed login (it stays counted); a normal exit is a success; any
        other exception gives the count back. Never raises for Redis trouble.
        """
        taken = _Taken(self.digest(account), address)
        await self._begin(taken)
        try:
            yield
        except NotAuthenticated:
            raise
        except BaseException:
            await self._end(taken, succeeded=False)
            raise
        await self._end(taken, succeeded=True)

    async def reset_email_allowed(self, recipient: str) -> bool:
        """Count one reset e-mail for `recipient` (normalised); False once it had its share.

        A refusal is counted in metrics and logged with the address hashed. Never raises.
        """
        digest = self.digest(recipient)
        counted = await self._count(
            f"al:{{m:{digest}}}:n", self._reset_limit, self._reset_window_ms
        )
        allowed = counted is None or counted[0]
        if not allowed:
            AUTH_LIMIT_REFUSALS.labels("reset_email").inc()
            logger.info("password reset e-mail not sent: recipient limit (recipient=%s)", digest)
        return allowed

    async def _begin(self, taken: _Taken) -> None:
        """Check the account's and the address's failure counts and count this attempt."""
        account = await self._count_account(taken)
        if account is None:
            return
        admitted, known, wait_ms = account
        if not admitted:
            self._throttle("login_account", wait_ms)
        taken.counted_account = True
        if known:
            return
        address = await self._count(
            f"al:{{ip:{taken.address}}}:f", self._address_limit, self._address_window_ms
        )
        if address is None:
            return
        if not address[0]:
            await self._end(taken, succeeded=False)
            self._throttle("login_address", address[1])
        taken.counted_address = True

    async def _count_account(self, taken: _Taken) -> tuple[bool, bool, int] | None:
        """ACCOUNT_TAKE_LUA: (admitted, address known, ms to wait); None when failing open."""
        keys = _account_keys(taken.account)
        if self.redis.client is None:
            return self._local.account_take(
                keys, taken.address, self._account_limit, self._account_window_ms
            )
        args = [taken.address, self._account_limit, self._account_window_ms]
        result = await self._redis(self._account_take, keys, [*args, self._remember_seconds])
        if result is None:
            return None
        return bool(result[0]), bool(result[1]), int(result[2])

    async def _count(self, key: str, limit: int, window_ms: int) -> tuple[bool, int] | None:
        """TAKE_LUA: (admitted, ms to wait); None when failing open."""
        if self.redis.client is None:
            return self._local.take(key, limit, window_ms)
        result = await self._redis(self._take, [key], [limit, window_ms])
        if result is None:
            return None
        return bool(result[0]), int(result[1])

    async def _end(self, taken: _Taken, *, succeeded: bool) -> None:
        """Give back the counts taken in advance; on success also remember the address."""
        account_keys = _account_keys(taken.account)
        address_key = f"al:{{ip:{taken.address}}}:f"
        if self.redis.client is None:
            if taken.counted_account:
                self._local.give_back(account_keys[0])
                if succeeded:
                    self._local.remember(
                        account_keys[1], taken.address, self._remember_seconds, self._remember_max
                    )
            if taken.counted_address:
                self._local.give_back(address_key)
            return
        if taken.counted_account:
            if succeeded:
                args: list[str | int] = [taken.address, self._remember_seconds, self._remember_max]
                await self._redis(self._account_success, account_keys, args)
            else:
                await self._redis(self._give_back, account_keys[:1], [])
        if taken.counted_address:
            await self._redis(self._give_back, [address_key], [])

    def _throttle(self, limit: str, wait_ms: int) -> NoReturn:
        AUTH_LIMIT_REFUSALS.labels(limit).inc()
        retry_after = max(1, -(-wait_ms // 1000))
        raise LoginThrottled(
            f"Too many failed login attempts. Try again in {retry_after} seconds.",
            headers={"Retry-After": str(retry_after)},
            retry_after=retry_after,
        )

    async def _redis(self, script: Any, keys: list[str], args: list[Any]) -> list[Any] | None:
        """Run `script`; None when Redis is unavailable (the caller admits: fail open)."""
        if self.redis.available:
            try:
                result = cast(list[Any], await script(keys, args))
            except redis.RedisError as exc:
                self.redis.mark_failure(exc)
            else:
                if self._open:
                    self._open = False
                    logger.warning("Auth limits (failed logins, reset e-mails) back on Redis")
                return result
        AUTH_LIMIT_FAIL_OPEN.inc()
        if not self._open:
            self._open = True
            logger.warning(
                "Auth limits (failed logins, reset e-mails) off while Redis is unavailable; "
                "the per-address auth tier still applies"
            )
        return None


def _account_keys(digest: str) -> list[str]:
    """An account's failure counter and known addresses (one hash tag: one Cluster slot)."""
    return [f"al:{{a:{digest}}}:f", f"al:{{a:{digest}}}:k"]


class _LocalCounters:
    """The same counters in this process, for the no-Redis (single process) mode."""

    def __init__(self, max_keys: int) -> None:
        # key -> (count, window end); key -> {address: last success}; insertion order is LRU.
        self._counts: dict[str, tuple[int, float]] = {}
        self._known: dict[str, dict[str, float]] = {}
        self._max_keys = max_keys

    def take(self, key: str, limit: int, window_ms: int) -> tuple[bool, int]:
        """Count one unless at `limit`: (admitted, ms until the window ends when refused)."""
        now = time.monotonic()
        count, ends = self._counts.pop(key, (0, 0.0))
        if ends <= now:
            count, ends = 0, now + window_ms / 1000
        if count >= limit:
            self._store(self._counts, key, (count, ends))
            return False, int((ends - now) * 1000)
        self._store(self._counts, key, (count + 1, ends))
        return True, 0

    def account_take(
        self, keys: list[str], address: str, limit: int, window_ms: int
    ) -> tuple[bool, bool, int]:
        """ACCOUNT_TAKE_LUA: (admitted, address known, ms until the window ends)."""
        known = self._known.get(keys[1], {}).get(address, 0.0) > time.time()
        if known:
            self.take(keys[0], 2**62, window_ms)
            return True, True, 0
        admitted, wait_ms = self.take(keys[0], limit, window_ms)
        return admitted, False, wait_ms

    def give_back(self, key: str) -> None:
        """GIVE_BACK_LUA."""
        entry = self._counts.get(key)
        if entry is not None and entry[0] > 0:
            self._counts[key] = (entry[0] - 1, entry[1])

    def remember(self, key: str, address: str, remember_seconds: int, most: int) -> None:
        """The address logged in to the account: known until `remember_seconds` from now."""
        now = time.time()
        addresses = {a: until for a, until in self._known.pop(key, {}).items() if until > now}
        addresses.pop(address, None)
        addresses[address] = now + remember_seconds
        while len(addresses) > most:
            del addresses[next(iter(addresses))]
        self._store(self._known, key, addresses)

    def _store(self, table: dict[str, Any], key: str, value: Any) -> None:
        if len(table) >= self._max_keys:
            del table[next(iter(table))]
        table[key] = value
