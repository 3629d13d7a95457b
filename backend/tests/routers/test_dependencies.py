"""Every dependency of every route is a coroutine: FastAPI runs a plain `def` dependency in the
thread pool, a thread hop per request that the profile of issue 16 found on every route."""

import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from app.main import create_app
from app.worker_app import create_worker_app
from tests.conftest import make_settings


def api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """The app's routes, through included routers (FastAPI keeps each router it includes)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from api_routes(included.routes)


def calls(dependant: Dependant) -> Iterator[Any]:
    for dependency in dependant.dependencies:
        yield dependency.call
        yield from calls(dependency)


def runs_on_the_loop(call: Any) -> bool:
    # A dependency may be an instance (HTTPBearer): its __call__ is what FastAPI awaits.
    target = call if inspect.isfunction(call) else type(call).__call__
    return inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)


def sync_dependencies(app: FastAPI) -> tuple[int, set[str]]:
    routes = list(api_routes(app.router.routes))
    found = {
        f"{route.path}: {getattr(call, '__qualname__', type(call).__name__)}"
        for route in routes
        for call in [route.endpoint, *calls(route.dependant)]
        if not runs_on_the_loop(call)
    }
    return len(routes), found


def test_web_app_dependencies_and_endpoints_are_async(tmp_path: Path) -> None:
    count, found = sync_dependencies(create_app(make_settings(tmp_path)))
    assert count > 30, "the walk should see every route of the web app"
    assert found == set()


def test_worker_app_dependencies_and_endpoints_are_async(tmp_path: Path) -> None:
    count, found = sync_dependencies(create_worker_app(make_settings(tmp_path)))
    assert count >= 3
    assert found == set()
