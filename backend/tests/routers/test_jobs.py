"""Public job listing and admin job management."""

import httpx
from fastapi import FastAPI

from tests.support.factories import admin_token, auth, candidate_token, create_job


async def test_listing_filters_and_paginates(client: httpx.AsyncClient, app: FastAPI) -> None:
    await create_job(app, title="Senior Python Developer", job_type="Full Time", location="Berlin")
    await create_job(
        app, title="Data Analyst", job_type="Part Time", location="Paris", description="SQL reports"
    )
    await create_job(
        app,
        title="Frontend developer",
        job_type="Full Time",
        location="Remote, EU",
        company="Web 100%",
    )
    await create_job(app, title="Hidden developer", active=False)

    everything = (await client.get("/api/jobs")).json()
    assert [job["title"] for job in everything["items"]] == [
        "Frontend developer",
        "Data Analyst",
        "Senior Python Developer",
    ]
    assert everything["has_more"] is False and everything["page"] == 1
    assert set(everything["items"][0]) == {
        "id",
        "title",
        "company",
        "location",
        "job_type",
        "description",
        "skills",
        "created_at",
    }

    searched = (
        await client.get("/api/jobs", params={"search": "developer", "job_type": "Full Time"})
    ).json()
    assert [job["title"] for job in searched["items"]] == [
        "Frontend developer",
        "Senior Python Developer",
    ]
    assert (await client.get("/api/jobs", params={"location": "paris"})).json()["items"][0][
        "title"
    ] == "Data Analyst"
    # LIKE wildcards in the search are literal characters.
    assert [
        j["title"]
        for j in (await client.get("/api/jobs", params={"search": "100%"})).json()["items"]
    ] == ["Frontend developer"]
    assert len((await client.get("/api/jobs", params={"search": "%"})).json()["items"]) == 1
    assert (await client.get("/api/jobs", params={"search": "_"})).json()["items"] == []

    first = (await client.get("/api/jobs", params={"page_size": 2})).json()
    second = (await client.get("/api/jobs", params={"page_size": 2, "page": 2})).json()
    assert first["has_more"] is True and len(first["items"]) == 2
    assert second["has_more"] is False and len(second["items"]) == 1


async def test_listing_rejects_bad_paging(client: httpx.AsyncClient) -> None:
    for params in (
        {"page_size": 101},
        {"page_size": 0},
        {"page": 0},
        {"page": "x"},
        {"search": "a" * 101},
    ):
        response = await client.get("/api/jobs", params=params)
        assert response.status_code == 422, params
        assert response.json()["error"]["code"] == "validation_error"


async def test_job_detail(client: httpx.AsyncClient, app: FastAPI) -> None:
    job = await create_job(app)
    hidden = await create_job(app, active=False)
    detail = await client.get(f"/api/jobs/{job.id}")
    assert detail.status_code == 200 and detail.json()["title"] == "Python Developer"
    assert (await client.get(f"/api/jobs/{hidden.id}")).status_code == 404
    missing = await client.get("/api/jobs/999999")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


async def test_admin_job_management(client: httpx.AsyncClient, app: FastAPI) -> None:
    token = await admin_token(app, client)
    payload = {
        "title": "Platform Engineer",
        "company": "Hiring Pro",
        "location": "Remote",
        "job_type": "Contract",
        "description": "Run the platform.",
        "skills": ["aws", "python"],
    }
    created = await client.post("/api/admin/jobs", headers=auth(token), json=payload)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    assert created.json()["active"] is True

    updated = await client.patch(
        f"/api/admin/jobs/{job_id}", headers=auth(token), json={"title": "SRE", "active": False}
    )
    assert updated.status_code == 200 and updated.json()["title"] == "SRE"
    assert (await client.get(f"/api/jobs/{job_id}")).status_code == 404
    listed = (await client.get("/api/admin/jobs", headers=auth(token))).json()
    assert [job["title"] for job in listed["items"]] == ["SRE"]

    bad = await client.patch(f"/api/admin/jobs/{job_id}", headers=auth(token), json={"title": None})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "null_field"
    bad_type = await client.post(
        "/api/admin/jobs", headers=auth(token), json=payload | {"job_type": "Gig"}
    )
    assert bad_type.status_code == 422

    assert (
        await client.delete(f"/api/admin/jobs/{job_id}", headers=auth(token))
    ).status_code == 204
    assert (
        await client.delete(f"/api/admin/jobs/{job_id}", headers=auth(token))
    ).status_code == 404
    assert (
        await client.patch("/api/admin/jobs/424242", headers=auth(token), json={"title": "x"})
    ).status_code == 404


async def test_candidates_cannot_manage_jobs(client: httpx.AsyncClient) -> None:
    token = await candidate_token(client)
    response = await client.post("/api/admin/jobs", headers=auth(token), json={})
    assert response.status_code == 403
