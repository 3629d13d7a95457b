"""Async engine and per-request sessions: Postgres via asyncpg, or the embedded SQLite file."""

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
import orjson
from sqlalchemy import Select, event, text
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction
from sqlalchemy.pool import NullPool, QueuePool

from app.config import Settings
from app.errors import CommitOutcomeUnknown, DatabaseTimeout, DatabaseUnavailable, ServiceBusy

logger = logging.getLogger(__name__)

# Areas of routes, each with its own share of the main pool's connections (AreaBudget).
Area = Literal["assessments", "admin", "default"]
# Execution option giving a transaction its own statement budget in ms (set with SET LOCAL).
STATEMENT_TIMEOUT_OPTION = "statement_timeout_ms"


def _json_serializer(value: Any) -> str:
    return orjson.dumps(value).decode()


# JSON columns are encoded and decoded with orjson (several times faster than the stdlib).
_JSON_CODEC: dict[str, Any] = {
    "json_serializer": _json_serializer,
    "json_deserializer": orjson.loads,
}


def _unnamed_statement() -> str:
    # The unnamed statement: with asyncpg's cache off it is parsed again in the same message
    # batch as its Bind/Execute/Sync, so it cannot outlive its round trip on a pooled server
    # connection. Named statements (even uuid-named) were never closed there: 100 statements
    # left 100 prepared statements on one PgBouncer server connection.
    return ""


# Driver errors that mean the statement ran out of time (statement_timeout, lock_timeout, or
# the client-side command timeout that bounds autocommit reads behind a pooler).
_TIMEOUT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.QueryCanceledError,
    asyncpg.LockNotAvailableError,
    TimeoutError,
)
# ... and errors that mean the server or pooler could not be reached or dropped the connection
# (restart, failover, pg_terminate_backend, a read-only standby after failover).
_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.ReadOnlySQLTransactionError,
    # The driver's protocol state broke with the connection: e.g. a backend terminated while
    # its connection sat idle in a pool leaves it "consuming an error" when the next query runs.
    asyncpg.InternalClientError,
)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__


def database_fault(
    exc: BaseException, *, disconnect: bool = False
) -> DatabaseTimeout | DatabaseUnavailable | None:
    """The client-facing error for an expected database fault, or None (anything else is a bug).

    Looks through SQLAlchemy's wrapping to the driver's error; `disconnect` is SQLAlchemy's own
    verdict that the connection is gone (e.g. asyncpg's "connection is closed" on a pooled
    connection the pooler dropped). Logs one line per fault, without the statement or the
    server's message (they can carry data).
    """
    for error in _causes(exc):
        fault: DatabaseTimeout | DatabaseUnavailable
        if isinstance(error, _TIMEOUT_ERRORS):
            fault = DatabaseTimeout()
        elif isinstance(error, _UNAVAILABLE_ERRORS):
            fault = DatabaseUnavailable()
        else:
            continue
        logger.warning("Database fault: %s (%s)", fault.code, type(error).__name__)
        return fault
    if disconnect:
        logger.warning("Database fault: database_unavailable (%s)", type(exc).__name__)
        return DatabaseUnavailable()
    return None


@contextmanager
def _faults_translated() -> Iterator[None]:
    """Re-raise expected database faults as DatabaseTimeout/DatabaseUnavailable."""
    try:
        yield
    except Exception as exc:
        fault = database_fault(exc)
        if fault is None:
            raise
        raise fault from exc


def _translate_faults(engine: AsyncEngine) -> None:
    """Raise DatabaseTimeout/DatabaseUnavailable for expected faults, from connect onwards."""

    @event.listens_for(engine.sync_engine, "do_connect")
    def _connect(dialect: Dialect, _record: Any, cargs: Any, cparams: Any) -> Any:
        with _faults_translated():
            return dialect.connect(*cargs, **cparams)

    @event.listens_for(engine.sync_engine, "handle_error")
    def _on_error(context: Any) -> None:
        # A failed pre-ping is SQLAlchemy's to handle: it replaces the dead connection. A
        # cancellation (asyncio.timeout, a request cut short) is its canceller's: SQLAlchemy
        # counts it as a disconnect, but raising a fault here would swallow it.
        if context.is_pre_ping or not isinstance(context.original_exception, Exception):
            return
        # Raising here replaces SQLAlchemy's exception; a lost connection is still invalidated.
        fault = database_fault(context.original_exception, disconnect=context.is_disconnect)
        if fault is not None:
            raise fault from context.original_exception


def create_engine(settings: Settings, *, role: str = "web") -> AsyncEngine:
    """Build the engine for the configured database.

    `role` tags Postgres connections (application_name) so they are traceable on the server.
    """
    url = make_url(settings.sqlalchemy_url)
    if url.get_backend_name() == "sqlite":
        return _create_sqlite_engine(settings)

    server_settings = {"application_name": f"{settings.db_application_name}-{role}"}
    tls = _tls(settings)
    if settings.use_external_pooler:
        # Supavisor/PgBouncer in transaction mode hands each transaction to any server connection,
        # so nothing may outlive a transaction: no asyncpg statement cache, no SQLAlchemy prepared
        # statement cache, only the unnamed statement, nothing session-scoped.
        engine = create_async_engine(
            url,
            **_JSON_CODEC,
            **_pooler_client_pool(settings),
            connect_args={
                "statement_cache_size": 0,
                "prepared_statement_cache_size": 0,
                "prepared_statement_name_func": _unnamed_statement,
                "server_settings": server_settings,
                # Autocommit reads have no transaction to carry SET LOCAL: asyncpg cancels
                # them on the server (through the pooler) when this runs out. It is per
                # connection, so it must leave room for the longest per-transaction budget.
                "command_timeout": _longest_budget_ms(settings) / 1000 or None,
                **tls,
            },
        )
        # Poolers drop startup options, so the timeouts are set per transaction instead.
        _set_transaction_timeouts(engine, settings)
        _translate_faults(engine)
        return engine

    server_settings["statement_timeout"] = str(settings.db_statement_timeout_ms)
    server_settings["lock_timeout"] = str(settings.db_lock_timeout_ms)
    engine = create_async_engine(
        url,
        **_JSON_CODEC,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        pool_recycle=settings.db_pool_recycle_seconds,
        pool_pre_ping=True,
        connect_args={"server_settings": server_settings, **tls},
    )
    # Only transactions with a budget of their own (admin reads) set one.
    _set_transaction_timeouts(engine, settings)
    _translate_faults(engine)
    return engine


def _longest_budget_ms(settings: Settings) -> int:
    """The longest statement budget a transaction on the engine may have (0: unlimited)."""
    budgets = (settings.db_statement_timeout_ms, settings.db_admin_statement_timeout_ms)
    return 0 if 0 in budgets else max(budgets)


def _tls(settings: Settings) -> dict[str, Any]:
    """asyncpg's `ssl` argument from DB_SSL, for the engine and the read pool alike."""
    return {} if settings.db_ssl is None else {"ssl": settings.db_ssl}


def _pooler_client_pool(settings: Settings) -> dict[str, Any]:
    """The engine's pool of client connections to a transaction pooler.

    Opening a pooler connection per transaction cost a write 1.8 ms of app CPU (3.7 ms with
    TLS) and two round trips (bench/pooler), so a few are kept: the pooler still decides which
    server connection each transaction runs on. No pre-ping: it costs a second pooler
    transaction and 4 round trips per checkout; a connection the pooler dropped fails its
    request once (503), and that disconnect invalidates the rest of the pool.
    """
    if settings.db_pooler_client_pool_size == 0:
        return {"poolclass": NullPool}
    return {
        "pool_size": settings.db_pooler_client_pool_size,
        "max_overflow": 0,
        "pool_timeout": settings.db_pool_timeout_seconds,
        "pool_recycle": settings.db_pool_recycle_seconds,
        "pool_pre_ping": False,
    }


def _create_sqlite_engine(settings: Settings) -> AsyncEngine:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(
        settings.sqlalchemy_url, **_JSON_CODEC, connect_args={"timeout": 30}
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # WAL lets readers proceed during a write; foreign keys are off by default in SQLite.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


def _timeouts_statement(statement_timeout_ms: int, lock_timeout_ms: int | None) -> str:
    # One statement per transaction; set_config(..., true) is SET LOCAL.
    statement = f"SELECT set_config('statement_timeout', '{int(statement_timeout_ms)}', true)"
    if lock_timeout_ms is not None:
        statement += f", set_config('lock_timeout', '{int(lock_timeout_ms)}', true)"
    return statement


def _set_transaction_timeouts(engine: AsyncEngine, settings: Settings) -> None:
    """Set timeouts at the start of each transaction that needs them, with SET LOCAL.

    Behind a pooler (no startup options) every transaction sets both, with its own statement
    budget (STATEMENT_TIMEOUT_OPTION) if it has one. Directly the connection's timeouts apply,
    and only a transaction with its own budget sets it: no round trip for the others.
    """
    pooled = settings.use_external_pooler
    lock_timeout = settings.db_lock_timeout_ms
    default = _timeouts_statement(settings.db_statement_timeout_ms, lock_timeout)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        options = connection.get_execution_options()
        if options.get("isolation_level") == "AUTOCOMMIT":
            return
        budget: int | None = options.get(STATEMENT_TIMEOUT_OPTION)
        if budget is not None:
            connection.exec_driver_sql(
                _timeouts_statement(budget, lock_timeout if pooled else None)
            )
        elif pooled:
            connection.exec_driver_sql(default)


async def _init_read_connection(connection: asyncpg.Connection) -> None:
    # Same JSON decoding as the engine: orjson, text format.
    for type_name in ("json", "jsonb"):
        await connection.set_type_codec(
            type_name, schema="pg_catalog", encoder=_json_serializer, decoder=orjson.loads
        )


async def _keep_session(_connection: asyncpg.Connection) -> None:
    # asyncpg's default reset on release (unlock advisory locks, close cursors, unlisten,
    # RESET ALL) is a round trip per read, and a pooler transaction of its own behind a
    # pooler; read connections change no session state. An open transaction is still rolled
    # back by asyncpg before this runs.
    return None


def _outcome_dsn(settings: Settings) -> str | None:
    """Where a lost commit's outcome is looked up (None for SQLite): the direct URL when there
    is one, so a restarting pooler does not stand in the way."""
    url = make_url(settings.migrations_url or settings.sqlalchemy_url)
    if url.get_backend_name() != "postgresql":
        return None
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _asyncpg_dsn(settings: Settings) -> str:
    """The database URL in asyncpg's own spelling."""
    url = make_url(settings.sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


async def create_read_pool(settings: Settings, *, role: str) -> asyncpg.Pool | None:
    """On Postgres, a plain asyncpg pool for the hottest reads (None elsewhere).

    SQLAlchemy's async connection machinery (greenlet hops, pool events, pre-ping) cost the job
    listing about a third of its throughput and doubled its p99 (bench/read_routes); these reads
    need none of it. Behind a transaction pooler its statements are unnamed and uncached, and
    each query is its own transaction, so it is safe there too.
    """
    url = make_url(settings.sqlalchemy_url)
    if url.get_backend_name() != "postgresql":
        return None
    server_settings = {"application_name": f"{settings.db_application_name}-{role}-read"}
    if not settings.use_external_pooler:
        server_settings["statement_timeout"] = str(settings.db_read_statement_timeout_ms)
        server_settings["lock_timeout"] = str(settings.db_lock_timeout_ms)
    return await asyncpg.create_pool(
        _asyncpg_dsn(settings),
        min_size=0,
        max_size=settings.db_read_pool_size,
        # Idle connections are closed, like the engine's pool_recycle.
        max_inactive_connection_lifetime=settings.db_pool_recycle_seconds,
        statement_cache_size=0 if settings.use_external_pooler else 100,
        # Behind a pooler (no startup options) the only bound; directly, a backstop.
        command_timeout=settings.db_read_statement_timeout_ms / 1000 or None,
        server_settings=server_settings,
        init=_init_read_connection,
        reset=_keep_session,
        **_tls(settings),
    )


class AreaBudget:
    """At most `limit` of the main pool's connections for one area's requests at a time.

    A request over the limit waits up to `wait_seconds` for one of the area's connections,
    then gets 503 service_busy: a lock on one area's tables parks that area's connections
    only. `limit` None (no local pool: NullPool, SQLite) admits everything.
    """

    def __init__(self, limit: int | None, wait_seconds: float) -> None:
        self.limit = limit
        self.in_use = 0
        # Requests waiting for one of the area's connections (a load signal for the shedder).
        self.waiting = 0
        self._wait_seconds = wait_seconds
        self._semaphore = None if limit is None else asyncio.Semaphore(limit)

    async def __aenter__(self) -> None:
        semaphore = self._semaphore
        if semaphore is not None:
            if semaphore.locked():
                self.waiting += 1
                try:
                    async with asyncio.timeout(self._wait_seconds):
                        await semaphore.acquire()
                except TimeoutError:
                    raise ServiceBusy() from None
                finally:
                    self.waiting -= 1
            else:
                # A free slot is taken without suspending: no timer on the common path.
                await semaphore.acquire()
        self.in_use += 1

    async def __aexit__(self, *_exc_info: object) -> None:
        self.in_use -= 1
        if self._semaphore is not None:
            self._semaphore.release()


def _pool_capacity(settings: Settings) -> int | None:
    """Connections the engine's pool may hold at once; None without a local pool to share."""
    if make_url(settings.sqlalchemy_url).get_backend_name() != "postgresql":
        return None
    if settings.use_external_pooler:
        return settings.db_pooler_client_pool_size or None
    return settings.db_pool_size + settings.db_max_overflow


def _area_budgets(settings: Settings) -> dict[Area, AreaBudget]:
    capacity = _pool_capacity(settings)
    shares: dict[Area, float] = {
        "assessments": settings.db_assessments_pool_share,
        "admin": settings.db_admin_pool_share,
        "default": settings.db_default_pool_share,
    }
    return {
        area: AreaBudget(
            None if capacity is None else max(1, int(capacity * share)),
            settings.db_pool_timeout_seconds,
        )
        for area, share in shares.items()
    }


@dataclass
class Database:
    """The engine, a session factory for writes, an autocommit engine for plain reads, and on
    Postgres a driver-level pool for the hottest reads (see CompiledRead).

    Requests reach the engine through `session(area)`, `read_connection(area)` and
    `report_connection()`, which keep each area of routes within its share of the pool.
    """

    settings: Settings
    role: str
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    read_engine: AsyncEngine
    # Admin reads: transactions with the longer DB_ADMIN_STATEMENT_TIMEOUT_MS.
    report_engine: AsyncEngine
    budgets: dict[Area, AreaBudget]
    # Opened by open_read_pool() in the app lifespan; scripts without it read through the engine.
    read_pool: asyncpg.Pool | None = None
    # How long a request waits for a connection (its area's, the read pool's) before 503.
    pool_wait_seconds: float = 10.0

    @classmethod
    def create(cls, settings: Settings, *, role: str = "web") -> "Database":
        engine = create_engine(settings, role=role)
        return cls(
            settings=settings,
            role=role,
            engine=engine,
            sessionmaker=async_sessionmaker(
                engine,
                sync_session_class=_WriteTrackingSession,
                expire_on_commit=False,
                autoflush=False,
            ),
            # Reads that need no transaction skip BEGIN/ROLLBACK round trips; same pool.
            read_engine=engine.execution_options(isolation_level="AUTOCOMMIT"),
            report_engine=engine.execution_options(
                **{STATEMENT_TIMEOUT_OPTION: settings.db_admin_statement_timeout_ms}
            ),
            budgets=_area_budgets(settings),
            pool_wait_seconds=settings.db_pool_timeout_seconds,
        )

    async def open_read_pool(self, settings: Settings, *, role: str) -> None:
        """Open the driver-level read pool (Postgres only; connections are made on demand)."""
        self.read_pool = await create_read_pool(settings, role=role)

    @asynccontextmanager
    async def session(self, area: Area) -> AsyncIterator[AsyncSession]:
        """A session whose connection counts against `area`'s share of the pool."""
        async with self.budgets[area], self.sessionmaker() as session:
            yield session

    @asynccontextmanager
    async def read_connection(self, area: Area) -> AsyncIterator[AsyncConnection]:
        """An autocommit connection (no transaction round trips) within `area`'s share."""
        async with self.budgets[area], self.read_engine.connect() as connection:
            yield connection

    @asynccontextmanager
    async def report_connection(self) -> AsyncIterator[AsyncConnection]:
        """A connection for admin reports and search, within the admin area's share: one
        transaction with the longer DB_ADMIN_STATEMENT_TIMEOUT_MS, set per transaction so it
        holds behind a pooler too."""
        async with self.budgets["admin"], self.report_engine.begin() as connection:
            yield connection

    def _engine_pool_full(self) -> bool:
        pool = self.engine.sync_engine.pool
        capacity = _pool_capacity(self.settings)
        if capacity is None or not isinstance(pool, QueuePool):
            return False
        return pool.checkedout() >= capacity

    def _read_pool_full(self) -> bool:
        pool = self.read_pool
        if pool is None:
            return False
        in_use: int = pool.get_size() - pool.get_idle_size()
        limit: int = pool.get_max_size()
        return in_use >= limit

    async def probe(self) -> Literal["ok", "busy"]:
        """SELECT 1 for readiness: "ok", or "busy" when a pool has no free connection.

        The probe never queues behind requests: with the engine's pool taken it runs on a
        one-off connection. Raises the driver's error when the database cannot be reached;
        the caller bounds the wait.
        """
        engine_full = self._engine_pool_full()
        if engine_full:
            await self._probe_one_off()
        else:
            async with self.read_engine.connect() as connection:
                await connection.exec_driver_sql("SELECT 1")
        return "busy" if engine_full or self._read_pool_full() else "ok"

    async def _probe_one_off(self) -> None:
        connection = await asyncpg.connect(
            _asyncpg_dsn(self.settings),
            statement_cache_size=0,
            server_settings={
                "application_name": f"{self.settings.db_application_name}-{self.role}-probe"
            },
            **_tls(self.settings),
        )
        try:
            # The simple query protocol: no statement prepared, fine behind a pooler.
            await connection.execute("SELECT 1")
        finally:
            await connection.close()

    async def commit(self, session: AsyncSession) -> None:
        """Commit a request's session; when the connection is lost under the COMMIT, ask the
        database whether the transaction committed instead of guessing.

        A connection can drop after the server committed but before its answer arrived
        (pooler restart, failover): a plain 503 then told the client its write was refused
        although it was stored (found by the fault drills). A transaction that wrote fetches
        its id before COMMIT (one round trip, writes only); if the COMMIT is lost, a new
        connection looks it up (txid_status): committed → success; aborted → the
        DatabaseUnavailable as before; undecidable → CommitOutcomeUnknown (503 that says the
        change may have been saved).
        """
        dsn = _outcome_dsn(self.settings)
        transaction_id: int | None = None
        if dsn is not None and session.info.get(_WROTE):
            transaction_id = await session.scalar(text("SELECT txid_current_if_assigned()"))
        try:
            await session.commit()
        except DatabaseUnavailable as lost:
            if dsn is None or transaction_id is None:
                raise
            outcome = await _transaction_outcome(dsn, transaction_id)
            if outcome == "committed":
                logger.warning("Database fault: the COMMIT's answer was lost; it committed")
                return
            if outcome == "aborted":
                raise
            logger.warning("Database fault: commit_outcome_unknown")
            raise CommitOutcomeUnknown() from lost

    async def dispose(self) -> None:
        if self.read_pool is not None:
            await self.read_pool.close()
        await self.engine.dispose()


class _WriteTrackingSession(Session):
    """The ORM session behind every AsyncSession here: notes in `info` when its transaction
    wrote (Database.commit asks for a lost commit's outcome only then)."""


_WROTE = "wrote"
# How often, and how far apart, a lost commit's transaction is looked up while still running.
_OUTCOME_LOOKUPS = 5
_OUTCOME_LOOKUP_INTERVAL = 0.2


@event.listens_for(_WriteTrackingSession, "after_flush")
def _flushed(session: Session, _context: Any) -> None:
    session.info[_WROTE] = True


@event.listens_for(_WriteTrackingSession, "do_orm_execute")
def _executed(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        state.session.info[_WROTE] = True


@event.listens_for(_WriteTrackingSession, "after_transaction_end")
def _ended(session: Session, transaction: SessionTransaction) -> None:
    # Only the outermost transaction: a flush runs in an inner one of its own.
    if transaction.parent is None:
        session.info.pop(_WROTE, None)


async def _transaction_outcome(dsn: str, transaction_id: int) -> str | None:
    """txid_status of a transaction, on a connection of its own: "committed", "aborted", or
    None when it cannot be decided (the database unreachable, still in progress)."""
    for _ in range(_OUTCOME_LOOKUPS):
        try:
            connection = await asyncpg.connect(dsn, timeout=2, statement_cache_size=0)
            try:
                status = await connection.fetchval(
                    "SELECT txid_status($1::bigint)", transaction_id, timeout=2
                )
            finally:
                await connection.close()
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            status = None
        if status in ("committed", "aborted"):
            return str(status)
        # In progress: its server connection has not yet noticed the client is gone.
        await asyncio.sleep(_OUTCOME_LOOKUP_INTERVAL)
    return None


def contains_pattern(term: str) -> str:
    """A LIKE pattern matching `term` anywhere, its wildcards escaped (use with escape="\\")."""
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# Driver errors that mean a read's connection died under it (terminated backend, server crash,
# pooler restart; asyncpg reports most as "connection was closed in the middle of operation").
# Unlike a timeout, nothing of the connection is left, and a new one can run the read again.
_CONNECTION_LOST_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    # Found by the fault drills: a backend terminated while its connection was idle in the pool
    # ("cannot switch to state 11; another operation (2) is in progress").
    asyncpg.InternalClientError,
)


class CompiledRead:
    """A Core SELECT for the hottest read routes, run as cheaply as the driver allows.

    On Postgres the statement is compiled once and run on the database's asyncpg read pool: no
    greenlets, no Core result machinery, no per-row type processing (asyncpg returns aware
    datetimes; JSON is decoded by orjson). Elsewhere (SQLite) it runs through SQLAlchemy.
    Parameters are plain values for the statement's named bindparams.
    """

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement
        self._compiled: tuple[str, tuple[str, ...], dict[str, Any]] | None = None

    def _compile(self, dialect: Dialect) -> tuple[str, tuple[str, ...], dict[str, Any]]:
        if self._compiled is None:
            compiled = self.statement.compile(dialect=dialect)
            names = tuple(compiled.positiontup or ())
            self._compiled = (compiled.string, names, dict(compiled.params))
        return self._compiled

    async def fetch(self, database: Database, **params: Any) -> list[dict[str, Any]]:
        """The rows as dicts.

        A read whose connection turns out dead is run once more on a new connection: a SELECT
        has no effect to repeat. Timeouts and failures to connect are not retried.
        """
        if database.read_pool is None:
            async with database.read_engine.connect() as connection:
                result = await connection.execute(self.statement, params)
                return [dict(row) for row in result.mappings()]
        sql, names, defaults = self._compile(database.engine.dialect)
        arguments = [params[name] if name in params else defaults[name] for name in names]
        pool = database.read_pool
        retried = False
        with _faults_translated():
            while True:
                try:
                    connection = await pool.acquire(timeout=database.pool_wait_seconds)
                except TimeoutError:
                    raise ServiceBusy() from None
                try:
                    records = await connection.fetch(sql, *arguments)
                    break
                except _CONNECTION_LOST_ERRORS as exc:
                    # Never back into the pool: its protocol state may not have caught up yet.
                    # (The pool may already have detached a connection it saw close.)
                    with suppress(asyncpg.InterfaceError):
                        connection.terminate()
                    if retried:
                        raise
                    retried = True
                    logger.warning(
                        "Read pool: connection lost (%s); retrying the read once on a new one",
                        type(exc).__name__,
                    )
                finally:
                    await pool.release(connection)
        return [dict(record) for record in records]
