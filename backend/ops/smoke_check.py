"""Deploy smoke check: ``python -m ops.smoke_check https://api.example.com``.

The checks, one request each, in this order:

* ``GET /health``: liveness, 200 and status ``ok``.
* ``GET /health/ready``: readiness, 200 and ``ready`` (``degraded`` too with --allow-degraded);
  the line shows every dependency status it reports (database, redis) with its latency.
* ``GET /api/jobs?page_size=1``: the public job listing, a read through the whole stack
  (routing, middleware, cache, database): 200 and a page of jobs. It needs no login, so the
  smoke check needs no credentials.
* with --expect-version: ``GET /health/detailed``, 200 and that APP_VERSION. The route answers
  clients inside OPS_ALLOWED_NETWORKS or an admin's bearer token: from anywhere else pass
  --token (or SMOKE_CHECK_TOKEN, which keeps it out of the process list).

Every request sends its own ``X-Request-ID`` (``smoke-<random>``); the app keeps it, writes it
on the request's log lines and echoes it, and each output line prints it, so a failed check can
be found in the logs. Each request may take --timeout seconds. Connection errors (refused, or
the connect timed out: the request never reached the app) are retried --retries times after a
short pause; any other outcome, a read timeout included, is the check's result.

Output: one line per check (PASS or FAIL, the request, status, latency, request id, detail).
Exit status 0 when every check passed; 1 when any failed, with a summary on stderr naming the
failed checks; 2 for bad arguments.
"""

import argparse
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from ops.console import say

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
# Pause before retry n (n = 1, 2, ...) of a connection error: n times this many seconds.
RETRY_PAUSE_SECONDS = 0.5

Verdict = tuple[bool, str]


@dataclass(frozen=True, slots=True)
class Check:
    """One request and what its response must be."""

    path: str
    verify: Callable[[httpx.Response], Verdict]
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"GET {self.path.split('?', 1)[0]}"


@dataclass(frozen=True, slots=True)
class Result:
    """What one check found."""

    check: Check
    passed: bool
    status: int | None
    latency_ms: float
    request_id: str
    detail: str

    def line(self) -> str:
        status = str(self.status) if self.status is not None else "---"
        return (
            f"{'PASS' if self.passed else 'FAIL'}  {self.check.name:<22} {status:>3} "
            f"{self.latency_ms:>8.1f} ms  request-id={self.request_id}  {self.detail}"
        )


def _json(response: httpx.Response) -> dict[str, Any]:
    """The response's JSON object ({} when it is not one)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _unexpected(response: httpx.Response) -> str:
    """Why a response is not the expected one, in a few words."""
    if response.is_redirect:
        return f"redirected to {response.headers.get('location', '?')}"
    error = _json(response).get("error")
    if isinstance(error, dict) and "code" in error:
        return f"{error['code']}: {error.get('message', '')}"
    text = " ".join(response.text.split())
    return f"unexpected answer: {text[:120]!r}"


def verify_liveness(response: httpx.Response) -> Verdict:
    """200 and ``{"status": "ok"}``."""
    if response.status_code == 200 and _json(response).get("status") == "ok":
        return True, "status=ok"
    return False, _unexpected(response)


def _dependencies(checks: Any) -> str:
    if not isinstance(checks, dict):
        return "no dependency statuses"
    parts = []
    for name, check in checks.items():
        if not isinstance(check, dict):
            continue
        part = f"{name}={check.get('status')}"
        if "latency_ms" in check:
            part += f" ({check['latency_ms']} ms)"
        parts.append(part)
    return ", ".join(parts)


def readiness_verifier(*, allow_degraded: bool) -> Callable[[httpx.Response], Verdict]:
    """200 and ``ready`` (or ``degraded`` when allowed), with the dependency statuses."""
    accepted = {"ready", "degraded"} if allow_degraded else {"ready"}

    def verify(response: httpx.Response) -> Verdict:
        body = _json(response)
        error = body.get("error")
        if isinstance(error, dict) and "checks" in error:
            # 503: not_ready or draining, in the error shape.
            return False, f"{error.get('code')}: {_dependencies(error['checks'])}"
        if response.status_code != 200 or "status" not in body:
            return False, _unexpected(response)
        status = body["status"]
        return status in accepted, f"{status}: {_dependencies(body.get('checks'))}"

    return verify


def verify_job_listing(response: httpx.Response) -> Verdict:
    """200 and a page of jobs (``items`` a list)."""
    items = _json(response).get("items")
    if response.status_code == 200 and isinstance(items, list):
        return True, f"a page of {len(items)} job(s)"
    return False, _unexpected(response)


def version_verifier(expected: str) -> Callable[[httpx.Response], Verdict]:
    """200 and ``version`` equal to ``expected``."""

    def verify(response: httpx.Response) -> Verdict:
        if response.status_code in (401, 403):
            return False, (
                f"{_unexpected(response)} (/health/detailed needs an admin --token or a client "
                "inside OPS_ALLOWED_NETWORKS)"
            )
        version = _json(response).get("version")
        if response.status_code != 200 or version is None:
            return False, _unexpected(response)
        if version != expected:
            return False, f"version {version}, expected {expected}"
        return True, f"version={version}"

    return verify


def build_checks(options: argparse.Namespace) -> list[Check]:
    """The checks the options ask for, in order."""
    checks = [
        Check("/health", verify_liveness),
        Check("/health/ready", readiness_verifier(allow_degraded=options.allow_degraded)),
        Check("/api/jobs?page_size=1", verify_job_listing),
    ]
    if options.expect_version is not None:
        headers = {"Authorization": f"Bearer {options.token}"} if options.token else {}
        checks.append(Check("/health/detailed", version_verifier(options.expect_version), headers))
    return checks


def run_check(client: httpx.Client, check: Check, retries: int) -> Result:
    """Send the check's request (again after a connection error, up to ``retries`` times)."""
    request_id = f"smoke-{uuid.uuid4().hex[:16]}"
    headers = {"X-Request-ID": request_id, **check.headers}
    attempt = 0
    while True:
        attempt += 1
        started = time.perf_counter()
        try:
            response = client.get(check.path, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            if attempt <= retries:
                time.sleep(RETRY_PAUSE_SECONDS * attempt)
                continue
            reason = f"{type(exc).__name__} after {attempt} attempt(s): {exc}"
            return Result(check, False, None, _since(started), request_id, reason)
        except httpx.HTTPError as exc:
            reason = f"{type(exc).__name__}: {str(exc) or 'no answer in time'}"
            return Result(check, False, None, _since(started), request_id, reason)
        passed, detail = check.verify(response)
        # The id the app used (its own, had it refused ours).
        used = response.headers.get("x-request-id", request_id)
        return Result(check, passed, response.status_code, _since(started), used, detail)


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def run(options: argparse.Namespace) -> int:
    """The command; returns the exit status."""
    results = []
    timeout = httpx.Timeout(options.timeout)
    headers = {"User-Agent": "hiring-pro-smoke-check"}
    with httpx.Client(base_url=options.base_url, timeout=timeout, headers=headers) as client:
        for check in build_checks(options):
            result = run_check(client, check, options.retries)
            results.append(result)
            say(result.line())
    failed = [result for result in results if not result.passed]
    if failed:
        named = "; ".join(
            f"{result.check.name} ({result.status or 'no answer'}: {result.detail})"
            for result in failed
        )
        say(
            f"SMOKE CHECK FAILED for {options.base_url}: {len(failed)} of {len(results)} checks "
            f"failed: {named}",
            sys.stderr,
        )
        return EXIT_FAILED
    say(f"smoke check passed: {len(results)} checks against {options.base_url}")
    return EXIT_OK


def _base_url(value: str) -> str:
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise argparse.ArgumentTypeError(f"{value!r} is not an http(s):// URL")
    return value.rstrip("/")


def _seconds(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return number


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m ops.smoke_check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "base_url",
        type=_base_url,
        metavar="BASE_URL",
        help="the deployment's address, e.g. https://api.example.com",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="time allowed for each request (connect, send, answer); default: 10",
    )
    parser.add_argument(
        "--retries",
        type=int,
        choices=range(0, 11),
        default=2,
        metavar="N",
        help="retries of a request after a connection error, 0 to 10; default: 2",
    )
    parser.add_argument(
        "--allow-degraded",
        action="store_true",
        help="readiness 'degraded' (Redis down, or a connection pool full) passes too",
    )
    parser.add_argument(
        "--expect-version",
        metavar="VERSION",
        help="also check that /health/detailed reports this APP_VERSION",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("SMOKE_CHECK_TOKEN"),
        help="an admin's bearer token for /health/detailed (default: SMOKE_CHECK_TOKEN)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
