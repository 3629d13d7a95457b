"""A local HTTP server process that plays the external APIs (Gemini, Pinecone) for tests.

Run as ``python -m tests.support.fake_upstream --port N --api-key K``. Control it over HTTP:

* ``POST /_fake/mode`` ``{"mode": "healthy"|"503"|"hang"|"4xx", "delay": s, "retry_after": s,
  "status": n}``: how every other request is answered (``delay`` applies to healthy answers).
* ``GET /_fake/calls``: ``{"calls": n, "paths": {path: n}}`` requests received (control excluded).
* ``POST /_fake/reset``: healthy, counters and stored vectors cleared.

Healthy answers follow the real APIs' shapes: ``POST /v1beta/models/{model}:generateContent``
(``x-goog-api-key``), Pinecone's ``/vectors/upsert``, ``/query``, ``/vectors/delete`` (``Api-Key``),
Cloudinary's ``/v1_1/{cloud}/raw/upload``, ``/download`` and ``/destroy`` (signed with the API
key as the secret too); any other path answers ``{"ok": true}``.
"""

import argparse
import asyncio
import hashlib
import json
import math
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.redis_server import free_port
from tests.support.wait import wait_until_sync

BACKEND_DIR = Path(__file__).resolve().parents[2]


class _Behaviour:
    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.reset()

    def reset(self) -> None:
        self.mode = "healthy"
        self.delay = 0.0
        self.retry_after: int | None = None
        self.status = 400
        self.calls: Counter[str] = Counter()
        self.vectors: dict[str, dict[str, list[float]]] = {}
        self.files: dict[str, bytes] = {}


def build_app(api_key: str) -> Starlette:
    """The fake's ASGI app."""
    state = _Behaviour(api_key)

    async def set_mode(request: Request) -> Response:
        body = await request.json()
        state.mode = body.get("mode", "healthy")
        state.delay = float(body.get("delay", 0.0))
        state.retry_after = body.get("retry_after")
        state.status = int(body.get("status", 400))
        return JSONResponse({"mode": state.mode})

    async def calls(request: Request) -> Response:
        return JSONResponse({"calls": sum(state.calls.values()), "paths": dict(state.calls)})

    async def reset(request: Request) -> Response:
        state.reset()
        return JSONResponse({"ok": True})

    async def upstream(request: Request) -> Response:
        path = request.url.path
        state.calls[path] += 1
        if state.mode == "hang":
            await asyncio.sleep(3600)
        if state.mode == "503":
            headers = {"Retry-After": str(state.retry_after)} if state.retry_after else {}
            return JSONResponse({"error": "unavailable"}, status_code=503, headers=headers)
        if state.mode == "4xx":
            return JSONResponse({"error": "bad request"}, status_code=state.status)
        if state.delay:
            await asyncio.sleep(state.delay)
        if path.endswith(":generateContent"):
            return await _gemini(request, state)
        if path in ("/vectors/upsert", "/query", "/vectors/delete"):
            return await _pinecone(request, state)
        if path.startswith("/v1_1/"):
            return await _cloudinary(request, state)
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/_fake/mode", set_mode, methods=["POST"]),
            Route("/_fake/calls", calls, methods=["GET"]),
            Route("/_fake/reset", reset, methods=["POST"]),
            Route("/{path:path}", upstream, methods=["GET", "POST", "PUT", "DELETE"]),
        ]
    )


async def _gemini(request: Request, state: _Behaviour) -> Response:
    if request.headers.get("x-goog-api-key") != state.api_key:
        return JSONResponse({"error": {"code": 403, "status": "PERMISSION_DENIED"}}, 403)
    body = await request.json()
    prompt = body["contents"][0]["parts"][0]["text"]
    if body.get("generationConfig", {}).get("responseMimeType") == "application/json":
        match = re.search(r"Write (\d+) (\w+) multiple-choice questions .* about (.+?)\. ", prompt)
        count, difficulty, topic = (int(match[1]), match[2], match[3]) if match else (1, "", "")
        items = []
        for number in range(1, count + 1):
            options = [f"{topic} option {number}{letter}" for letter in "ABCD"]
            items.append(
                {
                    "text": f"{difficulty} question {number} about {topic}?",
                    "options": options,
                    "correct_answer": options[number % 4],
                }
            )
        # A malformed item (answer not among the options) that the client must drop.
        items.append({"text": "bad", "options": ["x", "y"], "correct_answer": "z"})
        text = json.dumps(items)
    else:
        resume = prompt.split("\n\n", 1)[-1]
        text = "Summary: " + " ".join(resume.split()[:12])
    return JSONResponse(
        {
            "candidates": [
                {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}
            ],
            "usageMetadata": {"promptTokenCount": len(prompt.split())},
        }
    )


async def _pinecone(request: Request, state: _Behaviour) -> Response:
    if request.headers.get("api-key") != state.api_key:
        return JSONResponse({"code": 16, "message": "Invalid API Key"}, 401)
    body = await request.json()
    namespace = state.vectors.setdefault(body.get("namespace", ""), {})
    path = request.url.path
    if path == "/vectors/upsert":
        for vector in body["vectors"]:
            namespace[vector["id"]] = vector["values"]
        return JSONResponse({"upsertedCount": len(body["vectors"])})
    if path == "/vectors/delete":
        for vector_id in body.get("ids", []):
            namespace.pop(vector_id, None)
        return JSONResponse({})
    probe = body["vector"]
    scored = sorted(
        ((vector_id, _cosine(probe, values)) for vector_id, values in namespace.items()),
        key=lambda item: -item[1],
    )
    matches = [{"id": vector_id, "score": score} for vector_id, score in scored[: body["topK"]]]
    return JSONResponse({"matches": matches, "namespace": body.get("namespace", "")})


async def _cloudinary(request: Request, state: _Behaviour) -> Response:
    if request.method == "GET":
        params = dict(request.query_params)
    else:
        form = await request.form()
        params = {name: value for name, value in form.items() if isinstance(value, str)}
        upload = form.get("file")
    signature = params.pop("signature", "")
    api_key = params.pop("api_key", "")
    payload = "&".join(f"{name}={params[name]}" for name in sorted(params))
    expected = hashlib.sha1((payload + state.api_key).encode()).hexdigest()
    if api_key != state.api_key or signature != expected:
        return JSONResponse({"error": {"message": "Invalid Signature"}}, 401)
    public_id, action = params.get("public_id", ""), request.url.path.rsplit("/", 1)[-1]
    if action == "upload" and upload is not None and not isinstance(upload, str):
        state.files[public_id] = await upload.read()
        return JSONResponse(
            {
                "public_id": public_id,
                "resource_type": "raw",
                "type": "private",
                "bytes": len(state.files[public_id]),
            }
        )
    if action == "download":
        if public_id not in state.files:
            return JSONResponse({"error": {"message": "Resource not found"}}, 404)
        return Response(state.files[public_id], media_type="application/octet-stream")
    if action == "destroy":
        found = state.files.pop(public_id, None) is not None
        return JSONResponse({"result": "ok" if found else "not found"})
    return JSONResponse({"error": {"message": "unknown action"}}, 400)


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


class FakeUpstream:
    """Start, control and stop the fake upstream process on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.api_key = "test-key-" + hashlib.sha256(str(self.port).encode()).hexdigest()[:12]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self._control = httpx.Client(base_url=self.url, timeout=5.0)

    def start(self, timeout: float = 20.0) -> None:
        self.process = process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.fake_upstream",
                "--port",
                str(self.port),
                "--api-key",
                self.api_key,
            ],
            cwd=BACKEND_DIR,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def answering() -> bool:
            assert process.poll() is None, "the fake upstream exited"
            try:
                self.calls()
            except httpx.TransportError:
                return False
            return True

        wait_until_sync(answering, within=timeout, what="the fake upstream to answer")

    def set_mode(
        self, mode: str, *, delay: float = 0.0, retry_after: int | None = None, status: int = 400
    ) -> None:
        response = self._control.post(
            "/_fake/mode",
            json={"mode": mode, "delay": delay, "retry_after": retry_after, "status": status},
        )
        response.raise_for_status()

    def calls(self, path: str | None = None) -> int:
        data = self._control.get("/_fake/calls").raise_for_status().json()
        return int(data["calls"] if path is None else data["paths"].get(path, 0))

    def reset(self) -> None:
        self._control.post("/_fake/reset").raise_for_status()

    def stop(self) -> None:
        self._control.close()
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--api-key", required=True)
    args = parser.parse_args()
    uvicorn.run(
        build_app(args.api_key),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        # Connections from hung requests must not keep the fake alive at stop.
        timeout_graceful_shutdown=1,
    )


if __name__ == "__main__":
    main()
