"""LocalAI's determinism, and GeminiAI against the fake Gemini server process."""

from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

from app.config import Settings
from app.errors import InvalidInput
from app.services.ai import GeminiAI, LocalAI, create_ai
from app.services.circuit_breaker import CircuitOpenError, create_breakers
from app.services.http_client import UpstreamRejected, UpstreamUnavailable
from tests.support.fake_upstream import FakeUpstream


async def test_local_questions_are_deterministic_and_answerable() -> None:
    first = await LocalAI().generate_questions("Python", 5, "medium")
    second = await LocalAI().generate_questions("Python", 5, "medium")
    other = await LocalAI().generate_questions("Python", 5, "hard")

    assert first == second
    assert first != other
    assert len(first) == 5
    assert len({question.text for question in first}) == 5
    for question in first:
        assert question.correct_answer in question.options
        assert len(set(question.options)) == len(question.options) == 4
        assert question.points == 2


async def test_local_rejects_bad_requests() -> None:
    with pytest.raises(InvalidInput):
        await LocalAI().generate_questions("   ", 3, "easy")
    with pytest.raises(InvalidInput):
        await LocalAI().generate_questions("SQL", 0, "easy")


async def test_local_summary_is_deterministic() -> None:
    resume = (
        "Jane Doe is a backend engineer with eight years building Python services. "
        "She led a Kubernetes migration. Python, PostgreSQL, Kubernetes, Redis and Python again."
    )
    summary = await LocalAI().summarize_resume(resume)

    assert summary == await LocalAI().summarize_resume(resume)
    assert summary.startswith("Jane Doe is a backend engineer")
    assert "python" in summary.split("Key terms:")[1]
    assert await LocalAI().summarize_resume("  ") == ""


@pytest.fixture
async def gemini(upstream: FakeUpstream) -> AsyncIterator[GeminiAI]:
    settings = Settings(
        ai_backend="gemini",
        gemini_api_key=SecretStr(upstream.api_key),
        gemini_base_url=upstream.url,
        gemini_timeout_seconds=0.5,
    )
    breakers = create_breakers(settings, None)
    async with httpx.AsyncClient() as client:
        ai = create_ai(settings, client, breakers)
        assert isinstance(ai, GeminiAI)
        yield ai
    await breakers.close()


async def test_gemini_generates_validated_questions(
    gemini: GeminiAI, upstream: FakeUpstream
) -> None:
    questions = await gemini.generate_questions("Rust ownership", 3, "hard")

    assert [question.text for question in questions] == [
        f"hard question {number} about Rust ownership?" for number in (1, 2, 3)
    ]
    assert all(question.correct_answer in question.options for question in questions)
    assert all(question.points == 3 for question in questions)
    assert upstream.calls("/v1beta/models/gemini-2.5-flash:generateContent") == 1


async def test_gemini_summarizes(gemini: GeminiAI) -> None:
    summary = await gemini.summarize_resume("Senior data engineer. Spark, Airflow, dbt.")

    assert summary == "Summary: Senior data engineer. Spark, Airflow, dbt."


async def test_gemini_wrong_key_is_rejected(upstream: FakeUpstream) -> None:
    settings = Settings(
        ai_backend="gemini", gemini_api_key=SecretStr("wrong"), gemini_base_url=upstream.url
    )
    async with httpx.AsyncClient() as client:
        ai = GeminiAI(settings, client, create_breakers(settings, None)["gemini"])
        with pytest.raises(UpstreamRejected):
            await ai.summarize_resume("text")


async def test_gemini_outage_opens_the_gemini_breaker(
    gemini: GeminiAI, upstream: FakeUpstream
) -> None:
    upstream.set_mode("503")
    # Failures are published in the background: the breaker fails fast right after.
    with pytest.raises(CircuitOpenError) as error:
        for _ in range(50):
            try:
                await gemini.summarize_resume("text")
            except UpstreamUnavailable:
                continue
    assert error.value.name == "gemini"
    assert upstream.calls() == 5  # the failure threshold


async def test_gemini_timeouts_and_4xx(gemini: GeminiAI, upstream: FakeUpstream) -> None:
    upstream.set_mode("hang")
    with pytest.raises(UpstreamUnavailable):
        await gemini.summarize_resume("text")
    upstream.set_mode("4xx", status=400)
    for _ in range(10):
        with pytest.raises(UpstreamRejected):
            await gemini.generate_questions("Go", 2, "easy")
    upstream.set_mode("healthy")
    assert len(await gemini.generate_questions("Go", 2, "easy")) == 2
