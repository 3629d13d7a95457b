"""SQS for tests (a pytest plugin, loaded by tests/conftest.py): a moto server per test worker,
fresh queues, AWS credentials moto accepts, and settings of an app that queues to them."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.config import Settings
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
