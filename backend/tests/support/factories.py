"""Test data: accounts through the API, other rows straight through the app's session."""

import itertools
from typing import Any

import httpx
from fastapi import FastAPI

from app.domain.auth import PasswordService
from app.models import Assessment, Job, Question, User

PASSWORD = "Password123!"
_counter = itertools.count(1)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register_candidate(
    client: httpx.AsyncClient, email: str | None = None, full_name: str = "Casey Candidate"
) -> dict[str, Any]:
    """Register through the API; returns the token response."""
    email = email or f"candidate{next(_counter)}@example.com"
    response = await client.post(
        "/api/auth/register", json={"email": email, "password": PASSWORD, "full_name": full_name}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def candidate_token(client: httpx.AsyncClient) -> str:
    token: str = (await register_candidate(client))["access_token"]
    return token


async def create_admin(app: FastAPI, email: str = "admin@example.com") -> User:
    passwords: PasswordService = app.state.resources.passwords
    async with app.state.resources.database.sessionmaker() as session:
        user = User(
            email=email,
            password_hash=await passwords.hash(PASSWORD),
            full_name="Ada Admin",
            role="admin",
        )
        session.add(user)
        await session.commit()
        return user


async def admin_token(app: FastAPI, client: httpx.AsyncClient) -> str:
    user = await create_admin(app, f"admin{next(_counter)}@example.com")
    response = await client.post(
        "/api/auth/admin/login", json={"email": user.email, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def create_job(app: FastAPI, **fields: Any) -> Job:
    values: dict[str, Any] = {
        "title": "Python Developer",
        "company": "Acme",
        "location": "Berlin",
        "job_type": "Full Time",
        "description": "Build APIs with FastAPI and PostgreSQL.",
        "skills": ["python", "fastapi"],
        "active": True,
    }
    values.update(fields)
    async with app.state.resources.database.sessionmaker() as session:
        job = Job(**values)
        session.add(job)
        await session.commit()
        return job


async def create_test(
    app: FastAPI, *, duration_minutes: int = 30, questions: int = 3, active: bool = True
) -> tuple[Assessment, list[Question]]:
    """A test whose question i has options A/B/C and correct answer 'B' (points i)."""
    async with app.state.resources.database.sessionmaker() as session:
        test = Assessment(
            title="Python basics",
            description="Warm-up",
            duration_minutes=duration_minutes,
            active=active,
        )
        session.add(test)
        await session.flush()
        rows = [
            Question(
                test_id=test.id,
                position=i,
                text=f"Question {i}?",
                options=["A", "B", "C"],
                correct_answer="B",
                points=i,
            )
            for i in range(1, questions + 1)
        ]
        session.add_all(rows)
        await session.commit()
        return test, rows
