"""Demo data and the load-test accounts: `python -m devtools.seed [--candidates N] [--jobs N]`.

Idempotent: running it again adds only what is missing.
"""

import argparse
import asyncio
import random
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings, get_settings
from app.database import Database
from app.domain.assessments import create_test
from app.domain.caching import ASSESSMENTS_TAG, CANDIDATES_TAG, JOBS_TAG
from app.models import CandidateProfile, Job, User
from app.models.assessment import Assessment
from app.models.job import JOB_TYPES
from app.security import password_hasher
from app.services.cache import Cache, invalidate_on_commit, invalidation_scope
from app.services.redis import RedisService

# The demo tests are retaken again and again (demos, the locust file): a lenient attempt policy,
# set on them explicitly; real tests keep the strict ASSESSMENT_* defaults.
DEMO_POLICY: dict[str, int] = {"max_attempts": 100, "retake_cooldown_minutes": 0}

ADMIN_EMAIL = "loadtest_admin@test.com"
ADMIN_PASSWORD = "AdminTest123!"
CANDIDATE_PASSWORD = "LoadTest123!"

_TITLES = (
    "Python Developer",
    "Backend Engineer",
    "Frontend Developer",
    "Data Engineer",
    "DevOps Engineer",
    "Full Stack Developer",
    "QA Engineer",
    "Data Analyst",
    "Machine Learning Engineer",
    "Mobile Developer",
)
_COMPANIES = ("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark Industries", "Wayne Tech")
_LOCATIONS = ("Berlin", "London", "New York", "Remote", "Lisbon", "Toronto", "Bangalore")
_SKILLS = (
    "python",
    "fastapi",
    "sql",
    "postgresql",
    "aws",
    "docker",
    "react",
    "typescript",
    "kubernetes",
    "java",
    "spark",
    "pandas",
    "redis",
    "go",
)
_TESTS: tuple[tuple[str, list[dict[str, Any]]], ...] = (
    (
        "Python fundamentals",
        [
            {
                "text": "Which keyword defines a function?",
                "options": ["func", "def", "lambda"],
                "correct_answer": "def",
                "points": 1,
            },
            {
                "text": "What does len([1, 2, 3]) return?",
                "options": ["2", "3", "4"],
                "correct_answer": "3",
                "points": 1,
            },
            {
                "text": "Which type is immutable?",
                "options": ["list", "dict", "tuple"],
                "correct_answer": "tuple",
                "points": 1,
            },
            {
                "text": "What does 'await' need?",
                "options": ["an awaitable", "a thread", "a lock"],
                "correct_answer": "an awaitable",
                "points": 2,
            },
        ],
    ),
    (
        "SQL basics",
        [
            {
                "text": "Which clause filters groups?",
                "options": ["WHERE", "HAVING", "ORDER BY"],
                "correct_answer": "HAVING",
                "points": 1,
            },
            {
                "text": "Which join keeps all left rows?",
                "options": ["INNER", "LEFT", "CROSS"],
                "correct_answer": "LEFT",
                "points": 1,
            },
            {
                "text": "Which index type serves ILIKE '%x%' in Postgres?",
                "options": ["btree", "gin trigram", "hash"],
                "correct_answer": "gin trigram",
                "points": 2,
            },
        ],
    ),
    (
        "Web APIs",
        [
            {
                "text": "Which status means 'created'?",
                "options": ["200", "201", "204"],
                "correct_answer": "201",
                "points": 1,
            },
            {
                "text": "Which method is idempotent?",
                "options": ["POST", "PUT", "PATCH"],
                "correct_answer": "PUT",
                "points": 1,
            },
            {
                "text": "Which header carries a bearer token?",
                "options": ["Cookie", "Authorization", "Accept"],
                "correct_answer": "Authorization",
                "points": 1,
            },
        ],
    ),
)


async def _emails(session: AsyncSession, emails: list[str]) -> set[str]:
    return set(await session.scalars(select(User.email).where(User.email.in_(emails))))


def admin_email(number: int) -> str:
    """Load-test admin N: the load test signs in as number 1; others serve concurrent admins."""
    return ADMIN_EMAIL if number == 1 else f"loadtest_admin_{number}@test.com"


async def seed(
    settings: Settings, *, candidates: int, jobs: int, admins: int = 1
) -> dict[str, int]:
    """Create what is missing; returns how many rows of each kind were added."""
    rng = random.Random(42)  # the same demo data on every machine
    hasher = password_hasher(settings)
    added = {"admins": 0, "candidates": 0, "jobs": 0, "tests": 0}
    database = Database.create(settings, role="seed")
    # With REDIS_URL set, the running fleet's cached listings are invalidated after the commit.
    redis = RedisService(settings, client_name="hiring-pro-seed")
    await redis.start()
    try:
        async with (
            invalidation_scope(Cache(settings, redis), holding=False),
            database.sessionmaker() as session,
        ):
            wanted_admins = [admin_email(number) for number in range(1, admins + 1)]
            existing_admins = await _emails(session, wanted_admins)
            missing_admins = [email for email in wanted_admins if email not in existing_admins]
            if missing_admins:
                admin_hash = await asyncio.to_thread(hasher.hash, ADMIN_PASSWORD)
                session.add_all(
                    User(
                        email=email,
                        password_hash=admin_hash,
                        full_name="Load Test Admin",
                        role="admin",
                    )
                    for email in missing_admins
                )
                added["admins"] = len(missing_admins)
            wanted = [f"loadtest_{i}@test.com" for i in range(1, candidates + 1)]
            existing = await _emails(session, wanted)
            missing = [email for email in wanted if email not in existing]
            if missing:
                # One hash shared by the demo accounts: they all have the same password anyway.
                shared_hash = await asyncio.to_thread(hasher.hash, CANDIDATE_PASSWORD)
                for email in missing:
                    user = User(
                        email=email,
                        password_hash=shared_hash,
                        full_name=email.split("@")[0].replace("_", " ").title(),
                    )
                    session.add(user)
                    await session.flush()
                    skills = rng.sample(_SKILLS, 4)
                    session.add(
                        CandidateProfile(
                            user_id=user.id,
                            skills=skills,
                            experience_years=rng.randint(0, 15),
                            summary=f"{rng.choice(_TITLES)} experienced with {', '.join(skills)}.",
                            location=rng.choice(_LOCATIONS),
                        )
                    )
                added["candidates"] = len(missing)
                invalidate_on_commit(session, CANDIDATES_TAG)
            existing_jobs = await session.scalar(select(func.count()).select_from(Job)) or 0
            for _ in range(max(0, jobs - existing_jobs)):
                title, skills = rng.choice(_TITLES), rng.sample(_SKILLS, 3)
                session.add(
                    Job(
                        title=title,
                        company=rng.choice(_COMPANIES),
                        location=rng.choice(_LOCATIONS),
                        job_type=rng.choice(JOB_TYPES),
                        skills=skills,
                        description=(
                            f"We are hiring a {title.lower()} to build products "
                            f"with {', '.join(skills)}. "
                        )
                        * 4,
                    )
                )
                added["jobs"] += 1
                invalidate_on_commit(session, JOBS_TAG)
            titles = set(await session.scalars(select(Assessment.title)))
            for title, questions in _TESTS:
                if title not in titles:
                    await create_test(
                        session,
                        title=title,
                        duration_minutes=30,
                        description=f"{title} quiz.",
                        questions=questions,
                        **DEMO_POLICY,
                    )
                    added["tests"] += 1
            # Demo tests seeded before they had a policy get the lenient one too.
            await session.execute(
                update(Assessment)
                .where(
                    Assessment.title.in_([title for title, _ in _TESTS]),
                    Assessment.max_attempts.is_(None),
                    Assessment.retake_cooldown_minutes.is_(None),
                )
                .values(**DEMO_POLICY)
            )
            invalidate_on_commit(session, ASSESSMENTS_TAG)
            await session.commit()
    finally:
        await redis.close()
        await database.dispose()
    return added


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--candidates", type=int, default=200, help="load-test candidate accounts")
    parser.add_argument("--jobs", type=int, default=500, help="demo job postings")
    parser.add_argument("--admins", type=int, default=1, help="load-test admin accounts")
    args = parser.parse_args()
    added = asyncio.run(
        seed(get_settings(), candidates=args.candidates, jobs=args.jobs, admins=args.admins)
    )
    print("seeded:", ", ".join(f"{count} {kind}" for kind, count in added.items()))  # noqa: T201


if __name__ == "__main__":
    main()
