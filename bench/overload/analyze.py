"""Tables of the overload bench from loadgen.py's CSVs (bench/overload/run.sh calls it).

    analyze.py step DIR          exit status 0 when a capacity step met the plan's criteria
    analyze.py capacity DIR      the steps' table (stderr) and the capacity in req/s (stdout)
    analyze.py tune OUT L1 L2..  the best uvicorn limit_concurrency of the tuning runs
    analyze.py report OUT        the markdown report of every run in OUT

Definitions used throughout:
* success: a 2xx answer; goodput: successes per second delivered, counted when they were
  answered (the summary also counts apart those answered within 2 s);
* otherwise a request belongs to the phase (and 1 s window) in which it was meant to start;
* shed: a 503 or 429 answer (the code says who: `overloaded`, `login_overloaded`,
  `service_busy`, uvicorn's plain-text 503, `concurrency_limited`, ...); a client timeout
  (30 s) or a broken connection is a failure with status 0;
* capacity: the goodput of the highest ramp step that meets the plan's criteria (errors
  < 0.1%, p95 < 500 ms, p99 < 2 s), the first 2 s of each step left out;
* recovery: seconds from the end of the surge until the p99 of 1 s windows (all classes) is
  within 2x the steady phase's p99 and stays there for 5 windows.
"""

import csv
import json
import math
import re
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLASSES = ("critical", "normal", "background", "login")
PHASES = ("steady", "surge", "after")
CORES = 2
STEP_SETTLE_SECONDS = 2.0
RECOVERY_FACTOR = 2.0
RECOVERY_WINDOWS = 5
SHED_STATUSES = (429, 503)
# A success slower than this is counted apart (the plan's p99 criterion).
SLOW_MS = 2000.0


@dataclass(frozen=True)
class PhaseInfo:
    """A phase as the generator ran it: its length, rates and each process's CPU seconds."""

    name: str
    start: float
    seconds: float
    rates: dict[str, float]
    cpu_seconds: float

    @property
    def end(self) -> float:
        return self.start + self.seconds


@dataclass
class Run:
    """One load's requests (all generator processes) and its phases."""

    name: str
    t: np.ndarray
    phase: np.ndarray
    cls: np.ndarray
    status: np.ndarray
    latency: np.ndarray
    code: np.ndarray
    lag: np.ndarray
    phases: list[PhaseInfo]

    @property
    def ok(self) -> np.ndarray:
        return (self.status >= 200) & (self.status < 300)

    @property
    def done(self) -> np.ndarray:
        """When each request was answered (or given up), seconds from the start."""
        answered: np.ndarray = self.t + self.latency / 1000
        return answered

    def delivered(self, mask: np.ndarray, lo: float, hi: float) -> float:
        """Successes among `mask` answered within [lo, hi), per second."""
        done = self.done
        return float((mask & self.ok & (done >= lo) & (done < hi)).sum()) / (hi - lo)

    @property
    def second(self) -> np.ndarray:
        seconds: np.ndarray = np.floor(self.t).astype(int)
        return seconds

    def bounds(self, phase: str) -> tuple[float, float]:
        for item in self.phases:
            if item.name == phase:
                return item.start, item.end
        raise KeyError(phase)


@dataclass(frozen=True)
class Stats:
    """One group of requests."""

    requests: int
    success: float
    p50_ok: float
    p99_ok: float
    p99_all: float
    goodput: float
    failures: str


def load(directory: Path) -> Run:
    """The CSVs and summaries of one run directory."""
    columns: dict[str, list[str]] = {}
    for path in sorted(directory.glob("requests-*.csv")):
        with path.open() as handle:
            for row in csv.DictReader(handle):
                for key, value in row.items():
                    columns.setdefault(key, []).append(value)
    summaries = [json.loads(p.read_text()) for p in sorted(directory.glob("generator-*.json"))]
    phases, start = [], 0.0
    for i, item in enumerate(summaries[0]["phases"] if summaries else []):
        cpu = sum(float(s["phases"][i]["cpu_seconds"] or 0.0) for s in summaries)
        phases.append(PhaseInfo(item["name"], start, item["seconds"], item["rates"], cpu))
        start += item["seconds"]

    def floats(key: str) -> np.ndarray:
        return np.array(columns.get(key, []), dtype=float)

    def texts(key: str) -> np.ndarray:
        return np.array(columns.get(key, []), dtype=object)

    t = floats("t")
    # The phase of each request from its start time (a session's later steps may fall in the
    # next phase: early runs labelled them with the session's first phase).
    phase = np.full(t.shape, phases[-1].name if phases else "", dtype=object)
    for item in reversed(phases):
        phase[t < item.end] = item.name
    return Run(
        name=directory.name,
        t=t,
        phase=phase,
        cls=texts("cls"),
        status=np.array(columns.get("status", []), dtype=int),
        latency=floats("latency_ms"),
        code=texts("code"),
        lag=floats("lag_ms"),
        phases=phases,
    )


def pct(values: np.ndarray, q: float) -> float:
    """The q-th percentile (nan for no values)."""
    return float(np.percentile(values, q)) if values.size else math.nan


def top(values: np.ndarray) -> float:
    return float(values.max()) if values.size else math.nan


def ms(value: float) -> str:
    """A latency in milliseconds, readably."""
    if math.isnan(value):
        return "-"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.1f} ms" if value < 10 else f"{value:.0f} ms"


def seconds_or_never(value: float) -> str:
    return "not within the run" if math.isnan(value) else f"{value:.0f} s"


def table(header: Iterable[str]) -> str:
    names = list(header)
    return "| " + " | ".join(names) + " |\n|" + "---|" * len(names)


def row(*cells: object) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def failures(run: Run, mask: np.ndarray) -> str:
    """Failures by status and code, most frequent first."""
    failed = mask & ~run.ok
    pairs = zip(run.status[failed], run.code[failed], strict=True)
    counts = Counter(f"{status} {code}".strip() for status, code in pairs)
    return ", ".join(f"{key}: {count}" for key, count in counts.most_common(4)) or "-"


def stats(run: Run, mask: np.ndarray, group: np.ndarray, lo: float, hi: float) -> Stats:
    """Requests, success ratio and latencies of the requests in `mask` (started in [lo, hi)),
    and the goodput of `group` (the same class, whenever started) answered in [lo, hi)."""
    ok = mask & run.ok
    total = int(mask.sum())
    return Stats(
        requests=total,
        success=float(ok.sum()) / total if total else math.nan,
        p50_ok=pct(run.latency[ok], 50),
        p99_ok=pct(run.latency[ok], 99),
        p99_all=pct(run.latency[mask], 99),
        goodput=run.delivered(group, lo, hi),
        failures=failures(run, mask),
    )


def recovery(run: Run) -> tuple[float, float, float]:
    """(steady p99, seconds after the surge until the 1 s p99 is back within 2x of it,
    seconds until >= 99% success); nan when that does not happen within the run."""
    reference = pct(run.latency[run.phase == "steady"], 99)
    surge_end, end = run.bounds("surge")[1], run.bounds("after")[1]
    second = run.second
    latency_good, success_good = [], []
    for s in range(int(surge_end), int(end)):
        window = second == s
        latency_good.append(
            bool(window.any()) and pct(run.latency[window], 99) <= RECOVERY_FACTOR * reference
        )
        success_good.append(bool(window.any()) and float(run.ok[window].mean()) >= 0.99)

    def first_good(good: list[bool]) -> float:
        for i in range(len(good) - RECOVERY_WINDOWS + 1):
            if all(good[i : i + RECOVERY_WINDOWS]):
                return float(i)
        return math.nan

    return reference, first_good(latency_good), first_good(success_good)


def step_row(directory: Path) -> tuple[str, float, bool]:
    """One capacity step (a single-phase run): its table row, goodput, and whether it meets
    the plan's criteria."""
    run = load(directory)
    item = run.phases[0]
    lo = item.start + STEP_SETTLE_SECONDS
    mask = run.t >= lo
    span = item.end - lo
    total = max(int(mask.sum()), 1)
    ok = mask & run.ok
    errors = 1 - float(ok.sum()) / total
    p95, p99 = pct(run.latency[mask], 95), pct(run.latency[mask], 99)
    goodput = run.delivered(np.ones_like(run.ok), lo, item.end)
    logins = run.delivered(run.cls == "login", lo, item.end)
    line = row(
        f"{sum(item.rates.values()):.0f}",
        f"{total / span:.0f}",
        f"{goodput:.0f}",
        f"{errors:.2%}",
        ms(pct(run.latency[mask], 50)),
        ms(p95),
        ms(p99),
        f"{logins:.1f}",
        f"{item.cpu_seconds / item.seconds / CORES:.1%}",
    )
    return line, goodput, errors < 0.001 and p95 < 500 and p99 < 2000


def capacity(directory: Path) -> int:
    """Write the steps' table to capacity.md (and stderr); return the capacity (req/s)."""
    chosen, best = 0.0, 0.0
    header = ("offered req/s", "sent req/s", "goodput req/s", "errors", "p50", "p95", "p99")
    lines = [table((*header, "logins ok/s", "generator CPU"))]
    for step in sorted(directory.glob("r*"), key=lambda p: float(p.name[1:])):
        line, goodput, passed = step_row(step)
        lines.append(line)
        best = max(best, goodput)
        if passed:
            chosen = max(chosen, goodput)
    text = "\n".join(lines)
    text += f"\n\ncapacity (the plan's criteria met): **{chosen:.0f} req/s**; "
    text += f"highest goodput of any step: {best:.0f} req/s\n"
    (directory / "capacity.md").write_text(text)
    print(text, file=sys.stderr)
    return round(chosen)


def tune(out: Path, limits: Iterable[str]) -> str:
    """The limit whose surge kept the most critical requests, then the most goodput."""
    scored = []
    for limit in limits:
        run = load(out / f"tune-b{limit}")
        lo, hi = run.bounds("surge")
        surge = run.phase == "surge"
        critical = surge & (run.cls == "critical")
        success = float((critical & run.ok).sum()) / max(int(critical.sum()), 1)
        scored.append((round(success, 3), run.delivered(run.ok, lo, hi), limit))
    return max(scored)[2]


def server_metrics(directory: Path, lo: float, hi: float) -> dict[str, str]:
    """Min, median and max of each /metrics series sampled during [lo, hi)."""
    path = directory / "metrics.csv"
    if not path.exists():
        return {}
    series: dict[str, list[float]] = {}
    with path.open() as handle:
        for sample in csv.DictReader(handle):
            if lo <= float(sample["t"]) < hi:
                series.setdefault(sample["metric"] + sample["labels"], []).append(
                    float(sample["value"])
                )
    return {
        key: f"min {min(v):.3g}, median {np.median(v):.3g}, max {max(v):.3g}"
        for key, v in sorted(series.items())
    }


def server_shed_latency(directory: Path) -> str:
    """From the app's own histogram (first byte received to response finished, in its
    outermost middleware): the share of its 503 answers finished within 5 and 10 ms."""
    path = directory / "metrics-final.txt"
    if not path.exists():
        return "-"
    buckets: Counter[str] = Counter()
    pattern = re.compile(
        r"^hiringpro_http_request_duration_seconds_bucket"
        r'\{(?=[^}]*status="503")[^}]*le="([^"]+)"[^}]*\} ([0-9.e+]+)$'
    )
    for line in path.read_text().splitlines():
        match = pattern.match(line)
        if match:
            buckets[match[1]] += int(float(match[2]))
    total = buckets.get("+Inf", 0)
    if not total:
        return "none counted by the app"
    return (
        f"{buckets['0.005'] / total:.1%} within 5 ms, {buckets['0.01'] / total:.1%} "
        f"within 10 ms (of {total})"
    )


def shed_reasons(directory: Path) -> str:
    """The app's shed counters: load shedder by priority and reason, password hashing by
    reason, per-identity concurrency refusals."""
    path = directory / "metrics-final.txt"
    if not path.exists():
        return "-"
    counts: Counter[str] = Counter()
    pattern = re.compile(
        r"^hiringpro_(overload_shed_total|password_hashes_shed_total"
        r"|concurrency_limit_decisions_total)\{([^}]*)\} ([0-9.e+]+)$"
    )
    for line in path.read_text().splitlines():
        match = pattern.match(line)
        if not match or not float(match[3]):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match[2]))
        value = int(float(match[3]))
        if match[1] == "overload_shed_total":
            counts[f"shedder {labels['priority']}/{labels['reason']}"] += value
        elif match[1] == "password_hashes_shed_total":
            counts[f"hashing/{labels['reason']}"] += value
        elif labels.get("outcome") == "refused":
            counts[f"concurrency/{labels['identity']}"] += value
    return ", ".join(f"{key}: {count}" for key, count in counts.most_common()) or "nothing"


def generator_share(run: Run) -> str:
    """The generator processes' CPU, as a share of the box's cores, per phase."""
    parts = [f"{p.name} {p.cpu_seconds / p.seconds / CORES:.1%}" for p in run.phases]
    lag = run.lag[run.phase != "warmup"]
    return ", ".join(parts) + f"; send lag p99 {ms(pct(lag, 99))}, max {ms(top(lag))}"


def _phase_tables(runs: dict[str, Run]) -> None:
    header = ("variant", "class", "requests", "success", "p50 (ok)", "p99 (ok)", "p99 (all)")
    for phase in PHASES:
        print(f"### {phase}\n")
        print(table((*header, "goodput/s", "failures (status code: count)")))
        for name, run in runs.items():
            lo, hi = run.bounds(phase)
            in_phase = run.phase == phase
            for cls in (*CLASSES, "all"):
                group = np.ones_like(run.ok) if cls == "all" else run.cls == cls
                s = stats(run, in_phase & group, group, lo, hi)
                print(
                    row(
                        name,
                        f"**{cls}**" if cls == "all" else cls,
                        s.requests,
                        f"{s.success:.2%}",
                        ms(s.p50_ok),
                        ms(s.p99_ok),
                        ms(s.p99_all),
                        f"{s.goodput:.0f}",
                        s.failures,
                    )
                )
        print()


def _summary_table(out: Path, runs: dict[str, Run], capacity_value: float) -> None:
    print("### Goodput against capacity, shed answers, recovery\n")
    columns = ["variant", "goodput steady", "goodput surge (of C)", "of it within 2 s"]
    columns += ["goodput after", "503s", "503 latency p50 / p99 / max (client)"]
    columns += ["503s the app finished (server)", "steady p99", "recovery: p99 <= 2x steady"]
    print(table((*columns, "recovery: >= 99% ok")))
    for name, run in runs.items():
        goodput = {}
        for phase in PHASES:
            lo, hi = run.bounds(phase)
            goodput[phase] = run.delivered(run.ok, lo, hi)
        lo, hi = run.bounds("surge")
        prompt = run.delivered(run.latency < SLOW_MS, lo, hi)
        shed = run.status == 503
        reference, back, success_back = recovery(run)
        print(
            row(
                name,
                f"{goodput['steady']:.0f}",
                f"{goodput['surge']:.0f} ({goodput['surge'] / capacity_value:.0%})",
                f"{prompt:.0f}",
                f"{goodput['after']:.0f}",
                int(shed.sum()),
                f"{ms(pct(run.latency[shed], 50))} / {ms(pct(run.latency[shed], 99))} / "
                f"{ms(top(run.latency[shed]))}",
                server_shed_latency(out / name),
                ms(reference),
                seconds_or_never(back),
                seconds_or_never(success_back),
            )
        )
    print()


def _shed_tables(out: Path, runs: dict[str, Run]) -> None:
    print("### Shed answers by code: latency seen by the client (whole run)\n")
    print(table(("variant", "status code", "answers", "p50", "p99", "max", "within 10 ms")))
    for name, run in runs.items():
        shed = np.isin(run.status, SHED_STATUSES)
        pairs = zip(run.status[shed], run.code[shed], strict=True)
        for status, code in sorted(set(pairs)):
            values = run.latency[shed & (run.status == status) & (run.code == code)]
            print(
                row(
                    name,
                    f"{status} {code}",
                    values.size,
                    ms(pct(values, 50)),
                    ms(pct(values, 99)),
                    ms(top(values)),
                    f"{float((values < 10).mean()):.1%}",
                )
            )
    print("\n### Why the app shed (its own counters at the end of the run)\n")
    for name in runs:
        print(f"- {name}: {shed_reasons(out / name)}")
    print()


def _tuning_table(out: Path) -> None:
    tunes = sorted(out.glob("tune-b*"), key=lambda p: int(p.name[6:]))
    if not tunes:
        return
    print("### Tuning uvicorn's limit_concurrency (short windows, see run.sh TUNE_WINDOW)\n")
    header = ("limit_concurrency (per worker)", "critical success", "critical p99 (all)")
    print(table((*header, "surge goodput/s", "normal success", "503 answers")))
    for path in tunes:
        run = load(path)
        lo, hi = run.bounds("surge")
        surge = run.phase == "surge"
        critical = stats(run, surge & (run.cls == "critical"), run.cls == "critical", lo, hi)
        normal = stats(run, surge & (run.cls == "normal"), run.cls == "normal", lo, hi)
        print(
            row(
                path.name[6:],
                f"{critical.success:.2%}",
                ms(critical.p99_all),
                f"{run.delivered(run.ok, lo, hi):.0f}",
                f"{normal.success:.2%}",
                int((surge & (run.status == 503)).sum()),
            )
        )
    print()


def report(out: Path) -> None:
    """Print the markdown report of every run found in `out`."""
    capacity_value = float((out / "capacity.txt").read_text())
    if (out / "capacity" / "capacity.md").exists():
        print("## Capacity (variant a, the surge mix at rising rates, 10 s a step)\n")
        print((out / "capacity" / "capacity.md").read_text())
    runs = {name: load(out / name) for name in ("a", "b", "c") if (out / name).exists()}
    print(f"## The window (capacity C = {capacity_value:.0f} req/s)\n")
    for phase in next(iter(runs.values())).phases:
        rates = ", ".join(f"{k} {v:.0f}" for k, v in phase.rates.items())
        print(f"- {phase.name}: {phase.seconds:.0f} s, req/s {rates}")
    print()
    _phase_tables(runs)
    _summary_table(out, runs, capacity_value)
    _shed_tables(out, runs)
    print("### Generator (2 processes) CPU, as a share of the box's 2 cores\n")
    for name in runs:
        print(f"- {name}: {generator_share(runs[name])}")
    print("- capacity steps: see the table above")
    print("\n### Server state during the surge (/metrics once a second; sums over workers)\n")
    for name, run in runs.items():
        lo, hi = run.bounds("surge")
        print(f"- {name}:")
        for key, value in server_metrics(out / name, lo, hi).items():
            print(f"  - `{key}`: {value}")
    print()
    _tuning_table(out)


def main() -> None:
    command, target = sys.argv[1], Path(sys.argv[2])
    if command == "step":
        line, _, passed = step_row(target)
        print(line, file=sys.stderr)
        raise SystemExit(0 if passed else 1)
    if command == "capacity":
        print(capacity(target))
    elif command == "tune":
        print(tune(target, sys.argv[3:]))
    elif command == "report":
        report(target)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
