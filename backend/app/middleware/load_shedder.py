"""Overload protection as pure ASGI middleware: the HTTP side of app/services/overload.

Per request: the priority from the table (app/config/priorities.py; never-shed paths pass
straight through), then admission against this process's adaptive concurrency limit: run now,
wait briefly in the priority's queue, or be shed with 503 `overloaded`, `Retry-After` and the
shared error shape, answered in the same event-loop turn whenever waiting could not help. The
slot is given back when the request ends however it ends (response, exception, cancellation, a
client gone), and its latency teaches the limit.

A login (OVERLOAD_ATTEMPT_AUTH_PATHS) that cannot be admitted at once is looked at again: with
the bearer token of a user seen taking a test (app/services/overload/markers.py) it is critical.
Successful critical requests mark their user; a successful completion clears the mark.

It sits inside the request context (shed answers carry a request id and an access log line)
and the shutdown middleware (a draining process refuses before anything queues here), and in
front of the rate limiter and the body reader: a shed request costs no Redis call and no body.
"""

from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.config.priorities import Priority
from app.database import Database
from app.error_handlers import error_response
from app.middleware.bearer_identity import BearerIdentities, authorization_of
from app.middleware.request_context import route_template
from app.resources import Resources
from app.services.overload.admission import Admission
from app.services.overload.limit import AdaptiveLimit, LimitParameters
from app.services.overload.markers import AttemptMarkers
from app.services.overload.rules import PriorityRules
from app.services.overload.signals import LoadMonitor, LoadSignals
from app.services.redis import RedisService


class LoadShedderMiddleware:
    """Pure ASGI load shedder. Uses the given RedisService and Database, else the app's
    resources (app.deps) once its lifespan opened them."""

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        redis: RedisService | None = None,
        database: Database | None = None,
    ) -> None:
        self.app = app
        self._enabled = settings.overload_enabled
        self._settings = settings
        # Built even when disabled: a bad table fails at startup either way.
        self._rules = PriorityRules(
            exact_paths=settings.overload_priority_paths,
            prefix_rules=settings.overload_priority_prefixes,
            method_priorities=settings.overload_method_priorities,
            exempt_paths=settings.overload_never_shed_paths,
        )
        self._signals = LoadSignals()
        self.admission = Admission(
            AdaptiveLimit(LimitParameters.from_settings(settings), self._signals),
            settings.overload_queues,
            background_share=settings.overload_background_share,
            critical_headroom=settings.overload_critical_headroom,
        )
        self._monitor = LoadMonitor(
            self._signals, settings.overload_lag_interval_seconds, self._pool_waiters
        )
        self._retry_after = {
            priority: queue.retry_after_seconds
            for priority, queue in settings.overload_queues.items()
        }
        self._attempt_auth_paths = frozenset(settings.overload_attempt_auth_paths)
        self._attempt_end_paths = frozenset(settings.overload_attempt_end_paths)
        self._given_redis = redis
        self._given_database = database
        self._served_app: Any = None
        self._markers: AttemptMarkers | None = None
        self._token_users = BearerIdentities(
            settings, expired_leeway_seconds=settings.overload_attempt_marker_seconds
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._enabled:
            if scope["type"] == "lifespan":
                receive = self._watch_shutdown(receive)
            await self.app(scope, receive, send)
            return
        priority = self._rules.priority(scope["method"], scope["path"])
        if priority is None:
            await self.app(scope, receive, send)
            return
        self._served_app = scope.get("app")
        self._monitor.ensure_running()
        slot = self.admission.try_acquire(priority)
        if slot is None:
            admitted_as = priority
            if priority != "critical" and await self._in_attempt(scope):
                admitted_as = "critical"
            outcome = await self.admission.acquire(admitted_as)
            if isinstance(outcome, str):
                await self._shed(admitted_as)(scope, receive, send)
                return
            slot = outcome
        status = 0

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        finished = False
        try:
            await self.app(scope, receive, send_with_status)
            finished = True
        finally:
            # Also on an exception, a cancellation or a client gone: only a finished request's
            # latency is a sample.
            self.admission.release(slot, route_template(scope) if finished else None)
        if 200 <= status < 300:
            await self._note_attempt(scope, priority)

    def _shed(self, priority: Priority) -> Response:
        retry_after = self._retry_after[priority]
        unit = "second" if retry_after == 1 else "seconds"
        return error_response(
            503,
            "overloaded",
            f"The server is overloaded. Retry in {retry_after} {unit}.",
            headers={"Retry-After": str(retry_after)},
            retry_after=retry_after,
            priority=priority,
        )

    def _watch_shutdown(self, receive: Receive) -> Receive:
        async def receive_lifespan() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                self._monitor.stop()
            return message

        return receive_lifespan

    async def _in_attempt(self, scope: Scope) -> bool:
        """Whether this is a login of a user seen taking a test (asked only under pressure)."""
        if scope["path"] not in self._attempt_auth_paths:
            return False
        user_id = self._token_user(scope)
        return user_id is not None and await self._attempt_markers().is_marked(user_id)

    async def _note_attempt(self, scope: Scope, priority: Priority) -> None:
        """After a success: a completion clears its user's marker, a critical request marks it."""
        path = scope["path"]
        ends = path in self._attempt_end_paths
        if not ends and (priority != "critical" or path in self._attempt_auth_paths):
            return
        user_id = self._token_user(scope)
        if user_id is None:
            return
        if ends:
            await self._attempt_markers().clear(user_id)
        else:
            await self._attempt_markers().mark(user_id)

    def _token_user(self, scope: Scope) -> int | None:
        """The user of the request's bearer token: signature checked, expired for at most the
        marker's lifetime (a token that ran out mid-test). Only ever used to prioritise."""
        authorization = authorization_of(scope["headers"])
        return None if authorization is None else self._token_users.user_id_of(authorization)

    def _attempt_markers(self) -> AttemptMarkers:
        resources = _app_resources(self._served_app)
        redis = self._given_redis or (resources.redis if resources is not None else None)
        markers = self._markers
        if markers is None or markers.redis is not redis:
            # One per RedisService: the app's lifespan opens a new one at each start.
            markers = self._markers = AttemptMarkers(
                redis,
                key_prefix=self._settings.cache_key_prefix,
                ttl_seconds=self._settings.overload_attempt_marker_seconds,
                timeout_seconds=self._settings.redis_socket_timeout_seconds,
            )
        return markers

    def _pool_waiters(self) -> int:
        """Requests waiting for a share of the database pool (see AreaBudget.waiting).

        Waits inside SQLAlchemy's own pool (the areas' shares overlap) and for the asyncpg read
        pool are not counted: the pools expose no waiter count. Their cost shows in latency.
        """
        resources = _app_resources(self._served_app)
        database = self._given_database or (resources.database if resources else None)
        if database is None:
            return 0
        return sum(budget.waiting for budget in database.budgets.values())


def _app_resources(app: Any) -> Resources | None:
    """The resources of the app's lifespan (None before it opened them, or for an app without)."""
    resources = getattr(getattr(app, "state", None), "resources", None)
    return resources if isinstance(resources, Resources) else None
