"""The candidate's profile and resume upload."""

import io
import zipfile

import httpx
from fastapi import FastAPI

from tests.support.factories import admin_token, auth, candidate_token


def docx_bytes(text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr(
            "word/document.xml",
            f"<w:document><w:body><w:p><w:r><w:t>{text}</w:t></w:r></w:p></w:body></w:document>",
        )
    return buffer.getvalue()


DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


async def test_get_and_patch_profile(client: httpx.AsyncClient) -> None:
    token = await candidate_token(client)
    patched = await client.patch(
        "/api/profile",
        headers=auth(token),
        json={
            "summary": "Backend engineer",
            "skills": [" python ", "sql"],
            "experience_years": 5,
            "location": "Lisbon",
        },
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["skills"] == ["python", "sql"] and body["experience_years"] == 5
    again = (await client.get("/api/profile", headers=auth(token))).json()
    assert again["summary"] == "Backend engineer" and again["location"] == "Lisbon"
    cleared = await client.patch("/api/profile", headers=auth(token), json={"location": None})
    assert cleared.json()["location"] is None and cleared.json()["summary"] == "Backend engineer"


async def test_patch_profile_rejects_bad_input_and_writes_nothing(
    client: httpx.AsyncClient,
) -> None:
    token = await candidate_token(client)
    for payload in (
        {"experience_years": -1},
        {"unknown": 1},
        {"full_name": None},
        {"skills": ["x" * 61]},
    ):
        response = await client.patch("/api/profile", headers=auth(token), json=payload)
        assert response.status_code == 422, payload
        assert response.json()["error"]["code"] in {"validation_error", "null_field"}
    profile = (await client.get("/api/profile", headers=auth(token))).json()
    assert profile["experience_years"] is None and profile["full_name"] == "Casey Candidate"


async def test_admin_has_no_candidate_profile(client: httpx.AsyncClient, app: FastAPI) -> None:
    token = await admin_token(app, client)
    assert (await client.get("/api/profile", headers=auth(token))).status_code == 403


async def test_resume_upload_accepts_pdf_docx_txt(client: httpx.AsyncClient) -> None:
    token = await candidate_token(client)
    files = {
        "cv.pdf": (b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n%%EOF", "application/pdf"),
        "cv.docx": (docx_bytes("Python developer"), DOCX),
        "cv.txt": (b"Python developer, 5 years", "text/plain"),
    }
    for name, (data, content_type) in files.items():
        response = await client.post(
            "/api/profile/resume", headers=auth(token), files={"file": (name, data, content_type)}
        )
        assert response.status_code == 202, response.text
        assert response.json()["filename"] == name
        status = (await client.get("/api/profile/resume-status", headers=auth(token))).json()
        # The in-process queue may already be working on it; parsing is tested in tests/worker.
        assert status["filename"] == name and status["status"] in {
            "queued",
            "processing",
            "parsed",
            "failed",
        }


async def test_resume_upload_rejects_mismatched_or_unknown_types(client: httpx.AsyncClient) -> None:
    token = await candidate_token(client)
    cases = [
        (("cv.pdf", b"MZ\x90\x00 not a pdf", "application/pdf"), 415, "content_mismatch"),
        (("cv.exe", b"MZ\x90\x00", "application/x-msdownload"), 415, "unsupported_media_type"),
        (("cv.docx", b"PK\x03\x04 broken zip", DOCX), 415, "content_mismatch"),
        (("cv.txt", b"\xff\xfe\x00binary", "text/plain"), 415, "content_mismatch"),
        (("cv.txt", b"", "text/plain"), 422, "empty_file"),
    ]
    for file, status_code, code in cases:
        response = await client.post(
            "/api/profile/resume", headers=auth(token), files={"file": file}
        )
        assert response.status_code == status_code, (file[0], response.text)
        assert response.json()["error"]["code"] == code
    status = (await client.get("/api/profile/resume-status", headers=auth(token))).json()
    assert status["status"] == "none" and status["filename"] is None


async def test_resume_upload_size_limit(client: httpx.AsyncClient, app: FastAPI) -> None:
    token = await candidate_token(client)
    too_big = b"a" * (app.state.settings.max_resume_bytes + 1)
    response = await client.post(
        "/api/profile/resume",
        headers=auth(token),
        files={"file": ("cv.txt", too_big, "text/plain")},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_resume_upload_requires_file_field(client: httpx.AsyncClient) -> None:
    token = await candidate_token(client)
    response = await client.post("/api/profile/resume", headers=auth(token), data={"other": "x"})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "file_missing"
