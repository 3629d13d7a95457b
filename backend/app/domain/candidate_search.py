"""Admin candidate search: a deterministic local ranker over summaries and skills."""

import re
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.domain import profiles

_TERM_RE = re.compile(r"[a-z0-9+#.]{2,40}")
MAX_TERMS = 10
# Candidates considered per query; ranking happens in Python on this bounded set.
PREFILTER_LIMIT = 500
SKILL_WEIGHT = 3.0
SUMMARY_WEIGHT = 1.0
SUMMARY_HITS_CAP = 3


def query_terms(query: str) -> list[str]:
    """Lower-cased, de-duplicated search terms in their original order."""
    terms: list[str] = []
    for term in _TERM_RE.findall(query.lower()):
        term = term.strip(".")
        if len(term) >= 2 and term not in terms:
            terms.append(term)
    return terms[:MAX_TERMS]


def score_candidate(terms: list[str], skills: list[str], summary: str | None) -> float:
    """Skill matches weigh most; summary mentions add a capped bonus."""
    lowered_skills = [skill.lower() for skill in skills]
    text = (summary or "").lower()
    score = 0.0
    for term in terms:
        if term in lowered_skills:
            score += SKILL_WEIGHT
        elif any(term in skill for skill in lowered_skills):
            score += SKILL_WEIGHT / 2
        score += SUMMARY_WEIGHT * min(text.count(term), SUMMARY_HITS_CAP)
    return score


async def search_candidates(
    connection: AsyncConnection, query: str, limit: int
) -> list[dict[str, Any]]:
    """Candidates matching any term, best first (ties by newest id), with their score."""
    terms = query_terms(query)
    if not terms:
        return []
    ranked = []
    for row in await profiles.candidates_mentioning(connection, terms, PREFILTER_LIMIT):
        score = score_candidate(terms, list(row["skills"] or []), row["summary"])
        if score > 0:
            ranked.append(row | {"score": score})
    ranked.sort(key=lambda item: (-item["score"], -item["id"]))
    return ranked[:limit]
