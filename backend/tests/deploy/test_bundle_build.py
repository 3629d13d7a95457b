"""scripts/build_bundle.sh: each tier's bundle has its own configuration at the top of
.ebextensions and nothing of the other tier, keeps the hooks executable, and leaves out what
git ignores. The bundles are built from this working tree into tmp_path."""

import shutil
import stat
import subprocess
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.eb_bundle import EBEXTENSIONS, TIERS, shared_config_files
from tests.support.gunicorn_server import REPO_ROOT

BUILD_BUNDLE = REPO_ROOT / "scripts" / "build_bundle.sh"


def build(tier: str, out_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(BUILD_BUNDLE), tier, str(out_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, zipfile.ZipFile]]:
    """Both tiers' bundles, built once for this module."""
    out_dir = tmp_path_factory.mktemp("bundles")
    built: dict[str, zipfile.ZipFile] = {}
    for tier in TIERS:
        result = build(tier, out_dir)
        assert result.returncode == 0, result.stderr
        path = Path(result.stdout.strip().splitlines()[-1])
        assert path.parent == out_dir and path.name.startswith(f"hiring-pro-{tier}-")
        built[tier] = zipfile.ZipFile(path)
    yield built
    for archive in built.values():
        archive.close()


def names(archive: zipfile.ZipFile) -> set[str]:
    return {name for name in archive.namelist() if not name.endswith("/")}


@pytest.mark.parametrize("tier", TIERS)
def test_tier_configuration_sits_at_the_top_of_ebextensions(
    bundles: dict[str, zipfile.ZipFile], tier: str
) -> None:
    archive = bundles[tier]
    other = next(name for name in TIERS if name != tier)
    configs = {name for name in names(archive) if name.startswith(".ebextensions/")}
    # One level only (EB reads .ebextensions/*.config), nothing else in it.
    assert all(name.count("/") == 1 for name in configs), configs
    expected = {
        f".ebextensions/{path.name}": path.read_bytes()
        for path in [*shared_config_files(), *sorted((EBEXTENSIONS / tier).glob("*.config"))]
    }
    assert {name: archive.read(name) for name in configs} == expected
    # Nothing of the other tier: its files differ in content even where names are alike.
    for path in (EBEXTENSIONS / other).glob("*.config"):
        assert path.read_bytes() not in expected.values(), path
    assert archive.read(".platform/bundle_tier") == f"{tier}\n".encode()
    assert ("cron.yaml" in names(archive)) == (tier == "worker")


@pytest.mark.parametrize("tier", TIERS)
def test_bundle_holds_the_app_with_executable_hooks(
    bundles: dict[str, zipfile.ZipFile], tier: str
) -> None:
    archive = bundles[tier]
    present = names(archive)
    for required in (
        "requirements.txt",
        "gunicorn.conf.py",
        "Procfile.web",
        "Procfile.worker",
        "backend/app/main.py",
        "backend/alembic.ini",
        ".platform/hooks/prebuild/01_select_tier.sh",
        ".platform/scripts/migrate.sh",
    ):
        assert required in present, required
    for name in present:
        if name.startswith((".platform/hooks/", ".platform/confighooks/", ".platform/scripts/")):
            mode = archive.getinfo(name).external_attr >> 16
            assert mode & stat.S_IXUSR, name
    # What git ignores (virtualenvs, caches, local data, .env) never ships.
    for name in present:
        parts = name.split("/")
        assert ".venv" not in parts and "__pycache__" not in parts, name
        assert ".git" not in parts and parts[-1] != ".env", name


def test_earlier_bundles_in_the_default_output_directory_stay_out() -> None:
    # dist/ (the default) is inside the repository, and git does not ignore it.
    dist = REPO_ROOT / "dist"
    created = not dist.exists()
    out_dir = dist / f"bundle-test-{uuid.uuid4().hex[:8]}"
    try:
        first = build("worker", out_dir)
        assert first.returncode == 0, first.stderr
        second = build("worker", out_dir)
        assert second.returncode == 0, second.stderr
        with zipfile.ZipFile(second.stdout.strip().splitlines()[-1]) as archive:
            assert not [name for name in archive.namelist() if name.startswith("dist/")]
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
        if created:
            shutil.rmtree(dist, ignore_errors=True)


@pytest.mark.parametrize("arguments", [[], ["both"], ["web", str(REPO_ROOT)]])
def test_build_refuses_what_it_cannot_build(arguments: list[str]) -> None:
    result = subprocess.run(
        ["bash", str(BUILD_BUNDLE), *arguments], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr
