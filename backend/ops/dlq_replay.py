"""Replay the worker queues' dead-letter queues: ``python -m ops.dlq_replay --queue all``.

Each message of a dead-letter queue (DLQ) is sent back to its source queue with its body and
its message attributes, then deleted from the DLQ. The attributes matter: sqsd POSTs a message
to the route in its ``beanstalk.sqsd.path`` attribute (app/services/sqs_queue.py), so a copy
without it would go to the worker's default path instead of ``/worker/<task>``.

``--dry-run`` lists the messages instead (message id, task, job id, receive count, whether the
ledger has it already, the first failure the worker recorded in ``failed_jobs``) and changes
nothing: every listed message is made visible again at the end. SQS cannot show a message
without receiving it, so a listing adds one to each message's receive count (which would matter
only if the DLQ had a redrive policy of its own).

Idempotent by DLQ message id. A durable ledger, the table ``dlq_replays``, holds the id of
every DLQ message whose copy was sent. For each batch of up to 10 messages the order is:

1. check the ledger: a message found there was sent before, and is only deleted (step 4);
2. send the others to the source queue;
3. record the sent ones in the ledger (one transaction);
4. delete the sent and the already-sent ones from the DLQ.

What a run that dies (crash, kill, lost connection, database down) leaves behind:

* before step 2: nothing changed; the messages reappear in the DLQ after the visibility timeout.
* between 2 and 3: copies are on the source queue but not in the ledger, so the next run sends
  them again: the one window in which a job can be queued twice. The worker covers it: a job
  commits its effects together with its ``processed_jobs`` row, keyed ``job:<job id>``, and both
  copies carry the same body, so the second copy finds the row and does nothing
  (app/worker/delivery.py). On a FIFO queue SQS drops the second copy itself within its
  5-minute deduplication interval (the copy's deduplication id is derived from the DLQ id).
* between 3 and 4: recorded but not deleted: the next run finds the ledger row and only deletes.
* after step 4: done.

Recording before sending would be worse: a run dying between the two would leave a recorded,
never-sent message that the next run deletes, and the job would be lost.

Two runs at once: a receive hides its messages from every other consumer for
``--visibility-timeout`` seconds, so each message is handled by one run. If a run stalls longer
than that on one batch, the other may take the same message: both send (the worker's
deduplication again), the ledger keeps one row, both delete.

A message whose send fails stays in the DLQ, hidden until its visibility timeout ends (so this
run does not take it again), and is counted as failed. A message sent and recorded whose delete
fails is reported too; the next run deletes it without sending it again. A FIFO DLQ hands out
a message group's next messages only once the ones received are deleted or visible again: a dry
run lists each group's first batch, and a group whose send failed waits for its timeout.

Queues: ``--queue`` takes a task (resume-parse, vector-index, email: the queue its SQS_QUEUE_*
setting names), ``all`` (each of those queues once) or a queue name or URL. The DLQ is the
target of the source queue's RedrivePolicy (``deadLetterTargetArn``) unless ``--dlq`` names it.
A DLQ shared by several source queues is replayed once, into the first of them; its messages
still reach their routes, since the path attribute travels with them.

Exit status: 0 when every message taken was replayed (or there was none), 1 when something
failed or the run stopped midway, 2 for bad arguments or setup (queue, DLQ, database).
Configuration is the app's (DATABASE_URL, AWS_REGION, AWS_ENDPOINT_URL, SQS_QUEUE_*,
SQS_MAX_ATTEMPTS, SQS_TIMEOUT_SECONDS); AWS credentials come from the usual chain and need
sqs:GetQueueUrl and sqs:GetQueueAttributes, sqs:ReceiveMessage, sqs:DeleteMessage and
sqs:ChangeMessageVisibility on the DLQ, and sqs:SendMessage on the source queue.
"""

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from app.config import Settings, get_settings
from app.services.job_queue import QUEUED_TASKS
from app.services.sqs_queue import queue_name
from ops.console import say
from ops.dead_letter_queue import (
    BATCH_LIMIT,
    DeadLetter,
    DeadLetterQueues,
    QueueError,
    Route,
)
from ops.replay_ledger import LedgerUnavailable, Replay, ReplayLedger

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


@dataclass
class Summary:
    """What a run did, message by message counted."""

    replayed: int = 0
    already_replayed: int = 0
    failed: int = 0
    undeleted: int = 0
    listed: int = 0

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.undeleted == 0

    def line(self, *, dry_run: bool) -> str:
        if dry_run:
            return (
                f"dry run: {self.listed} messages listed, would replay {self.replayed}, "
                f"would only delete {self.already_replayed} (already replayed); "
                "nothing was sent or deleted"
            )
        text = (
            f"summary: replayed {self.replayed}, skipped (already replayed) "
            f"{self.already_replayed}, failed {self.failed}"
        )
        if self.undeleted:
            text += f", replayed but still in the DLQ {self.undeleted}"
        return text


def source_queues(settings: Settings, queue: str) -> list[str]:
    """The source queue names (or URL) that ``--queue`` means."""
    if queue == "all":
        return list(dict.fromkeys(queue_name(settings, task) for task in QUEUED_TASKS))
    if queue in QUEUED_TASKS:
        return [queue_name(settings, queue)]
    return [queue]


def _describe(letter: DeadLetter) -> str:
    return f"{letter.message_id}  task={letter.task}  job={letter.job_id or '-'}"


async def _replay_batch(
    route: Route,
    letters: list[DeadLetter],
    sqs: DeadLetterQueues,
    ledger: ReplayLedger,
    summary: Summary,
) -> None:
    """Steps 1 to 4 of the module docstring for one received batch."""
    done = await ledger.replayed(letters)
    fresh = [letter for letter in letters if letter.message_id not in done]
    sent, failed = await sqs.send(route, fresh)
    await ledger.record(
        route,
        [Replay(letter, sent[letter.message_id]) for letter in fresh if letter.message_id in sent],
    )
    finished = [
        letter for letter in letters if letter.message_id in done or letter.message_id in sent
    ]
    undeleted = await sqs.delete(route, finished)
    for letter in letters:
        message_id = letter.message_id
        if message_id in failed:
            summary.failed += 1
            say(f"FAILED            {_describe(letter)}  {failed[message_id]}; left in the DLQ")
            continue
        if message_id in done:
            summary.already_replayed += 1
            say(f"already replayed  {_describe(letter)}  (only deleted from the DLQ)")
        else:
            summary.replayed += 1
            say(f"replayed          {_describe(letter)}  -> {sent[message_id]}")
        if message_id in undeleted:
            summary.undeleted += 1
            say(
                f"NOT DELETED       {_describe(letter)}  {undeleted[message_id]}; "
                "the next run deletes it without sending it again"
            )


async def _list_batch(
    letters: list[DeadLetter], ledger: ReplayLedger | None, summary: Summary
) -> None:
    """One received batch as dry-run rows."""
    done: set[str] | None = None
    reasons: dict[str, str] = {}
    if ledger is not None:
        done = await ledger.replayed(letters)
        reasons = await ledger.first_failures(letters)
    for letter in letters:
        summary.listed += 1
        if done is None:
            action = "?"
        elif letter.message_id in done:
            action = "delete only"
            summary.already_replayed += 1
        else:
            action = "replay"
            summary.replayed += 1
        reason = reasons.get(letter.message_id, "-" if ledger is not None else "?")
        say(
            f"{letter.message_id:<36}  {letter.task:<16}  {letter.job_id or '-':<32}  "
            f"{letter.receive_count:>8}  {action:<11}  {reason}"
        )


async def _handle_route(
    route: Route,
    sqs: DeadLetterQueues,
    ledger: ReplayLedger | None,
    options: argparse.Namespace,
    limit: int | None,
    summary: Summary,
) -> int:
    """Replay (or list) up to ``limit`` messages of the route's DLQ; how many were taken."""
    taken = 0
    held: list[DeadLetter] = []
    try:
        while limit is None or taken < limit:
            want = BATCH_LIMIT if limit is None else min(BATCH_LIMIT, limit - taken)
            letters = await sqs.receive(route, want, options.visibility_timeout)
            if not letters:
                break
            taken += len(letters)
            if options.dry_run:
                held.extend(letters)
                await _list_batch(letters, ledger, summary)
            else:
                assert ledger is not None
                await _replay_batch(route, letters, sqs, ledger, summary)
    finally:
        if held:
            unreleased = await sqs.release(route, held)
            if unreleased:
                say(
                    f"note: {len(unreleased)} listed messages stay hidden until their "
                    f"visibility timeout ({options.visibility_timeout} s) ends",
                    sys.stderr,
                )
    return taken


async def _routes(sqs: DeadLetterQueues, names: list[str], dlq: str | None) -> list[Route]:
    """One route per distinct DLQ (the first source queue naming it)."""
    routes: dict[str, Route] = {}
    for name in names:
        route = await sqs.route(name, dlq)
        first = routes.setdefault(route.dlq_url, route)
        if first is not route:
            say(
                f"note: dead-letter queue {route.dlq_name} also serves {route.source_name}; "
                f"its messages go back to {first.source_name}",
                sys.stderr,
            )
    return list(routes.values())


async def _open_ledger(settings: Settings, dry_run: bool) -> ReplayLedger | None:
    """The ledger; for a dry run without a usable database, None (listing without it)."""
    ledger = ReplayLedger(settings)
    try:
        await ledger.check()
    except LedgerUnavailable as exc:
        await ledger.close()
        if not dry_run:
            raise
        say(f"note: {exc}; listing without the ledger and failure reasons", sys.stderr)
        return None
    return ledger


async def run(options: argparse.Namespace, settings: Settings) -> int:
    """The command; returns the exit status."""
    names = source_queues(settings, options.queue)
    async with DeadLetterQueues(settings, wait_seconds=options.wait_time) as sqs:
        try:
            routes = await _routes(sqs, names, options.dlq)
            ledger = await _open_ledger(settings, options.dry_run)
        except (QueueError, LedgerUnavailable) as exc:
            say(f"dlq_replay: {exc}", sys.stderr)
            return EXIT_USAGE
        summary = Summary()
        remaining: int | None = options.max
        try:
            for route in routes:
                say(f"{route.source_name} <- dead-letter queue {route.dlq_name}")
                if options.dry_run:
                    say(
                        f"{'MESSAGE ID':<36}  {'TASK':<16}  {'JOB ID':<32}  {'RECEIVES':>8}  "
                        f"{'ACTION':<11}  FIRST FAILURE"
                    )
                taken = await _handle_route(route, sqs, ledger, options, remaining, summary)
                if remaining is not None:
                    remaining -= taken
                    if remaining <= 0:
                        break
        except (QueueError, LedgerUnavailable) as exc:
            say(summary.line(dry_run=options.dry_run))
            say(
                f"dlq_replay: STOPPED: {exc}. The batch in hand reappears in the DLQ after the "
                "visibility timeout: run again to finish (a message sent but not recorded is "
                "sent again, and the worker runs its job once)",
                sys.stderr,
            )
            return EXIT_FAILED
        finally:
            if ledger is not None:
                await ledger.close()
    say(summary.line(dry_run=options.dry_run))
    if not summary.ok:
        say(
            f"dlq_replay: FAILED: {summary.failed} messages not replayed (left in the DLQ), "
            f"{summary.undeleted} replayed but not deleted; see the lines above",
            sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m ops.dlq_replay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--queue",
        required=True,
        help="the source queue: resume-parse, vector-index or email (the queue its SQS_QUEUE_* "
        "setting names), all (each of those once), or a queue name or URL",
    )
    parser.add_argument(
        "--dlq",
        help="the dead-letter queue (name or URL); default: the target of the source queue's "
        "RedrivePolicy. Not with --queue all",
    )
    parser.add_argument(
        "--max",
        type=_positive,
        metavar="N",
        help="take at most N messages from the dead-letter queues in all (default: every one)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="list the messages (id, task, job id, receive count, action, first failure) and "
        "change nothing",
    )
    parser.add_argument(
        "--visibility-timeout",
        type=_positive,
        default=120,
        metavar="SECONDS",
        help="how long a received message stays hidden from other consumers, a concurrent run "
        "included, while this run handles it; a message whose send failed reappears in the "
        "DLQ after it (default: 120)",
    )
    parser.add_argument(
        "--wait-time",
        type=int,
        choices=range(1, 21),
        default=2,
        metavar="SECONDS",
        help="long-poll wait of each receive, 1 to 20; a DLQ is done at the first receive "
        "that finds nothing (default: 2)",
    )
    options = parser.parse_args(argv)
    if options.dlq is not None and options.queue == "all":
        parser.error("--dlq names the dead-letter queue of one source queue, not of --queue all")
    return options


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    options = parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as exc:
        say(f"dlq_replay: invalid settings: {exc}", sys.stderr)
        return EXIT_USAGE
    try:
        return asyncio.run(run(options, settings))
    except KeyboardInterrupt:
        say("dlq_replay: interrupted; run again to finish (see --help: crash safety)", sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
