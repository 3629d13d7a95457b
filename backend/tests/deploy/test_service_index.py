"""`GET /` on the web app: what answers there, from memory. EB's default health check path is `/`;
the web bundle points the load balancer at /health, and `/` answers even with every dependency
down, so neither path can make instances look unhealthy because of a dependency."""

from pathlib import Path

import pytest

from app.config import Settings
from app.main import create_app
from tests.conftest import TEST_JWT_SECRET, make_settings
from tests.deploy.eb_bundle import tier_options
from tests.support.apps import AppFactory, client_for
from tests.support.redis_server import RedisServer, free_port


async def test_index_names_the_service_even_with_every_dependency_down(
    app_with: AppFactory, stopped_redis: RedisServer
) -> None:
    dead_db = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing"
    async with (
        app_with(database_url=dead_db, redis_url=stopped_redis.url, api_docs_enabled=False) as app,
        client_for(app) as client,
    ):
        response = await client.get("/")
    assert response.status_code == 200
    settings: Settings = app.state.settings
    assert response.json() == {
        "service": settings.app_name,
        "version": settings.app_version,
        "links": {"health": "/health", "readiness": "/health/ready"},
    }


@pytest.mark.parametrize("docs", [True, False])
async def test_index_links_the_docs_only_when_they_are_served(tmp_path: Path, docs: bool) -> None:
    settings = make_settings(tmp_path, jwt_secret=TEST_JWT_SECRET, api_docs_enabled=docs)
    app = create_app(settings)
    async with app.router.lifespan_context(app), client_for(app) as client:
        links = (await client.get("/")).json()["links"]
        assert ("docs" in links) == docs
        for path in links.values():
            assert (await client.get(path)).status_code == 200, path


def test_load_balancer_checks_health_not_the_index() -> None:
    process = tier_options("web")["aws:elasticbeanstalk:environment:process:default"]
    assert process["HealthCheckPath"] == "/health"
