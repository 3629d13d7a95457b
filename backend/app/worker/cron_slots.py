"""The schedule slot a cron delivery belongs to, when the daemon does not say.

EB's sqsd names the scheduled time of a periodic task (X-Aws-Sqsd-Scheduled-At); other daemons,
e.g. simple-sqsd, POST the task's URL with no headers at all. A delivery without a usable time
belongs to the latest time at or before its arrival that its task is scheduled for in cron.yaml
(UTC, as EB reads it), so a second daemon or a retry in the same slot finds the slot already
run. Without cron.yaml, or without the task in it, the slot is the minute the delivery arrived
in: one run per task and minute.
"""

import functools
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from croniter import croniter

from app.services.job_queue import task_path

logger = logging.getLogger(__name__)

# EB's cron.yaml takes the five-field crontab format (minute resolution).
_CRON_FIELDS = 5


def slot_of(task: str, arrived_at: datetime, cron_file: Path) -> datetime:
    """The slot (UTC) of a delivery of cron ``task`` that arrived at ``arrived_at``."""
    minute = arrived_at.astimezone(UTC).replace(second=0, microsecond=0)
    schedule = schedules(cron_file).get(task_path(task))
    if schedule is None:
        return minute
    # The latest fire time before the next minute is the latest at or before this one.
    fired: datetime = croniter(schedule, minute + timedelta(minutes=1)).get_prev(datetime)
    return fired.astimezone(UTC)


@functools.lru_cache(maxsize=8)
def schedules(cron_file: Path) -> dict[str, str]:
    """cron.yaml's schedules by task URL, read once per process; empty (and logged once) when
    the file is absent or unusable."""
    try:
        document = yaml.safe_load(cron_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        logger.info("no %s: cron slots without a scheduled time are minutes", cron_file)
        return {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        logger.warning(
            "%s is unreadable (%s): cron slots without a scheduled time are minutes",
            cron_file,
            type(exc).__name__,
        )
        return {}
    entries = document.get("cron") if isinstance(document, dict) else None
    found: dict[str, str] = {}
    for entry in entries if isinstance(entries, list) else []:
        url = entry.get("url") if isinstance(entry, dict) else None
        schedule = entry.get("schedule") if isinstance(entry, dict) else None
        if not (isinstance(url, str) and isinstance(schedule, str)):
            continue
        if len(schedule.split()) == _CRON_FIELDS and croniter.is_valid(schedule):
            found[url] = schedule
        else:
            logger.warning("%s: %s has an invalid schedule %r", cron_file, url, schedule[:100])
    return found
