"""AI features: test-question generation and resume summaries.

``LocalAI`` is the deterministic embedded default (works offline, same input -> same output);
``GeminiAI`` calls Gemini's REST ``generateContent`` endpoint through the ``gemini`` breaker.
"""

import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx
import orjson

from app.config import Settings
from app.errors import InvalidInput
from app.services.circuit_breaker import BreakerRegistry, CircuitBreaker
from app.services.http_client import UpstreamRejected, call_upstream

Difficulty = Literal["easy", "medium", "hard"]

MAX_QUESTIONS = 50
MAX_SUMMARY_CHARS = 600
_POINTS: dict[str, int] = {"easy": 1, "medium": 2, "hard": 3}
_WORD_RE = re.compile(r"[A-Za-z][A-Za-z+#.\-]{2,}")
_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+")
_STOPWORDS = frozenset(
    [
        "the",
        "and",
        "for",
        "with",
        "that",
        "this",
        "from",
        "have",
        "has",
        "was",
        "were",
        "are",
        "you",
        "your",
        "our",
        "their",
        "they",
        "them",
        "his",
        "her",
        "into",
        "over",
        "under",
        "about",
        "also",
        "more",
        "most",
        "such",
        "than",
        "then",
        "there",
        "these",
        "those",
        "which",
        "while",
        "who",
        "whom",
        "will",
        "would",
        "can",
        "could",
        "should",
        "may",
        "might",
        "must",
        "not",
        "but",
        "all",
        "any",
        "each",
        "per",
        "via",
        "using",
        "used",
        "use",
        "years",
        "year",
        "experience",
        "work",
        "worked",
        "working",
        "team",
        "responsible",
    ]
)


@dataclass(frozen=True)
class GeneratedQuestion:
    """A multiple-choice question; ``correct_answer`` is one of ``options``."""

    text: str
    options: list[str]
    correct_answer: str
    points: int = 1


class AIService(Protocol):
    """What the app needs from a language model."""

    async def generate_questions(
        self, topic: str, count: int, difficulty: Difficulty
    ) -> list[GeneratedQuestion]: ...

    async def summarize_resume(self, text: str) -> str: ...


def _check_request(topic: str, count: int) -> str:
    topic = " ".join(topic.split())
    if not topic:
        raise InvalidInput("The topic must not be empty.")
    if not 1 <= count <= MAX_QUESTIONS:
        raise InvalidInput(f"The number of questions must be between 1 and {MAX_QUESTIONS}.")
    return topic


class LocalAI:
    """Deterministic stand-in for a model: questions and summaries derived from the input alone."""

    async def generate_questions(
        self, topic: str, count: int, difficulty: Difficulty
    ) -> list[GeneratedQuestion]:
        """``count`` distinct questions about ``topic``; the correct option is picked by a hash."""
        topic = _check_request(topic, count)
        questions = []
        for number in range(1, count + 1):
            digest = hashlib.sha256(f"{topic}|{difficulty}|{number}".encode()).digest()
            options = [
                f"{topic}: statement {number}.{letter} ({digest[index]:02x})"
                for index, letter in enumerate("ABCD")
            ]
            questions.append(
                GeneratedQuestion(
                    text=f"[{difficulty}] Question {number} on {topic}: which one is correct?",
                    options=options,
                    correct_answer=options[digest[4] % len(options)],
                    points=_POINTS[difficulty],
                )
            )
        return questions

    async def summarize_resume(self, text: str) -> str:
        """The opening sentences plus the most frequent terms (an extractive summary)."""
        clean = " ".join(text.split())
        if not clean:
            return ""
        opening = ""
        for sentence in _SENTENCE_RE.split(clean):
            if len(opening) + len(sentence) + 1 > MAX_SUMMARY_CHARS // 2:
                break
            opening = f"{opening} {sentence}".strip()
        opening = opening or clean[: MAX_SUMMARY_CHARS // 2]
        words = Counter(
            word.lower().strip(".-")
            for word in _WORD_RE.findall(clean)
            if word.lower() not in _STOPWORDS
        )
        # Sort by count, then alphabetically, so ties never depend on dict order.
        terms = [word for word, _ in sorted(words.items(), key=lambda item: (-item[1], item[0]))]
        summary = f"{opening} Key terms: {', '.join(terms[:10])}." if terms else opening
        return summary[:MAX_SUMMARY_CHARS]


_QUESTIONS_SCHEMA: dict[str, Any] = {
    "type": "ARRAY",
    "items": {
        "type": "OBJECT",
        "properties": {
            "text": {"type": "STRING"},
            "options": {"type": "ARRAY", "items": {"type": "STRING"}},
            "correct_answer": {"type": "STRING"},
        },
        "required": ["text", "options", "correct_answer"],
    },
}


class GeminiAI:
    """Gemini over HTTPS (``POST {base}/v1beta/models/{model}:generateContent``)."""

    def __init__(
        self, settings: Settings, client: httpx.AsyncClient, breaker: CircuitBreaker
    ) -> None:
        if settings.gemini_api_key is None:
            raise ValueError("GeminiAI needs GEMINI_API_KEY")
        self._client = client
        self._breaker = breaker
        self._timeout = settings.gemini_timeout_seconds
        self._url = (
            f"{settings.gemini_base_url.rstrip('/')}/v1beta/models/"
            f"{settings.gemini_model}:generateContent"
        )
        self._headers = {"x-goog-api-key": settings.gemini_api_key.get_secret_value()}

    async def generate_questions(
        self, topic: str, count: int, difficulty: Difficulty
    ) -> list[GeneratedQuestion]:
        """Ask for ``count`` questions as JSON (response schema enforced), then validate them."""
        topic = _check_request(topic, count)
        prompt = (
            f"Write {count} {difficulty} multiple-choice questions for a hiring test about "
            f"{topic}. Each has 4 distinct options and exactly one correct answer, which must be "
            "copied verbatim from the options."
        )
        text = await self._generate(prompt, _QUESTIONS_SCHEMA)
        try:
            items = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise UpstreamRejected(service=self._breaker.name) from exc
        questions = [
            question
            for item in (items if isinstance(items, list) else [])
            if (question := _question(item, _POINTS[difficulty])) is not None
        ]
        if not questions:
            raise UpstreamRejected(service=self._breaker.name)
        return questions[:count]

    async def summarize_resume(self, text: str) -> str:
        """A short professional summary of the resume text."""
        clean = " ".join(text.split())
        if not clean:
            return ""
        prompt = (
            "Summarize this resume for a recruiter in at most 80 words: role, seniority, "
            f"main skills. Plain text only.\n\n{clean[:20_000]}"
        )
        return (await self._generate(prompt, None)).strip()[:MAX_SUMMARY_CHARS]

    async def _generate(self, prompt: str, schema: dict[str, Any] | None) -> str:
        config: dict[str, Any] = {"temperature": 0.2}
        if schema is not None:
            config |= {"responseMimeType": "application/json", "responseSchema": schema}
        body = {
            "contents": [{"role": "user", "parts": [{"text": prompt}]}],
            "generationConfig": config,
        }
        response = await call_upstream(
            self._breaker,
            self._timeout,
            lambda: self._client.post(
                self._url, json=body, headers=self._headers, timeout=self._timeout
            ),
        )
        try:
            parts = response.json()["candidates"][0]["content"]["parts"]
            return "".join(str(part.get("text", "")) for part in parts)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            # No candidates (e.g. a blocked prompt) or an unexpected shape.
            raise UpstreamRejected(service=self._breaker.name) from exc


def _question(item: Any, points: int) -> GeneratedQuestion | None:
    """A validated question from the model's JSON, or None when it is unusable."""
    if not isinstance(item, dict):
        return None
    text, options, answer = item.get("text"), item.get("options"), item.get("correct_answer")
    if not isinstance(text, str) or not text.strip() or not isinstance(options, list):
        return None
    options = [option.strip() for option in options if isinstance(option, str) and option.strip()]
    if len(options) < 2 or len(set(options)) != len(options) or not isinstance(answer, str):
        return None
    if answer.strip() not in options:
        return None
    return GeneratedQuestion(text.strip(), options, answer.strip(), points)


def create_ai(
    settings: Settings, client: httpx.AsyncClient, breakers: BreakerRegistry
) -> AIService:
    """The AI backend chosen by settings (AI_BACKEND)."""
    if settings.ai_backend == "gemini":
        return GeminiAI(settings, client, breakers.get("gemini"))
    return LocalAI()
