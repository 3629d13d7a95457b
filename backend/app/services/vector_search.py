"""Candidate vector search: a local in-process index by default, Pinecone over HTTPS in production.

Both embed text with the same deterministic hashing-trick embedding (``embed``), so the two
backends rank alike and no model download is needed. Pinecone's index must use that dimension
(VECTOR_DIMENSION) and the cosine metric.
"""

import asyncio
import hashlib
import itertools
import math
import re
from typing import Any, Protocol

import httpx

from app.config import Settings
from app.services.circuit_breaker import BreakerRegistry, CircuitBreaker
from app.services.http_client import UpstreamRejected, call_upstream

Metadata = dict[str, str | int | float | list[str]]

PINECONE_API_VERSION = "2025-04"
_TOKEN_RE = re.compile(r"[a-z0-9][a-z0-9+#.]*")


def embed(text: str, dimension: int) -> list[float]:
    """A unit vector for ``text``: hashed unigrams and bigrams with signed counts.

    Deterministic across processes and versions (blake2b, not Python's salted ``hash``). A constant
    feature keeps the vector non-zero for empty text (Pinecone rejects all-zero vectors).
    """
    tokens = [token.rstrip(".") for token in _TOKEN_RE.findall(text.lower())]
    features = ["\x00bias", *tokens, *(f"{a} {b}" for a, b in itertools.pairwise(tokens))]
    vector = [0.0] * dimension
    for feature in features:
        digest = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "big")
        weight = 0.25 if feature == "\x00bias" else 1.0
        vector[digest % dimension] += weight if digest >> 63 else -weight
    norm = math.sqrt(sum(value * value for value in vector)) or 1.0
    return [value / norm for value in vector]


class VectorIndex(Protocol):
    """Candidate vectors keyed by candidate id."""

    async def upsert_candidate(self, candidate_id: int, text: str, metadata: Metadata) -> None: ...

    async def query(self, text: str, top_k: int) -> list[tuple[int, float]]: ...

    async def delete_candidate(self, candidate_id: int) -> None: ...


def _score(probe: list[float], vectors: list[tuple[int, list[float]]]) -> list[tuple[int, float]]:
    # Vectors are unit length: the dot product is the cosine similarity.
    return [
        (candidate_id, sum(a * b for a, b in zip(probe, vector, strict=True)))
        for candidate_id, vector in vectors
    ]


class LocalVectorIndex:
    """Exact cosine search in process memory (one process's view; rebuilt by re-indexing)."""

    def __init__(self, dimension: int) -> None:
        self._dimension = dimension
        self._vectors: dict[int, list[float]] = {}
        self._metadata: dict[int, Metadata] = {}

    async def upsert_candidate(self, candidate_id: int, text: str, metadata: Metadata) -> None:
        """Store (or replace) the candidate's vector."""
        self._vectors[candidate_id] = embed(text, self._dimension)
        self._metadata[candidate_id] = dict(metadata)

    async def query(self, text: str, top_k: int) -> list[tuple[int, float]]:
        """The ``top_k`` most similar candidates, best first (ties by id)."""
        if top_k <= 0 or not self._vectors:
            return []
        probe = embed(text, self._dimension)
        # A snapshot: upserts may run while a large index is scored in a thread.
        vectors = list(self._vectors.items())
        if len(vectors) > 5000:
            # Scoring is CPU-bound: keep the event loop free for large indexes.
            scores = await asyncio.to_thread(_score, probe, vectors)
        else:
            scores = _score(probe, vectors)
        scores.sort(key=lambda item: (-item[1], item[0]))
        return scores[:top_k]

    async def delete_candidate(self, candidate_id: int) -> None:
        """Forget the candidate (no error if unknown)."""
        self._vectors.pop(candidate_id, None)
        self._metadata.pop(candidate_id, None)


class PineconeIndex:
    """Pinecone's data-plane REST API on the index host.

    Endpoints: POST /vectors/upsert, /query and /vectors/delete, with the Api-Key header.
    """

    def __init__(
        self, settings: Settings, client: httpx.AsyncClient, breaker: CircuitBreaker
    ) -> None:
        if settings.pinecone_api_key is None or not settings.pinecone_index_host:
            raise ValueError("PineconeIndex needs PINECONE_API_KEY and PINECONE_INDEX_HOST")
        host = settings.pinecone_index_host.rstrip("/")
        self._base = host if "://" in host else f"https://{host}"
        self._client = client
        self._breaker = breaker
        self._timeout = settings.pinecone_timeout_seconds
        self._dimension = settings.vector_dimension
        self._namespace = settings.pinecone_namespace
        self._headers = {
            "Api-Key": settings.pinecone_api_key.get_secret_value(),
            "X-Pinecone-API-Version": PINECONE_API_VERSION,
        }

    async def upsert_candidate(self, candidate_id: int, text: str, metadata: Metadata) -> None:
        """Upsert the candidate's vector with its metadata."""
        vector = {
            "id": str(candidate_id),
            "values": embed(text, self._dimension),
            "metadata": metadata,
        }
        await self._post("/vectors/upsert", {"vectors": [vector], "namespace": self._namespace})

    async def query(self, text: str, top_k: int) -> list[tuple[int, float]]:
        """The ``top_k`` nearest candidates by cosine similarity, best first."""
        if top_k <= 0:
            return []
        body = {
            "vector": embed(text, self._dimension),
            "topK": top_k,
            "namespace": self._namespace,
            "includeValues": False,
            "includeMetadata": False,
        }
        data = await self._post("/query", body)
        try:
            return [(int(match["id"]), float(match["score"])) for match in data.get("matches", [])]
        except (KeyError, TypeError, ValueError) as exc:
            raise UpstreamRejected(service=self._breaker.name) from exc

    async def delete_candidate(self, candidate_id: int) -> None:
        """Delete the candidate's vector (Pinecone ignores unknown ids)."""
        await self._post(
            "/vectors/delete", {"ids": [str(candidate_id)], "namespace": self._namespace}
        )

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await call_upstream(
            self._breaker,
            self._timeout,
            lambda: self._client.post(
                f"{self._base}{path}", json=body, headers=self._headers, timeout=self._timeout
            ),
        )
        try:
            data = response.json()
        except ValueError as exc:
            raise UpstreamRejected(service=self._breaker.name) from exc
        if not isinstance(data, dict):
            raise UpstreamRejected(service=self._breaker.name)
        return data


def create_vector_index(
    settings: Settings, client: httpx.AsyncClient, breakers: BreakerRegistry
) -> VectorIndex:
    """The vector backend chosen by settings (VECTOR_BACKEND)."""
    if settings.vector_backend == "pinecone":
        return PineconeIndex(settings, client, breakers.get("pinecone"))
    return LocalVectorIndex(settings.vector_dimension)
