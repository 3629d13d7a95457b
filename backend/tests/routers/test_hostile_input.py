"""Hostile input never reaches the database: NUL characters and out-of-range integers, on every
route family, are a 4xx in the shared error shape and write nothing (real Postgres)."""

from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.models.base import Base
from tests.support.factories import admin_token, auth, candidate_token, create_job, create_test

NUL = "\x00"
# Ids are BIGINT (1..2**63-1): 2**63 and 2**64 overflow asyncpg, 0 and -1 are no id at all.
BAD_IDS = (0, -1, 2**63, 2**64)
# Counts, pages and durations are 32-bit at most (and bounded far lower by their schemas).
BAD_COUNTS = (-1, 2**31, 2**63, 2**64)


@dataclass(frozen=True)
class Call:
    """One request: who sends it and what; `{id}` in the path or a body/query value is filled
    with the bad value."""

    role: str  # "anonymous", "candidate" or "admin"
    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None


def _answer(question_id: Any = 1, text: str = "B") -> dict[str, Any]:
    return {"question_id": question_id, "answer_text": text}


def _job(**fields: Any) -> dict[str, Any]:
    return {
        "title": "Engineer",
        "company": "Acme",
        "location": "Berlin",
        "job_type": "Full Time",
        "description": "Build things.",
        **fields,
    }


NUL_CALLS = {
    "jobs search query": Call("anonymous", "GET", "/api/jobs", params={"search": f"py{NUL}"}),
    "jobs type query": Call("anonymous", "GET", "/api/jobs", params={"job_type": NUL}),
    "jobs location query": Call("anonymous", "GET", "/api/jobs", params={"location": f"B{NUL}"}),
    "candidate search q": Call(
        "admin", "GET", "/api/admin/candidates/search", params={"q": f"python{NUL}"}
    ),
    "register body": Call(
        "anonymous",
        "POST",
        "/api/auth/register",
        json={"email": "n@example.com", "password": "Password123!", "full_name": f"A{NUL}"},
    ),
    "login body": Call(
        "anonymous",
        "POST",
        "/api/auth/login",
        json={"email": "n@example.com", "password": f"Pass{NUL}word"},
    ),
    "profile field": Call("candidate", "PATCH", "/api/profile", json={"summary": f"x{NUL}y"}),
    "profile nested list": Call(
        "candidate", "PATCH", "/api/profile", json={"skills": ["python", f"sql{NUL}"]}
    ),
    "answer text": Call("candidate", "POST", "/api/tests/1/answer", json=_answer(text=NUL)),
    "submit nested answer": Call(
        "candidate",
        "POST",
        "/api/tests/submit",
        json={"attempt_id": 1, "answers": [_answer(), _answer(2, f"B{NUL}")]},
    ),
    "admin job body": Call("admin", "POST", "/api/admin/jobs", json=_job(title=f"T{NUL}")),
    "admin job skills": Call("admin", "POST", "/api/admin/jobs", json=_job(skills=[NUL])),
    "admin job update": Call("admin", "PATCH", "/api/admin/jobs/1", json={"company": NUL}),
    "ai generate topic": Call(
        "admin", "POST", "/api/admin/ai-generate", json={"topic": f"python{NUL}"}
    ),
}

ID_CALLS = {
    "job path id": Call("anonymous", "GET", "/api/jobs/{id}"),
    "admin job update path id": Call(
        "admin", "PATCH", "/api/admin/jobs/{id}", json={"title": "New"}
    ),
    "admin job delete path id": Call("admin", "DELETE", "/api/admin/jobs/{id}"),
    "notification path id": Call("candidate", "POST", "/api/notifications/{id}/read"),
    "attempt path id": Call("candidate", "POST", "/api/tests/{id}/answer", json=_answer()),
    "start body test_id": Call("candidate", "POST", "/api/tests/start", json={"test_id": "{id}"}),
    "answer body question_id": Call(
        "candidate", "POST", "/api/tests/1/answer", json=_answer(question_id="{id}")
    ),
    "submit body attempt_id": Call(
        "candidate",
        "POST",
        "/api/tests/submit",
        json={"attempt_id": "{id}", "answers": [_answer()]},
    ),
    "submit nested question_id": Call(
        "candidate",
        "POST",
        "/api/tests/submit",
        json={"attempt_id": 1, "answers": [_answer(question_id="{id}")]},
    ),
    "complete body attempt_id": Call(
        "candidate", "POST", "/api/tests/complete", json={"attempt_id": "{id}"}
    ),
    "results query test_id": Call("admin", "GET", "/api/admin/results", params={"test_id": "{id}"}),
}

COUNT_CALLS = {
    "jobs page": Call("anonymous", "GET", "/api/jobs", params={"page": "{id}"}),
    "jobs page_size": Call("anonymous", "GET", "/api/jobs", params={"page_size": "{id}"}),
    "admin candidates page": Call("admin", "GET", "/api/admin/candidates", params={"page": "{id}"}),
    "admin jobs page_size": Call("admin", "GET", "/api/admin/jobs", params={"page_size": "{id}"}),
    "notifications limit": Call("candidate", "GET", "/api/notifications", params={"limit": "{id}"}),
    "candidate search limit": Call(
        "admin", "GET", "/api/admin/candidates/search", params={"q": "py", "limit": "{id}"}
    ),
    "profile experience_years": Call(
        "candidate", "PATCH", "/api/profile", json={"experience_years": "{id}"}
    ),
    "ai generate count": Call(
        "admin", "POST", "/api/admin/ai-generate", json={"topic": "python", "count": "{id}"}
    ),
    "ai generate duration": Call(
        "admin",
        "POST",
        "/api/admin/ai-generate",
        json={"topic": "python", "create_test": True, "title": "T", "duration_minutes": "{id}"},
    ),
}


def _fill(value: Any, bad: int) -> Any:
    if value == "{id}":
        return bad
    if isinstance(value, dict):
        return {key: _fill(item, bad) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, bad) for item in value]
    return value


async def row_counts(app: FastAPI) -> dict[str, int]:
    """Rows in every table (what "nothing written" is checked against)."""
    async with app.state.resources.database.sessionmaker() as session:
        return {
            table.name: int(await session.scalar(select(func.count()).select_from(table)) or 0)
            for table in Base.metadata.sorted_tables
        }


@pytest.fixture
async def tokens(app: FastAPI, client: httpx.AsyncClient) -> dict[str, dict[str, str]]:
    """A job and a test exist (ids 1 are real), a candidate and an admin are signed in."""
    await create_job(app)
    await create_test(app)
    return {
        "anonymous": {},
        "candidate": auth(await candidate_token(client)),
        "admin": auth(await admin_token(app, client)),
    }


async def _send(
    client: httpx.AsyncClient, call: Call, headers: dict[str, str], bad: int | None = None
) -> httpx.Response:
    path = call.path if bad is None else call.path.replace("{id}", str(bad))
    json = call.json if bad is None else _fill(call.json, bad)
    params = call.params if bad is None else _fill(call.params, bad)
    return await client.request(call.method, path, json=json, params=params, headers=headers)


def assert_refused(response: httpx.Response) -> None:
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    error = response.json()["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)


@pytest.mark.parametrize("name", sorted(NUL_CALLS))
async def test_nul_characters_are_refused_before_the_database(
    name: str, app: FastAPI, client: httpx.AsyncClient, tokens: dict[str, dict[str, str]]
) -> None:
    call = NUL_CALLS[name]
    before = await row_counts(app)
    response = await _send(client, call, tokens[call.role])
    assert response.status_code == 422, response.text
    assert_refused(response)
    assert "nul_character" in response.text
    assert await row_counts(app) == before


@pytest.mark.parametrize(
    ("name", "call", "bad_values"),
    [(name, call, BAD_IDS) for name, call in sorted(ID_CALLS.items())]
    + [(name, call, BAD_COUNTS) for name, call in sorted(COUNT_CALLS.items())],
    ids=lambda value: value if isinstance(value, str) else "",
)
async def test_integers_outside_the_column_range_are_refused(
    name: str,
    call: Call,
    bad_values: tuple[int, ...],
    app: FastAPI,
    client: httpx.AsyncClient,
    tokens: dict[str, dict[str, str]],
) -> None:
    before = await row_counts(app)
    for bad in bad_values:
        response = await _send(client, call, tokens[call.role], bad)
        assert response.status_code == 422, (bad, response.text)
        assert_refused(response)
    assert await row_counts(app) == before


async def test_largest_bigint_id_is_a_plain_not_found(
    client: httpx.AsyncClient, tokens: dict[str, dict[str, str]]
) -> None:
    """The edge of the range reaches the database and is simply absent."""
    response = await client.get(f"/api/jobs/{2**63 - 1}")
    assert response.status_code == 404
    assert_refused(response)


@pytest.mark.parametrize(
    ("filename", "content_type"),
    [(f"cv{NUL}.txt", "text/plain"), ("cv.txt", f"text/plain{NUL}")],
    ids=["file name", "content type"],
)
async def test_multipart_file_name_or_type_with_nul_is_refused(
    filename: str,
    content_type: str,
    app: FastAPI,
    client: httpx.AsyncClient,
    tokens: dict[str, dict[str, str]],
) -> None:
    before = await row_counts(app)
    # By hand: httpx would percent-encode the NUL in a file name.
    boundary = "hostile-boundary"
    body = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
        "Jordan Rivers\nPython developer\n\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    headers = {
        **tokens["candidate"],
        "Content-Type": f"multipart/form-data; boundary={boundary}",
    }
    response = await client.post("/api/profile/resume", headers=headers, content=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "nul_character"
    assert await row_counts(app) == before
    status = await client.get("/api/profile/resume-status", headers=tokens["candidate"])
    assert status.json()["status"] == "none"
