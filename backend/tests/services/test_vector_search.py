"""The local vector index and the Pinecone client (against the fake Pinecone server process)."""

from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

from app.config import Settings
from app.services.circuit_breaker import CircuitOpenError, create_breakers
from app.services.http_client import UpstreamUnavailable
from app.services.vector_search import (
    LocalVectorIndex,
    PineconeIndex,
    VectorIndex,
    create_vector_index,
    embed,
)
from tests.support.fake_upstream import FakeUpstream

PROFILES = {
    1: "Python backend engineer: FastAPI, PostgreSQL, Redis, asyncio",
    2: "Frontend developer: React, TypeScript, CSS animations",
    3: "Data scientist: Python, pandas, machine learning, statistics",
}


def test_embedding_is_deterministic_unit_length() -> None:
    vector = embed("Python FastAPI", 64)
    assert vector == embed("python  fastapi", 64)
    assert abs(sum(value * value for value in vector) - 1.0) < 1e-9
    assert any(embed("", 64))  # never all zeros


async def fill(index: VectorIndex) -> None:
    for candidate_id, text in PROFILES.items():
        await index.upsert_candidate(candidate_id, text, {"skills": text.split(":")[1].split(",")})


async def check_ranking(index: VectorIndex) -> None:
    await fill(index)
    results = await index.query("React TypeScript frontend", 2)
    assert results[0][0] == 2
    assert len(results) == 2
    assert results[0][1] > results[1][1]
    python = [candidate_id for candidate_id, _ in await index.query("python asyncio redis", 3)]
    assert python[0] == 1

    await index.delete_candidate(2)
    assert 2 not in [candidate_id for candidate_id, _ in await index.query("React", 3)]


async def test_local_index_ranks_by_similarity() -> None:
    await check_ranking(LocalVectorIndex(256))
    assert await LocalVectorIndex(256).query("anything", 5) == []


@pytest.fixture
async def pinecone(upstream: FakeUpstream) -> AsyncIterator[PineconeIndex]:
    settings = Settings(
        vector_backend="pinecone",
        pinecone_api_key=SecretStr(upstream.api_key),
        pinecone_index_host=upstream.url,
        pinecone_timeout_seconds=0.5,
        vector_dimension=256,
    )
    breakers = create_breakers(settings, None)
    async with httpx.AsyncClient() as client:
        index = create_vector_index(settings, client, breakers)
        assert isinstance(index, PineconeIndex)
        yield index
    await breakers.close()


async def test_pinecone_upsert_query_delete(
    pinecone: PineconeIndex, upstream: FakeUpstream
) -> None:
    await check_ranking(pinecone)

    assert upstream.calls("/vectors/upsert") == 3
    assert upstream.calls("/vectors/delete") == 1
    assert upstream.calls("/query") == 3


async def test_pinecone_agrees_with_the_local_index(pinecone: PineconeIndex) -> None:
    local = LocalVectorIndex(256)
    await fill(local)
    await fill(pinecone)
    for query in ("python", "machine learning statistics", "css"):
        remote = await pinecone.query(query, 3)
        assert [i for i, _ in remote] == [i for i, _ in await local.query(query, 3)]


async def test_pinecone_outage_opens_the_breaker(
    pinecone: PineconeIndex, upstream: FakeUpstream
) -> None:
    upstream.set_mode("hang")
    with pytest.raises(UpstreamUnavailable):
        await pinecone.query("python", 3)
    upstream.set_mode("503")
    with pytest.raises(CircuitOpenError) as error:
        for _ in range(50):
            try:
                await pinecone.upsert_candidate(9, "text", {})
            except UpstreamUnavailable:
                continue
    assert error.value.name == "pinecone"
    assert upstream.calls() == 5  # one timeout and four 503s: the failure threshold
