"""S3Storage (aioboto3) against a moto S3 server process, behind the s3 breaker."""

from collections.abc import AsyncIterator, Iterator

import boto3
import httpx
import pytest
from pydantic import SecretStr

from app.config import Settings
from app.services.circuit_breaker import CircuitOpenError, State, create_breakers
from app.services.http_client import UpstreamRejected, UpstreamUnavailable
from app.services.storage import S3Storage, StorageNotFound, close_storage, create_storage
from tests.support.moto_server import CREDENTIALS, MotoServer

BUCKET = "resumes"


@pytest.fixture(scope="session")
def moto_session() -> Iterator[MotoServer]:
    server = MotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def moto(moto_session: MotoServer) -> MotoServer:
    """An empty moto with the bucket created."""
    moto_session.reset()
    boto3.client(
        "s3", endpoint_url=moto_session.url, region_name="us-east-1", **CREDENTIALS
    ).create_bucket(Bucket=BUCKET)
    return moto_session


def s3_settings(endpoint: str, bucket: str = BUCKET) -> Settings:
    return Settings(
        storage_backend="s3",
        s3_bucket=bucket,
        s3_endpoint_url=endpoint,
        s3_access_key_id=SecretStr(CREDENTIALS["aws_access_key_id"]),
        s3_secret_access_key=SecretStr(CREDENTIALS["aws_secret_access_key"]),
        s3_timeout_seconds=2.0,
    )


@pytest.fixture
async def storage(moto: MotoServer) -> AsyncIterator[S3Storage]:
    settings = s3_settings(moto.url)
    breakers = create_breakers(settings, None)
    async with httpx.AsyncClient() as client:
        store = create_storage(settings, breakers, client)
        assert isinstance(store, S3Storage)
        yield store
        await close_storage(store)
    await breakers.close()


async def test_put_get_delete(storage: S3Storage, moto: MotoServer) -> None:
    await storage.put("resumes/7/cv.pdf", b"%PDF-1.7 bytes", "application/pdf")

    assert await storage.get("resumes/7/cv.pdf") == b"%PDF-1.7 bytes"
    head = boto3.client(
        "s3", endpoint_url=moto.url, region_name="us-east-1", **CREDENTIALS
    ).head_object(Bucket=BUCKET, Key="resumes/7/cv.pdf")
    assert head["ContentType"] == "application/pdf"

    await storage.delete("resumes/7/cv.pdf")
    with pytest.raises(StorageNotFound):
        await storage.get("resumes/7/cv.pdf")


async def test_bad_keys_never_reach_s3(storage: S3Storage) -> None:
    with pytest.raises(ValueError):
        await storage.put("../etc/passwd", b"x", "text/plain")


async def test_missing_bucket_is_a_client_error_not_an_outage(moto: MotoServer) -> None:
    settings = s3_settings(moto.url, bucket="no-such-bucket")
    breakers = create_breakers(settings, None)
    store = S3Storage(settings, breakers["s3"])
    try:
        for _ in range(10):
            with pytest.raises(UpstreamRejected):
                await store.put("a.txt", b"x", "text/plain")
        assert await breakers["s3"].refresh() is State.CLOSED
    finally:
        await store.close()
        await breakers.close()


async def test_s3_outage_opens_the_storage_breaker() -> None:
    server = MotoServer()
    server.start()
    settings = s3_settings(server.url)
    breakers = create_breakers(settings, None)
    store = S3Storage(settings, breakers["s3"])
    try:
        boto3.client(
            "s3", endpoint_url=server.url, region_name="us-east-1", **CREDENTIALS
        ).create_bucket(Bucket=BUCKET)
        await store.put("a.txt", b"x", "text/plain")
        server.stop()

        with pytest.raises(CircuitOpenError) as error:
            for _ in range(20):
                try:
                    await store.get("a.txt")
                except UpstreamUnavailable:
                    continue
        assert error.value.name == "s3"
    finally:
        server.stop()
        await store.close()
        await breakers.close()
