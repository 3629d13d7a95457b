"""The process's breakers by name, each with the policy the settings give it."""

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import Any

from app.config import Settings
from app.config.breakers import BREAKER_NAMES
from app.services.circuit_breaker.breaker import CircuitBreaker
from app.services.circuit_breaker.policy import BreakerConfig
from app.services.redis import RedisService


def breaker_config(settings: Settings, name: str) -> BreakerConfig:
    """The policy of breaker ``name``: BreakerConfig's defaults, then the global
    CIRCUIT_BREAKER_* settings, then the breaker's CIRCUIT_BREAKERS entry (if any)."""
    config = BreakerConfig(
        failure_threshold=settings.circuit_breaker_failure_threshold,
        recovery_timeout=settings.circuit_breaker_recovery_timeout,
    )
    for key, override in settings.circuit_breakers.items():
        if key == name:
            return dataclasses.replace(config, **override.changes())
    return config


class BreakerRegistry:
    """The process's breakers by name."""

    def __init__(self, settings: Settings, redis: RedisService | None) -> None:
        self._settings = settings
        self._redis = redis
        self._breakers: dict[str, CircuitBreaker] = {}

    def add(self, name: str, config: BreakerConfig | None = None) -> CircuitBreaker:
        """Create (or replace) a breaker; without config, the policy the settings give ``name``."""
        breaker = CircuitBreaker(name, config or breaker_config(self._settings, name), self._redis)
        self._breakers[name] = breaker
        return breaker

    def get(self, name: str) -> CircuitBreaker:
        """The breaker called ``name``, created with its settings' policy on first use."""
        breaker = self._breakers.get(name)
        return breaker if breaker is not None else self.add(name)

    def find(self, name: str) -> CircuitBreaker | None:
        """The breaker called ``name``, or None (never creates one)."""
        return self._breakers.get(name)

    def __getitem__(self, name: str) -> CircuitBreaker:
        return self._breakers[name]

    def __iter__(self) -> Iterator[CircuitBreaker]:
        """The breakers, by name."""
        return iter([self._breakers[name] for name in sorted(self._breakers)])

    def states(self) -> dict[str, dict[str, Any]]:
        """Every breaker's state as this process sees it (JSON-able, no I/O)."""
        return {breaker.name: breaker.describe() for breaker in self}

    async def refresh(self) -> dict[str, dict[str, Any]]:
        """Read every breaker's shared state, then return :meth:`states`."""
        await asyncio.gather(*(breaker.refresh() for breaker in self._breakers.values()))
        return self.states()

    async def close(self) -> None:
        """Stop every breaker's background publication."""
        await asyncio.gather(*(breaker.close() for breaker in self._breakers.values()))


def create_breakers(settings: Settings, redis: RedisService | None) -> BreakerRegistry:
    """The registry with every named breaker (app/config/breakers.py), configured by settings."""
    registry = BreakerRegistry(settings, redis)
    for name in BREAKER_NAMES:
        registry.add(name)
    return registry
