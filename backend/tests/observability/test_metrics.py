"""GET /metrics in one process: request metrics by route template, pool metrics, owners' metrics."""

import importlib
import pkgutil

from prometheus_client import REGISTRY

import app as app_package
from tests.support.apps import AppFactory, client_for
from tests.support.gunicorn_server import sample


def _value(text: str, name: str, **labels: str) -> float:
    return sample(text, name, labels) or 0.0


async def test_requests_counted_by_route_template_and_status(app_with: AppFactory) -> None:
    async with app_with() as app, client_for(app) as client:
        before = (await client.get("/metrics")).text
        for job_id in (101, 102, 103):
            assert (await client.get(f"/api/jobs/{job_id}")).status_code == 404
        await client.get("/no/such/route")
        response = await client.get("/metrics")
    after = response.text
    assert response.headers["content-type"].startswith("text/plain")
    labels = {"method": "GET", "route": "/api/jobs/{job_id}", "status": "404"}
    counted = _value(after, "hiringpro_http_requests_total", **labels) - _value(
        before, "hiringpro_http_requests_total", **labels
    )
    observed = _value(after, "hiringpro_http_request_duration_seconds_count", **labels) - _value(
        before, "hiringpro_http_request_duration_seconds_count", **labels
    )
    assert counted == 3
    assert observed == 3
    assert 'route="/api/jobs/101"' not in after  # ids never become label values
    unmatched = {"method": "GET", "route": "<unmatched>", "status": "404"}
    assert _value(after, "hiringpro_http_requests_total", **unmatched) >= 1


async def test_pool_metrics(app_with: AppFactory) -> None:
    async with app_with() as app, client_for(app) as client:
        await client.get("/health/ready")
        text = (await client.get("/metrics")).text
    assert _value(text, "hiringpro_db_pool_size") == 20
    # Nothing is checked out between requests: every checkout was matched by a checkin.
    assert _value(text, "hiringpro_db_connections_checked_out") == 0
    assert _value(text, "hiringpro_db_connections_opened_total") >= 1


async def test_metrics_are_not_public(app_with: AppFactory) -> None:
    async with app_with() as app, client_for(app, "198.51.100.20") as remote:
        response = await remote.get("/metrics")
    assert response.status_code == 403


async def test_every_module_metric_is_exposed(app_with: AppFactory) -> None:
    """Metrics defined at module level anywhere in app/ (rate limiter, breakers, Redis, cache,
    queue, ...) reach /metrics through the default registry."""
    for module in pkgutil.walk_packages(app_package.__path__, "app."):
        if module.name not in ("app.main", "app.worker_app"):
            importlib.import_module(module.name)
    names = {metric.name for metric in REGISTRY.collect() if metric.name.startswith("hiringpro_")}
    async with app_with() as app, client_for(app) as client:
        text = (await client.get("/metrics")).text
    expected_owners = {
        "hiringpro_rate_limit_decisions",
        "hiringpro_circuit_breaker_state",
        "hiringpro_redis_available",
        "hiringpro_http_requests",
    }
    assert expected_owners <= names
    for name in names:
        assert f"# HELP {name}" in text, name
