"""A fleet of OS processes, each with its own RedisService and breaker, driven over pipes.

Each worker calls the fake upstream through ``call_upstream`` (the adapters' path) and answers
commands: ``burst n`` (n concurrent calls), ``seq n`` (n calls one after another), ``spawn``
(start one call and return at once), ``view`` (the state this process sees, no I/O),
``refresh`` (read the shared state), ``pending`` (spawned calls still running), ``retry_after``
(seconds this process still fails fast, no I/O).
"""

import asyncio
import multiprocessing
import multiprocessing.connection
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from app.config import Settings
from app.services.circuit_breaker import BreakerConfig, CircuitBreaker, CircuitOpenError
from app.services.http_client import UpstreamRejected, UpstreamUnavailable, call_upstream
from app.services.redis import RedisService

BREAKER = "upstream"


async def outcome(call: Callable[[], Awaitable[Any]]) -> str:
    """How one call through a breaker ended: ok, open, unavailable or rejected."""
    try:
        await call()
    except CircuitOpenError:
        return "open"
    except UpstreamUnavailable:
        return "unavailable"
    except UpstreamRejected:
        return "rejected"
    return "ok"


async def _one_call(breaker: CircuitBreaker, client: httpx.AsyncClient, url: str) -> str:
    return await outcome(lambda: call_upstream(breaker, 30.0, lambda: client.get(url)))


async def _serve(
    conn: multiprocessing.connection.Connection,
    redis_url: str | None,
    upstream_url: str,
    config: dict[str, Any],
) -> None:
    redis = RedisService(Settings(redis_url=redis_url), client_name="cb-test-worker")
    await redis.start()
    breaker = CircuitBreaker(BREAKER, BreakerConfig(**config), redis)
    spawned: set[asyncio.Task[str]] = set()
    loop = asyncio.get_running_loop()
    url = f"{upstream_url}/echo"
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as client:
        conn.send("ready")
        while True:
            command, argument = await loop.run_in_executor(None, conn.recv)
            result: Any = None
            if command == "stop":
                break
            if command == "burst":
                outcomes = await asyncio.gather(
                    *(_one_call(breaker, client, url) for _ in range(argument))
                )
                result = dict(Counter(outcomes))
            elif command == "seq":
                counter: Counter[str] = Counter()
                for _ in range(argument):
                    counter[await _one_call(breaker, client, url)] += 1
                result = dict(counter)
            elif command == "spawn":
                task = loop.create_task(_one_call(breaker, client, url))
                spawned.add(task)
                task.add_done_callback(spawned.discard)
            elif command == "view":
                result = breaker.state.value
            elif command == "retry_after":
                result = breaker.describe()["retry_after"]
            elif command == "refresh":
                result = (await breaker.refresh()).value
            elif command == "pending":
                result = len(spawned)
            conn.send(result)
        for task in spawned:
            task.cancel()
        await breaker.close()
    await redis.close()
    conn.send("stopped")


def _worker_main(
    conn: multiprocessing.connection.Connection,
    redis_url: str | None,
    upstream_url: str,
    config: dict[str, Any],
) -> None:
    asyncio.run(_serve(conn, redis_url, upstream_url, config))


class Fleet:
    """``size`` worker processes sharing one breaker through ``redis_url``."""

    def __init__(
        self, size: int, redis_url: str | None, upstream_url: str, config: dict[str, Any]
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._conns: list[multiprocessing.connection.Connection] = []
        self._processes: list[Any] = []
        for _ in range(size):
            parent, child = context.Pipe()
            process = context.Process(
                target=_worker_main, args=(child, redis_url, upstream_url, config), daemon=True
            )
            process.start()
            self._conns.append(parent)
            self._processes.append(process)
        for conn in self._conns:
            if not conn.poll(60) or conn.recv() != "ready":
                raise RuntimeError("fleet worker did not start")

    def __len__(self) -> int:
        return len(self._conns)

    def all(self, command: str, argument: Any = None, timeout: float = 60.0) -> list[Any]:
        """Send the command to every worker at once; their answers in worker order."""
        for conn in self._conns:
            conn.send((command, argument))
        return [self._answer(conn, timeout) for conn in self._conns]

    def one(self, index: int, command: str, argument: Any = None, timeout: float = 60.0) -> Any:
        self._conns[index].send((command, argument))
        return self._answer(self._conns[index], timeout)

    @staticmethod
    def _answer(conn: multiprocessing.connection.Connection, timeout: float) -> Any:
        if not conn.poll(timeout):
            raise TimeoutError("fleet worker did not answer")
        return conn.recv()

    def stop(self) -> None:
        for conn in self._conns:
            try:
                conn.send(("stop", None))
                if conn.poll(10):
                    conn.recv()
            except (OSError, EOFError):
                pass
        for process in self._processes:
            process.join(10)
            if process.is_alive():
                process.kill()


def total(outcomes: list[dict[str, int]], key: str) -> int:
    """Sum one outcome over the workers' answers."""
    return sum(answer.get(key, 0) for answer in outcomes)
