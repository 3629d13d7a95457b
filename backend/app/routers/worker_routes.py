"""Routes the EB SQS daemon (sqsd) POSTs messages and cron tasks to (worker app only).

200 means done: sqsd deletes the message. Anything else means retry: 503 ``job_retry`` when the
job failed, 504 ``job_timeout`` when it ran out of its time budget (WORKER_JOB_TIMEOUT_SECONDS).
Requests are accepted only from the local daemon: the connection and every proxy hop (nginx's
X-Forwarded-For and X-Real-IP) must be loopback. A queued message's body names its task (EB
posts all of a queue's messages to one configured path) and needs sqsd's message id; a POST to
a cron task's route runs that task, with or without a message id (daemons such as simple-sqsd
send none), once per schedule slot (app.worker.delivery.decode).
"""

from fastapi import APIRouter, Depends, Request
from starlette.datastructures import Headers
from starlette.responses import Response

from app.deps import resources_of, settings_of
from app.error_handlers import error_response
from app.errors import BadRequest, Forbidden
from app.middleware.client_ip import is_local_request
from app.services.job_queue import CRON_TASKS, Delivery, Outcome
from app.worker.delivery import process

MSGID_HEADER = "x-aws-sqsd-msgid"
# Retry-After of a failed or timed-out job. sqsd itself ignores it and redelivers after its
# ErrorVisibilityTimeout (60 s in .ebextensions/worker/10-worker-tier.config); it tells any
# other caller the same.
RETRY_AFTER = {"Retry-After": "60"}


async def require_local_daemon(request: Request) -> None:
    """403 unless the request comes from this host (WORKER_ALLOW_REMOTE lifts the check)."""
    if settings_of(request.app).worker_allow_remote:
        return
    if not is_local_request(request.scope):
        raise Forbidden("Worker routes accept requests from the local SQS daemon only.")


router = APIRouter(prefix="/worker", tags=["worker"], dependencies=[Depends(require_local_daemon)])


# What header values may be: they land in processed_jobs / failed_jobs columns (message ids in
# String(255) keys with a prefix, receive counts in a 32-bit INTEGER), so anything else is a 400.
MAX_MESSAGE_ID_LENGTH = 200
MAX_HEADER_TEXT_LENGTH = 100
MAX_RECEIVE_COUNT = 2**31 - 1


def _text(headers: Headers, name: str, limit: int) -> str | None:
    value = headers.get(name)
    if value is not None and not (len(value) <= limit and value.isascii() and value.isprintable()):
        raise BadRequest(
            f"{name} must be at most {limit} printable ASCII characters.", code="invalid_header"
        )
    return value


def _int(value: str | None, default: int) -> int:
    if value is None:
        return default
    # Only ASCII digits: str.isdigit also accepts characters such as "²" that int() refuses.
    digits = value.isascii() and value.isdigit() and len(value) <= 10
    if not (digits and 1 <= int(value) <= MAX_RECEIVE_COUNT):
        raise BadRequest("X-Aws-Sqsd-Receive-Count is not a valid count.", code="invalid_header")
    return int(value)


async def _deliver(request: Request, task: str) -> Response:
    headers = request.headers
    message_id = _text(headers, MSGID_HEADER, MAX_MESSAGE_ID_LENGTH) or None
    if message_id is None and task not in CRON_TASKS:
        raise BadRequest("X-Aws-Sqsd-Msgid is missing.", code="missing_message_id")
    # Unknown headers (newer sqsd versions, X-Aws-Sqsd-Attr-*) are ignored.
    delivery = Delivery(
        message_id=message_id,
        body=await request.body(),
        route_task=task,
        receive_count=_int(headers.get("x-aws-sqsd-receive-count"), 1),
        cron_task_name=_text(headers, "x-aws-sqsd-taskname", MAX_HEADER_TEXT_LENGTH),
        scheduled_at=_text(headers, "x-aws-sqsd-scheduled-at", MAX_HEADER_TEXT_LENGTH),
    )
    outcome = await process(resources_of(request.app).worker_context(), delivery)
    if outcome is Outcome.TIMED_OUT:
        message = "The job ran out of time and will be retried."
        return error_response(504, "job_timeout", message, headers=RETRY_AFTER)
    if not outcome.acknowledged:
        message = "The job failed and will be retried."
        return error_response(503, "job_retry", message, headers=RETRY_AFTER)
    return Response(
        f'{{"status":"{outcome.value}"}}', status_code=200, media_type="application/json"
    )


@router.post("/resume-parse")
async def resume_parse(request: Request) -> Response:
    """Parse an uploaded resume and update the candidate's profile."""
    return await _deliver(request, "resume-parse")


@router.post("/vector-index")
async def vector_index(request: Request) -> Response:
    """Index a candidate for semantic search."""
    return await _deliver(request, "vector-index")


@router.post("/email")
async def email(request: Request) -> Response:
    """Send an email (SMTP) or log it to the outbox."""
    return await _deliver(request, "email")


@router.post("/cleanup-sessions")
async def cleanup_sessions(request: Request) -> Response:
    """Cron: abandon expired test attempts and delete old abandoned ones."""
    return await _deliver(request, "cleanup-sessions")


@router.post("/generate-reports")
async def generate_reports(request: Request) -> Response:
    """Cron: write the previous UTC day's aggregates."""
    return await _deliver(request, "generate-reports")
