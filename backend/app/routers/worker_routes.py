"""Routes the EB SQS daemon (sqsd) POSTs messages and cron tasks to (worker app only).

200 means done: sqsd deletes the message. Anything else means retry. Requests are accepted
only from the local daemon: the connection and every proxy hop (nginx's X-Forwarded-For and
X-Real-IP) must be loopback. A queued message's body names its task (EB posts all of a queue's
messages to one configured path); a cron task's empty body runs the task of its route.
"""

import ipaddress

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from app.deps import get_app_settings, resources_of
from app.error_handlers import error_response
from app.errors import BadRequest, Forbidden
from app.services.job_queue import Delivery, Outcome
from app.worker.delivery import process

MSGID_HEADER = "x-aws-sqsd-msgid"


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip()).is_loopback
    except ValueError:
        return False


def require_local_daemon(request: Request) -> None:
    """403 unless the request comes from this host (WORKER_ALLOW_REMOTE lifts the check)."""
    if get_app_settings(request).worker_allow_remote:
        return
    hops = [request.client.host if request.client else ""]
    hops += [hop for hop in request.headers.get("x-forwarded-for", "").split(",") if hop.strip()]
    if "x-real-ip" in request.headers:
        hops.append(request.headers["x-real-ip"])
    if not all(_is_loopback(hop) for hop in hops):
        raise Forbidden("Worker routes accept requests from the local SQS daemon only.")


router = APIRouter(prefix="/worker", tags=["worker"], dependencies=[Depends(require_local_daemon)])


def _int(value: str | None, default: int) -> int:
    return int(value) if value is not None and value.isdigit() else default


async def _deliver(request: Request, task: str) -> Response:
    headers = request.headers
    message_id = headers.get(MSGID_HEADER)
    if not message_id:
        raise BadRequest("X-Aws-Sqsd-Msgid is missing.", code="missing_message_id")
    # Unknown headers (newer sqsd versions, X-Aws-Sqsd-Attr-*) are ignored.
    delivery = Delivery(
        message_id=message_id,
        body=await request.body(),
        route_task=task,
        receive_count=_int(headers.get("x-aws-sqsd-receive-count"), 1),
        cron_task_name=headers.get("x-aws-sqsd-taskname"),
        scheduled_at=headers.get("x-aws-sqsd-scheduled-at"),
    )
    outcome = await process(resources_of(request.app).worker_context(), delivery)
    if outcome is Outcome.RETRY:
        return error_response(503, "job_retry", "The job failed and will be retried.")
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
