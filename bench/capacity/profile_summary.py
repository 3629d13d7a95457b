"""Where one app worker's time goes: py-spy's collapsed stacks, summed by named cost.

Usage: profile_summary.py PROFILE.txt --meta profile.json [--svg OUT.svg]
PROFILE.txt is `py-spy record --threads --format raw` output (one "stack count" line per
distinct stack, frames "function (file:line)" from the root to the leaf, the thread first);
profile.json (profile_worker.py) has the wall time and each thread's CPU seconds over the
recording (the kernel's count). py-spy counts a thread while it is runnable, which on a busy box
includes waiting for a core, so its samples give the split and the kernel the amount: each
thread's samples share that thread's CPU time. Figures are shares of the worker's CPU and cores.

Attribution, explicit (COSTS and PLUMBING below):
- exclusive: each sample goes to ONE cost: the innermost frame of its stack that has a named
  cost decides (a frame matching several takes the first listed). The plumbing that everything
  runs on (the event loop, the thread pool, the server) counts only for samples with no other
  named frame. So pydantic validating inside a route counts as pydantic, the Redis call the
  rate limiter makes as redis-py (asyncio's stream write under it too), FastAPI's routing under
  a middleware as FastAPI, and a middleware's own code as that middleware. These add up to 100%.
- inclusive: a sample counts for every cost with a frame anywhere in its stack (the rate
  limiter's then includes its Redis round trip; a middleware's everything it wraps). These add
  up to more than 100%.
Idle: the main thread's (the event loop's) idle share is 1 - its CPU time / the wall time.
py-spy runs with --nonblocking (profile_worker.py): its blocking mode counted idle threads as
running here. The top 25 leaf functions (self time) follow, and --svg draws every sample
(unweighted) as a flame graph, the threads as roots at the top.
"""

import argparse
import html
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


@dataclass(frozen=True)
class Frame:
    """One frame of a stack: its function and file (py-spy's short path), line dropped."""

    function: str
    file: str

    @staticmethod
    def parse(text: str) -> "Frame":
        match = FRAME.match(text)
        return Frame(match["function"], match["file"]) if match else Frame(text, "")

    def __str__(self) -> str:
        return f"{self.function} ({self.file})"


Matcher = Callable[[Frame], bool]


def _in(*prefixes: str) -> Matcher:
    return lambda frame: frame.file.startswith(prefixes)


def _in_or_named(prefixes: tuple[str, ...], file: str, *functions: str) -> Matcher:
    """Frames in files under `prefixes`, or the named functions of `file`."""
    return lambda frame: (
        frame.file.startswith(prefixes) or (frame.file == file and frame.function in functions)
    )


# For one frame the first cost listed that matches it wins. Files are as py-spy prints them:
# relative to site-packages, the standard library or backend/.
COSTS: list[tuple[str, Matcher]] = [
    ("argon2 (password hashing)", _in("argon2/", "_argon2_cffi_bindings/")),
    (
        "JWT verification (PyJWT, bearer identity, app.security)",
        _in("jwt/", "app/middleware/bearer_identity.py", "app/security.py"),
    ),
    ("token versions", _in("app/domain/token_versions.py")),
    (
        "concurrency limit",
        _in("app/middleware/concurrency_limit.py", "app/services/ratelimit/concurrency.py"),
    ),
    ("rate limiter", _in("app/services/ratelimit/", "app/middleware/rate_limiter.py")),
    ("load shedder / overload", _in("app/services/overload/", "app/middleware/load_shedder.py")),
    ("cache", _in("app/services/cache/", "app/http_cache.py", "app/domain/caching.py")),
    (
        "access logging",
        _in("logging/", "app/observability/logging.py", "app/observability/context.py"),
    ),
    ("Prometheus", _in("prometheus_client/", "app/observability/metrics.py")),
    (
        "pydantic validation / serialisation",
        _in_or_named(
            ("pydantic/", "pydantic_core/", "fastapi/encoders.py", "fastapi/_compat"),
            "fastapi/routing.py",
            "serialize_response",
        ),
    ),
    ("redis-py", _in("redis/")),
    ("asyncpg", _in("asyncpg/")),
    ("SQLAlchemy", _in("sqlalchemy/")),
    ("uvicorn HTTP (httptools, h11, protocols)", _in("uvicorn/protocols/", "httptools/", "h11/")),
    *(
        (f"middleware: {name}", _in(f"app/middleware/{name}.py"))
        for name in ("request_context", "shutdown", "body_limit", "cache_invalidation")
    ),
    ("middleware: other", _in("app/middleware/")),
    (
        "FastAPI / Starlette routing and dependencies",
        lambda frame: (
            _in("fastapi/", "starlette/")(frame) and frame.file != "starlette/concurrency.py"
        ),
    ),
    ("app: routes, domain, other", _in("app/")),
]
PLUMBING: list[tuple[str, Matcher]] = [
    (
        "anyio thread pool / run_in_threadpool",
        _in("anyio/", "starlette/concurrency.py", "concurrent/futures/", "threading.py"),
    ),
    ("asyncio event loop / uvloop (with uvloop's C code)", _in("asyncio/", "uvloop/")),
    # The server's frames under which the event loop runs (the root of every stack).
    ("uvicorn / gunicorn (other)", _in("uvicorn/", "uvicorn_worker/", "gunicorn/")),
]
OTHER = "other (stdlib, other libraries)"


def _match(frame: Frame, costs: list[tuple[str, Matcher]]) -> str | None:
    return next((name for name, matches in costs if matches(frame)), None)


def cost_of(frame: Frame) -> str | None:
    """The named cost of one frame, or None."""
    return _match(frame, COSTS) or _match(frame, PLUMBING)


def owner(frames: list[Frame]) -> str:
    """The one cost a sample counts for: its innermost named frame's, plumbing last."""
    for costs in (COSTS, PLUMBING):
        for frame in reversed(frames):
            if name := _match(frame, costs):
                return name
    return OTHER


def middleware_of(frame: Frame) -> str | None:
    """The app middleware module of a frame (app/middleware/<name>.py), if any."""
    if frame.file.startswith("app/middleware/"):
        return frame.file.removeprefix("app/middleware/").removesuffix(".py")
    return None


def thread_of(label: str) -> tuple[int | None, str]:
    """'thread (1234): AnyIO worker thread' -> (1234, 'AnyIO worker thread'); numbering dropped
    from the name so that a pool's threads make one group."""
    match = re.match(r"thread \((\d+)\): (.*)", label)
    if match is None:
        return None, label or "?"
    return int(match[1]), re.sub(r"[-_ ]?\d+(_\d+)?$", "", match[2])


@dataclass(frozen=True)
class Sample:
    """One distinct stack of one thread, and how many samples had it."""

    tid: int | None
    thread: str
    frames: list[Frame]
    count: int


def read_profile(path: Path) -> list[Sample]:
    """py-spy's raw output."""
    samples = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        text, count = line.rsplit(" ", 1)
        parts = text.split(";")
        tid, thread = thread_of(parts.pop(0)) if parts[0].startswith("thread (") else (None, "?")
        samples.append(Sample(tid, thread, [Frame.parse(part) for part in parts], int(count)))
    return samples


def weights(samples: list[Sample], thread_cpu: dict[int, float]) -> dict[int | None, float]:
    """CPU seconds per sample of each thread: its CPU time (the kernel's) over its samples.

    py-spy counts a thread as running while it is runnable, waiting for a core included, so on
    a busy box the samples overstate CPU; within one thread they still split it fairly.
    """
    counts: Counter[int | None] = Counter()
    for sample in samples:
        counts[sample.tid] += sample.count
    return {
        tid: (thread_cpu.get(tid, 0.0) if tid is not None else 0.0) / count
        for tid, count in counts.items()
    }


def summarise(samples: list[Sample], weight: dict[int | None, float], wall: float) -> list[str]:
    """The report: by thread, by named cost, under each middleware, the top leaf functions.

    Each sample weighs its thread's CPU seconds per sample (`weight`); figures are shares of
    the CPU seen and cores (CPU seconds / `wall`).
    """
    threads: Counter[str] = Counter()
    exclusive: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    under: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for sample in samples:
        cpu = sample.count * weight.get(sample.tid, 0.0)
        threads[sample.thread] += cpu
        exclusive[owner(sample.frames)] += cpu
        for cost in {cost for frame in sample.frames if (cost := cost_of(frame))}:
            inclusive[cost] += cpu
        for name in {name for frame in sample.frames if (name := middleware_of(frame))}:
            under[name] += cpu
        if sample.frames:
            leaves[str(sample.frames[-1])] += cpu
    total = sum(threads.values()) or 1.0

    def share(cpu: float) -> str:
        return f"{cpu / total:>6.1%} {cpu / wall:>5.2f}"

    lines = ["By thread (share of the worker's CPU, cores):"]
    lines += [f"  {share(cpu)}  {name}" for name, cpu in threads.most_common()]
    lines.append(f"  the main thread (the event loop) idle: {1 - threads['MainThread'] / wall:.1%}")
    lines.append("By named cost (share, cores: exclusive, then inclusive):")
    for name, cpu in exclusive.most_common():
        both = f"{share(cpu)}  {share(inclusive[name]) if name != OTHER else '':>12}"
        lines.append(f"  {both}  {name}")
    lines.append(
        "Under each app middleware (inclusive: all it wraps; its own code is its row above):"
    )
    lines += [f"  {share(cpu)}  {name}" for name, cpu in under.most_common()]
    lines.append("Top 25 leaf functions (self time):")
    lines += [f"  {share(cpu)}  {name}" for name, cpu in leaves.most_common(25)]
    return lines


def write_svg(samples: list[Sample], path: Path, width: int = 1400, row: int = 16) -> None:
    """A flame graph of all samples (the threads as roots, the root at the top)."""
    counts: Counter[tuple[str, ...]] = Counter()
    for sample in samples:
        stack = (sample.thread, *map(str, sample.frames))
        for depth in range(1, len(stack) + 1):
            counts[stack[:depth]] += sample.count
    children: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for stack in sorted(counts):
        children.setdefault(stack[:-1], []).append(stack)
    total = sum(counts[root] for root in children.get((), [])) or 1
    depth = max((len(stack) for stack in counts), default=1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{depth * row}" '
        'font-family="monospace" font-size="11">'
    ]

    def draw(stack: tuple[str, ...], x: float) -> None:
        w = counts[stack] / total * width
        y = (len(stack) - 1) * row
        label = stack[-1]
        cost = cost_of(Frame.parse(label)) or OTHER
        hue = sum(map(ord, cost)) % 360
        title = html.escape(
            f"{label}: {counts[stack]} samples ({counts[stack] / total:.1%}), {cost}"
        )
        parts.append(
            f'<g><title>{title}</title><rect x="{x:.2f}" y="{y}" width="{w:.2f}" '
            f'height="{row - 1}" fill="hsl({hue},65%,70%)"/>'
        )
        if w > 40:
            parts.append(
                f'<text x="{x + 2:.2f}" y="{y + row - 4}">{html.escape(label[: int(w / 7)])}</text>'
            )
        parts.append("</g>")
        for child in children.get(stack, []):
            draw(child, x)
            x += counts[child] / total * width

    x = 0.0
    for root in children.get((), []):
        draw(root, x)
        x += counts[root] / total * width
    parts.append("</svg>")
    path.write_text("\n".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--meta", type=Path, required=True, help="profile.json (profile_worker.py)")
    parser.add_argument("--svg", type=Path, help="write a flame graph here")
    args = parser.parse_args()
    samples = read_profile(args.profile)
    meta = json.loads(args.meta.read_text())
    wall = meta["wall_seconds"]
    thread_cpu = {int(tid): cpu for tid, cpu in meta["thread_cpu_seconds"].items()}
    weight = weights(samples, thread_cpu)
    sampled = sum(sample.count for sample in samples)
    unseen = sum(cpu for tid, cpu in thread_cpu.items() if tid not in weight)
    print(
        f"worker {meta['pid']}: {meta['cpu_seconds']:.1f} CPU s in {wall:.1f} s = "
        f"{meta['cpu_seconds'] / wall:.2f} cores (the kernel's count; {unseen:.1f} s in threads "
        f"py-spy never saw running); py-spy: {sampled} samples = "
        f"{sampled / (meta['rate'] * wall):.2f} threads runnable on average"
    )
    print("\n".join(summarise(samples, weight, wall)))
    if args.svg:
        write_svg(samples, args.svg)
        print(f"flame graph: {args.svg}")


if __name__ == "__main__":
    main()
