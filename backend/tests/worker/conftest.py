"""Fixtures for the worker tier: the worker app on the moto SQS server (see sqs_fixtures)."""

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.worker_app import create_worker_app
from tests.support.moto_server import MotoServer
from tests.support.sqs_fixtures import sqs_settings
from tests.support.sqs_server import QueuePair


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
