"""Local storage keeps uploads private: files 0600, directories 0700, even under umask 000."""

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.services.storage import LocalStorage
from tests.support.factories import auth, candidate_token


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """umask 000: any mode not set by the call that creates a file would show as 0666/0777."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def modes_under(root: Path) -> tuple[dict[Path, int], dict[Path, int]]:
    """Permission bits of every file and directory from `root` down (root included)."""
    files: dict[Path, int] = {}
    directories = {root: stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        mode = stat.S_IMODE(path.lstat().st_mode)
        (directories if path.is_dir() else files)[path] = mode
    return files, directories


@pytest.mark.usefixtures("permissive_umask")
async def test_an_uploaded_resume_is_readable_by_the_service_user_only(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    token = await candidate_token(client)
    data = b"Python developer, 5 years"
    response = await client.post(
        "/api/profile/resume",
        headers=auth(token),
        files={"file": ("cv.txt", data, "text/plain")},
    )
    assert response.status_code == 202, response.text

    files, directories = modes_under(app.state.settings.data_dir / "uploads")
    assert [path.read_bytes() for path in files] == [data]  # no temp file left behind
    assert set(files.values()) == {0o600}
    assert len(directories) >= 2  # uploads/ and the key's own folders
    assert set(directories.values()) == {0o700}


@pytest.mark.usefixtures("permissive_umask")
async def test_an_overwritten_file_keeps_its_private_mode(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "uploads")
    for content in (b"first", b"second"):
        await storage.put("resumes/7/cv.txt", content, "text/plain")

    files, directories = modes_under(tmp_path / "uploads")
    assert {path.name: path.read_bytes() for path in files} == {"cv.txt": b"second"}
    assert set(files.values()) == {0o600}
    assert set(directories.values()) == {0o700}
