"""The load generator's accounts: every seeded load-test user with an access token.

Run from backend/ with the bench's environment (DATABASE_URL, JWT_SECRET, ...):
    python ../bench/overload/tokens.py OUT.json

Tokens are signed by the app's own `create_access_token` for each account's current token
version, exactly what a login would hand out, so the run does not spend thousands of argon2
hashes on setup. The logins measured during the run are real ones.
"""

import asyncio
import json
import sys
from typing import Any

from sqlalchemy import select

from app.config import get_settings
from app.database import Database
from app.models import User
from app.models.assessment import Assessment
from app.security import Role, create_access_token


async def collect() -> dict[str, list[Any]]:
    """{"candidates": [...], "admins": [...], "tests": [ids]}: accounts with their tokens."""
    settings = get_settings()
    database = Database.create(settings, role="bench")
    try:
        async with database.sessionmaker() as session:
            users = (
                await session.execute(
                    select(User.id, User.email, User.role, User.token_version)
                    .where(User.email.like("loadtest%"))
                    .order_by(User.id)
                )
            ).all()
            tests = list(
                await session.scalars(
                    select(Assessment.id).where(Assessment.active).order_by(Assessment.id)
                )
            )
    finally:
        await database.dispose()
    accounts: dict[str, list[Any]] = {"candidates": [], "admins": [], "tests": tests}
    for user_id, email, role, version in users:
        kind: Role = "admin" if role == "admin" else "candidate"
        token, _ = create_access_token(settings, user_id, kind, version=version)
        accounts[f"{kind}s"].append({"id": user_id, "email": email, "token": token})
    return accounts


if __name__ == "__main__":
    found = asyncio.run(collect())
    with open(sys.argv[1], "w") as out:
        json.dump(found, out)
    print(
        f"tokens: {len(found['candidates'])} candidates, {len(found['admins'])} admins, "
        f"{len(found['tests'])} tests"
    )
