"""CloudinaryStorage against the fake Cloudinary API (a server process), behind its breaker."""

from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

from app.config import Settings
from app.services.circuit_breaker import CircuitOpenError, create_breakers
from app.services.http_client import UpstreamRejected, UpstreamUnavailable
from app.services.storage import CloudinaryStorage, StorageNotFound, create_storage
from tests.support.fake_upstream import FakeUpstream


def cloudinary_settings(upstream: FakeUpstream, secret: str | None = None) -> Settings:
    return Settings(
        storage_backend="cloudinary",
        cloudinary_cloud_name="demo",
        cloudinary_api_key=upstream.api_key,
        cloudinary_api_secret=SecretStr(secret or upstream.api_key),
        cloudinary_base_url=upstream.url,
        cloudinary_timeout_seconds=1.0,
    )


@pytest.fixture
async def storage(upstream: FakeUpstream) -> AsyncIterator[CloudinaryStorage]:
    settings = cloudinary_settings(upstream)
    breakers = create_breakers(settings, None)
    async with httpx.AsyncClient() as client:
        store = create_storage(settings, breakers, client)
        assert isinstance(store, CloudinaryStorage)
        yield store
    await breakers.close()


async def test_put_get_delete(storage: CloudinaryStorage, upstream: FakeUpstream) -> None:
    await storage.put("resumes/3/cv.pdf", b"%PDF resume", "application/pdf")

    assert await storage.get("resumes/3/cv.pdf") == b"%PDF resume"
    assert upstream.calls("/v1_1/demo/raw/upload") == 1

    await storage.delete("resumes/3/cv.pdf")
    with pytest.raises(StorageNotFound):
        await storage.get("resumes/3/cv.pdf")


async def test_bad_signature_is_rejected_without_opening(upstream: FakeUpstream) -> None:
    settings = cloudinary_settings(upstream, secret="not-the-secret")
    breakers = create_breakers(settings, None)
    async with httpx.AsyncClient() as client:
        store = CloudinaryStorage(settings, client, breakers["cloudinary"])
        for _ in range(10):
            with pytest.raises(UpstreamRejected):
                await store.put("a.txt", b"x", "text/plain")
    assert breakers.states()["cloudinary"]["state"] == "closed"
    await breakers.close()


async def test_outage_opens_the_cloudinary_breaker(
    storage: CloudinaryStorage, upstream: FakeUpstream
) -> None:
    upstream.set_mode("503")
    with pytest.raises(CircuitOpenError) as error:
        for _ in range(50):
            try:
                await storage.put("a.txt", b"x", "text/plain")
            except UpstreamUnavailable:
                continue
    assert error.value.name == "cloudinary"
    assert upstream.calls() == 5  # the failure threshold
