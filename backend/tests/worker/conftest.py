"""Fixtures for the worker tier: a moto SQS server per test worker, queues, the worker app."""

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.worker_app import create_worker_app
from tests.conftest import make_settings
from tests.support.moto_server import CREDENTIALS, MotoServer
from tests.support.sqs_server import REGION, QueuePair, create_queue_pair


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """A moto server process (SQS) owned by this test worker."""
    server = MotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioboto3 signs requests with the environment's credentials; moto accepts any."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDENTIALS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDENTIALS["aws_secret_access_key"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


@pytest.fixture
def queues(moto: MotoServer) -> QueuePair:
    """A fresh work queue (every task shares it) with a DLQ after 3 receives."""
    return create_queue_pair(moto.url)


def sqs_settings(
    tmp_path: Path, database_url: str, moto: MotoServer, queues: QueuePair, **overrides: Any
) -> Settings:
    """Settings of an app that queues to ``queues`` on the moto server."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "queue_backend": "sqs",
        "aws_endpoint_url": moto.url,
        "aws_region": REGION,
        "sqs_queue_resume_parse": queues.name,
        "sqs_queue_vector_index": queues.name,
        "sqs_queue_email": queues.name,
        "sqs_max_attempts": 2,
    }
    values.update(overrides)
    return make_settings(tmp_path, **values)


@pytest.fixture
def worker_settings(
    tmp_path: Path, database_url: str, moto: MotoServer, queues: QueuePair
) -> Settings:
    return sqs_settings(tmp_path, database_url, moto, queues)


@pytest.fixture
async def worker_app(worker_settings: Settings) -> AsyncIterator[FastAPI]:
    """The worker app with its lifespan running."""
    application = create_worker_app(worker_settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def worker_client(worker_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client connecting from 127.0.0.1 (as the local sqsd does)."""
    transport = httpx.ASGITransport(app=worker_app, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        yield http
