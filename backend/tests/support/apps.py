"""Building the web app for a test: with setting overrides, and clients from chosen addresses."""

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
from fastapi import FastAPI

# What the `app_with` fixture returns: `async with app_with(**overrides) as app: ...`
AppFactory = Callable[..., AbstractAsyncContextManager[FastAPI]]


def client_for(app: FastAPI, client_address: str = "127.0.0.1", **kwargs: Any) -> httpx.AsyncClient:
    """An in-process client whose requests come from `client_address`."""
    transport = httpx.ASGITransport(app=app, client=(client_address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", **kwargs)
