"""Fixtures for the operations tests: apps built with specific settings, clients from chosen
addresses, and private dependencies that can be taken down."""

import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from tests.conftest import make_settings
from tests.support.redis_server import RedisServer

AppFactory = Callable[..., AbstractAsyncContextManager[FastAPI]]


@pytest.fixture
def app_with(tmp_path: Path, database_url: str) -> AppFactory:
    """Build the web app with setting overrides (Postgres by default) and run its lifespan."""

    @asynccontextmanager
    async def build(**overrides: Any) -> AsyncIterator[FastAPI]:
        values: dict[str, Any] = {"database_url": database_url, **overrides}
        settings: Settings = make_settings(tmp_path, **values)
        application = create_app(settings)
        async with application.router.lifespan_context(application):
            yield application

    return build


def client_for(app: FastAPI, client_address: str = "127.0.0.1", **kwargs: Any) -> httpx.AsyncClient:
    """An in-process client whose requests come from `client_address`."""
    transport = httpx.ASGITransport(app=app, client=(client_address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", **kwargs)


@pytest.fixture
def stopped_redis() -> Iterator[RedisServer]:
    """A private redis-server that was started and then stopped: its port refuses connections."""
    server = RedisServer()
    server.start()
    server.stop()
    yield server
    server.cleanup()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections (kernel backlog) but never answers: a hung dependency."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port: int = listener.getsockname()[1]
        yield port
