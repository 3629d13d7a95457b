"""Drills: Redis, the queue endpoint and an external API fail under steady traffic to the web
tier (gunicorn, 2 workers), with the same checks as every drill (tests/faults/rig.py).
"""

import os
import signal
import time
from collections import Counter

import pytest

from app.services.job_queue import JobMessage
from tests.faults.rig import (
    BASE_OPS,
    FAULT_SECONDS,
    Population,
    Scenario,
    finish,
    readiness,
    start_web,
)
from tests.support.fake_upstream import FakeUpstream
from tests.support.gunicorn_server import GunicornServer
from tests.support.moto_server import MotoServer
from tests.support.redis_server import RedisServer
from tests.support.sqs_server import QueuePair, drain
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow


def test_redis_killed_and_restarted(
    web: GunicornServer, population: Population, redis_server: RedisServer, postgres_url: str
) -> None:
    def fault() -> None:
        assert redis_server.process is not None
        redis_server.process.kill()
        redis_server.process.wait()
        time.sleep(FAULT_SECONDS)
        redis_server.start()

    drill = Scenario(web, population, "redis-killed").run(fault)
    finish(drill, postgres_url, web)
    # Cache and limiter fell back to the database and local buckets: nobody saw an error.
    assert [c for c in drill.calls if not c.ok] == []
    assert readiness(web).json()["checks"]["redis"]["status"] == "ok"


def test_redis_hung_and_resumed(
    web: GunicornServer, population: Population, redis_server: RedisServer, postgres_url: str
) -> None:
    def fault() -> None:
        assert redis_server.process is not None
        os.kill(redis_server.process.pid, signal.SIGSTOP)
        try:
            time.sleep(FAULT_SECONDS)
        finally:
            os.kill(redis_server.process.pid, signal.SIGCONT)

    drill = Scenario(web, population, "redis-hung").run(fault)
    finish(drill, postgres_url, web)
    assert [c for c in drill.calls if not c.ok] == []
    assert readiness(web).json()["checks"]["redis"]["status"] == "ok"


def test_queue_endpoint_down_and_back_under_enqueue_load(
    database_url: str,
    redis_url: str,
    population: Population,
    postgres_url: str,
    moto: MotoServer,
    queues: QueuePair,
) -> None:
    # The outage is at the endpoint: moto keeps its queues in memory, which a restart of moto
    # itself would lose (real SQS keeps stored messages through an outage of its endpoint).
    endpoint = TcpProxy(target_port=int(moto.url.rsplit(":", 1)[1]))
    endpoint.up()
    server = start_web(
        database_url,
        REDIS_URL=redis_url,
        QUEUE_BACKEND="sqs",
        AWS_ENDPOINT_URL=endpoint.url,
        SQS_QUEUE_RESUME_PARSE=queues.name,
        SQS_QUEUE_VECTOR_INDEX=queues.name,
        SQS_QUEUE_EMAIL=queues.name,
        SQS_TIMEOUT_SECONDS="2",
    )
    cut_at: list[float] = []

    def fault() -> None:
        cut_at.append(time.monotonic())
        endpoint.down()
        time.sleep(FAULT_SECONDS)
        endpoint.up()

    try:
        drill = Scenario(server, population, "queue-down", ops=(*BASE_OPS, "upload")).run(fault)
        finish(drill, postgres_url, server)
    finally:
        server.stop()
        endpoint.down()
    uploads = [call for call in drill.calls if call.op == "upload"]
    refused = {call.label for call in uploads if not call.ok}
    assert refused <= {"503 queue_unavailable"}, refused
    # The outage was felt: uploads were refused, or retried their send until it ended.
    waited = [c for c in uploads if c.started < drill.fault_ended < c.ended]
    assert refused or waited
    # Every acknowledged upload is queued as one job. A send on the wire when the endpoint
    # vanished may have reached the queue while its answer was lost: botocore's retry then
    # stores the same job again (a standard queue has no deduplication), and the worker drops
    # the second delivery by job id. So a storage key may repeat, but only as one job, and
    # an upload not acknowledged may be queued only if it was on the wire at the cut.
    messages = [JobMessage.decode(m["Body"]) for m in drain(moto.url, queues.url)]
    jobs_by_key: dict[str, set[str]] = {}
    for message in messages:
        jobs_by_key.setdefault(str(message.payload["storage_key"]), set()).add(message.id)
    assert all(len(jobs) == 1 for jobs in jobs_by_key.values()), jobs_by_key
    queued: Counter[str] = Counter(
        str(message.payload["user_id"]) for message in {m.id: m for m in messages}.values()
    )
    for candidate in population.candidates:
        user = str(candidate.user_id)
        acknowledged = sum(1 for call in uploads if call.key == user and call.ok)
        in_flight_at_cut = sum(
            1 for call in uploads if call.key == user and call.started <= cut_at[0] <= call.ended
        )
        assert acknowledged <= queued[user] <= acknowledged + in_flight_at_cut


def test_external_api_hanging_past_its_timeout(
    database_url: str,
    redis_url: str,
    population: Population,
    postgres_url: str,
    upstream: FakeUpstream,
) -> None:
    server = start_web(
        database_url,
        REDIS_URL=redis_url,
        AI_BACKEND="gemini",
        GEMINI_API_KEY=upstream.api_key,
        GEMINI_BASE_URL=upstream.url,
        GEMINI_TIMEOUT_SECONDS="1",
        CIRCUIT_BREAKERS='{"gemini": {"failure_threshold": 3, "recovery_timeout": 2}}',
    )

    def fault() -> None:
        upstream.set_mode("hang")
        time.sleep(FAULT_SECONDS)
        upstream.set_mode("healthy")

    try:
        drill = Scenario(server, population, "upstream-hang", ops=(*BASE_OPS, "ai")).run(fault)
        finish(drill, postgres_url, server)
    finally:
        server.stop()
    refused = {call.label for call in drill.calls if not call.ok}
    assert "504 upstream_timeout" in refused
    assert refused <= {"504 upstream_timeout", "503 circuit_open"}, refused
    # Only the AI route waited on the upstream; everything else went on.
    assert [c for c in drill.during() if c.op != "ai" and not c.ok] == []
