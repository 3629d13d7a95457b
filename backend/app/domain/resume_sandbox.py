"""Resume parsing in a child process with CPU, memory and wall-clock limits.

A small crafted file can ask pypdf for minutes of CPU and hundreds of MB, so parsing never runs
in a web or worker process (nor on its event loop, in any queue mode): each parse is a fresh
``python -m app.domain.resume_sandbox`` child that sets its own rlimits before it reads the file
from stdin, writes the result as JSON on stdout, and is killed at the wall-clock deadline. A fresh
process per file means a child killed at a limit leaves nothing broken for the next one; at most
``concurrency`` children run at a time per event loop (one loop per process in production).

Outcomes: a child that hits a limit (CPU, memory, time, nesting) or cannot read the file is a
permanent failure, :class:`ResumeParseError` with a sentence the candidate can act on; a child
that could not be started or died for another reason raises :class:`SandboxUnavailable`
(infrastructure: retried).
"""

import asyncio
import json
import logging
import os
import resource
import signal
import sys
import weakref
from dataclasses import dataclass
from pathlib import Path

from app.domain.resume_parser import ParsedResume, ResumeParseError, parse_resume

logger = logging.getLogger(__name__)

TOO_COMPLEX = "The file is too complex to read; upload a simpler PDF or a DOCX."
UNREADABLE = "The resume could not be read: the file is damaged or not a resume."
# The child's exit status when it ran out of memory or nesting depth (no output then).
EXIT_TOO_COMPLEX = 3
# Deaths that a file can cause: the CPU limit (SIGXCPU at the soft limit, SIGKILL at the hard
# one or at our deadline) and crashes from exhausted memory.
_LIMIT_SIGNALS = frozenset(
    {signal.SIGXCPU, signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS}
)
# The directory holding the `app` package: the child's working directory, so `-m` finds it.
_CODE_ROOT = Path(__file__).resolve().parents[2]
_MIB = 1024 * 1024


class SandboxUnavailable(Exception):
    """The parser process could not be run or died for a reason unrelated to the file."""


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """What one parse may use."""

    cpu_seconds: int
    memory_mb: int
    timeout_seconds: float
    concurrency: int


_slots: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]" = (
    weakref.WeakKeyDictionary()
)


def _slots_for(limits: SandboxLimits) -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    slots = _slots.get(loop)
    if slots is None:
        slots = _slots[loop] = asyncio.Semaphore(limits.concurrency)
    return slots


async def parse_in_sandbox(data: bytes, extension: str, limits: SandboxLimits) -> ParsedResume:
    """:func:`parse_resume` in a limited child process.

    Raises ResumeParseError (permanent, a sentence for the candidate) or SandboxUnavailable.
    """
    async with _slots_for(limits):
        returncode, stdout = await _run_child(data, extension, limits)
    if returncode == 0:
        return _decode(stdout)
    if returncode == EXIT_TOO_COMPLEX or -returncode in _LIMIT_SIGNALS:
        logger.warning("resume parser stopped at a limit (exit status %d)", returncode)
        raise ResumeParseError(TOO_COMPLEX)
    raise SandboxUnavailable(f"the resume parser exited with status {returncode}")


async def _run_child(data: bytes, extension: str, limits: SandboxLimits) -> tuple[int, bytes]:
    """Run the child on ``data``: its exit status (-SIGKILL past the deadline) and stdout."""
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __name__,
            extension,
            str(limits.cpu_seconds),
            str(limits.memory_mb),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            cwd=_CODE_ROOT,
            # No secrets from our environment; its own session, so signals meant for the
            # server's process group (Ctrl-C, a supervisor) are not taken for a parse failure.
            env={"PYTHONDONTWRITEBYTECODE": "1", "LC_ALL": "C.UTF-8"},
            start_new_session=True,
        )
    except OSError as exc:
        raise SandboxUnavailable("the resume parser could not be started") from exc
    try:
        async with asyncio.timeout(limits.timeout_seconds):
            stdout, _ = await process.communicate(data)
    except TimeoutError:
        logger.warning("resume parser killed after %.1f s", limits.timeout_seconds)
        return -signal.SIGKILL, b""
    finally:
        # Past the deadline, or the job was cancelled: the child must not outlive the parse.
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stdout


def _decode(stdout: bytes) -> ParsedResume:
    try:
        result = json.loads(stdout)
        if "error" in result:
            raise ResumeParseError(str(result["error"]))
        return ParsedResume(
            text=str(result["text"]),
            skills=[str(skill) for skill in result["skills"]],
            experience_years=result["experience_years"],
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise SandboxUnavailable("the resume parser answered something unexpected") from exc


def _limit_self(cpu_seconds: int, memory_mb: int) -> None:
    """Cap this process before it touches the file (CPU counts from process start)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(usage.ru_utime + usage.ru_stime) + cpu_seconds
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb * _MIB, memory_mb * _MIB))
    # SIGXCPU would otherwise dump a core the size of the address space.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


def _child_main(argv: list[str]) -> int:
    """The child: limits, then the file from stdin, then one JSON object on stdout."""
    extension, cpu_seconds, memory_mb = argv[0], int(argv[1]), int(argv[2])
    _limit_self(cpu_seconds, memory_mb)
    data = sys.stdin.buffer.read()
    try:
        parsed = parse_resume(data, extension)
        result: dict[str, object] = {
            "text": parsed.text,
            "skills": parsed.skills,
            "experience_years": parsed.experience_years,
        }
    except (MemoryError, RecursionError):
        os._exit(EXIT_TOO_COMPLEX)  # no room left to report anything else safely
    except ResumeParseError as exc:
        result = {"error": str(exc)}
    except Exception:
        # Anything else the parsers raise on this input will recur on every retry.
        result = {"error": UNREADABLE}
    sys.stdout.buffer.write(json.dumps(result).encode())
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
