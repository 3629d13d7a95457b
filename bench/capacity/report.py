"""Where a capacity run's CPU went, per request: the run's requests joined with its CPU samples.

Usage: report.py OUT
Reads OUT/resources.csv (resources.py), OUT/phases.json (tests/load_test.py's figures) and
OUT/locust_stats.csv, and prints, for the whole run and for each measured phase: requests,
req/s, and per category (app workers, gunicorn master, PostgreSQL, Redis, locust, the sampler,
everything else on the box) its CPU in cores and in microseconds per request; then each app
worker's memory and connections from the first sample to the last (growth over a soak).
CPU at a phase's edges is interpolated between the samples around them (10 s apart).
"""

import csv
import json
import sys
from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CATEGORIES = ("workers", "master", "postgres", "redis", "locust", "sampler")
# The categories whose CPU is the cost of serving (their sum per request is shown too).
SERVING = ("workers", "master", "postgres", "redis")


@dataclass
class Series:
    """Cumulative CPU seconds of one category over time."""

    times: list[float]
    values: list[float]

    def at(self, moment: float) -> float:
        """The value at `moment`, linear between samples, clamped at the ends."""
        index = bisect_left(self.times, moment)
        if index <= 0:
            return self.values[0]
        if index >= len(self.times):
            return self.values[-1]
        t0, t1 = self.times[index - 1], self.times[index]
        v0, v1 = self.values[index - 1], self.values[index]
        return v0 + (v1 - v0) * (moment - t0) / (t1 - t0) if t1 > t0 else v1


@dataclass
class Resources:
    """resources.csv: the categories' CPU series, the box's cores and the workers' rows."""

    series: dict[str, Series]
    cores: int
    workers: dict[str, list[dict[str, str]]]


def load_resources(path: Path) -> Resources:
    """Parse resources.csv."""
    series = {name: Series([], []) for name in (*CATEGORIES, "box")}
    workers: dict[str, list[dict[str, str]]] = {}
    cores = 1
    with path.open() as file:
        for row in csv.DictReader(file):
            if row["kind"] == "worker":
                workers.setdefault(row["pid"], []).append(row)
                continue
            line = series[row["kind"]]
            moment = float(row["time"])
            if line.times and moment <= line.times[-1]:
                continue
            line.times.append(moment)
            line.values.append(float(row["cpu_s"]))
            if row["kind"] == "box":
                cores = int(row["procs"])
    return Resources(series, cores, workers)


def cpu_used(resources: Resources, start: float, end: float) -> dict[str, float]:
    """CPU seconds of each category (and "other": the rest of the box) between two moments."""
    used = {
        name: resources.series[name].at(end) - resources.series[name].at(start)
        for name in (*CATEGORIES, "box")
    }
    used["other"] = used["box"] - sum(used[name] for name in CATEGORIES)
    return used


def cpu_table(resources: Resources, start: float, end: float, requests: int) -> list[str]:
    """Cores and µs per request of each category between two moments."""
    seconds = end - start
    used = cpu_used(resources, start, end)
    lines = [f"    {'category':<9} {'cores':>6} {'µs/request':>11}"]
    for name in (*CATEGORIES, "other", "box"):
        cores = used[name] / seconds if seconds > 0 else 0.0
        per_request = f"{used[name] / requests * 1e6:>11.0f}" if requests else f"{'-':>11}"
        note = ""
        if name == "locust":
            note = f"  ({cores / resources.cores:.0%} of the box's {resources.cores} cores)"
        elif name == "box":
            note = f"  (busy: {cores / resources.cores:.0%} of {resources.cores} cores)"
        lines.append(f"    {name:<9} {cores:>6.2f} {per_request}{note}")
    if requests:
        serving = sum(used[name] for name in SERVING) / requests * 1e6
        lines.append(f"    serving (workers, master, postgres, redis): {serving:.0f} µs/request")
    return lines


def phase_table(resources: Resources, phases: list[dict[str, Any]]) -> list[str]:
    """One line per measured phase: its figures and its CPU per request."""
    lines = [
        f"  {'phase':<12} {'users':>6} {'s':>5} {'req/s':>8} {'p95':>6} {'p99':>6} "
        f"{'err':>7} {'429':>6} {'app µs':>7} {'pg µs':>6} {'redis':>6} {'serve':>6} "
        f"{'locust':>6} {'box':>5}  verdict"
    ]
    for phase in phases:
        seconds = phase["end"] - phase["start"]
        used = cpu_used(resources, phase["start"], phase["end"])
        requests = max(phase["requests"], 1)
        app, pg, redis = (used[name] / requests * 1e6 for name in ("workers", "postgres", "redis"))
        serving = sum(used[name] for name in SERVING) / requests * 1e6
        lines.append(
            f"  {phase['name']:<12} {phase['users']:>6} {seconds:>5.0f} {phase['rps']:>8.1f} "
            f"{phase['p95_ms']:>6} {phase['p99_ms']:>6} "
            f"{phase['errors'] / requests:>7.3%} {phase['limited'] / requests:>6.2%} "
            f"{app:>7.0f} {pg:>6.0f} {redis:>6.0f} {serving:>6.0f} "
            f"{used['locust'] / seconds:>6.2f} {used['box'] / seconds:>5.2f}  "
            f"{'PASS' if phase['passed'] else 'FAIL'}"
        )
    lines.append(
        "  (µs per request: app workers, postgres, redis, serving = the four; cores: locust, box)"
    )
    return lines


def _aggregated_requests(path: Path) -> tuple[int, int]:
    """Requests and logins from locust_stats.csv."""
    requests = logins = 0
    if not path.exists():
        return requests, logins
    with path.open() as file:
        for row in csv.DictReader(file):
            if row["Name"] == "Aggregated":
                requests = int(row["Request Count"])
            elif row["Name"] in ("/api/auth/login", "/api/auth/admin/login"):
                logins += int(row["Request Count"])
    return requests, logins


def _growth_per_10_min(rows: list[dict[str, str]], column: str) -> float:
    """Least-squares slope of a worker's column, per 10 minutes."""
    points = [(float(row["time"]), float(row[column] or 0)) for row in rows]
    if len(points) < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / len(points)
    mean_v = sum(v for _, v in points) / len(points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread * 600


def worker_lines(resources: Resources, start: float, end: float) -> list[str]:
    """Each worker's RSS and connections under load (samples up to `end`): the first, the last,
    the max, and the trend from `start` (the end of the ramp) on."""
    lines = [
        "  per worker (first -> last sample under load, max; trend per 10 min after the ramp):"
    ]
    for pid, all_rows in resources.workers.items():
        rows = [row for row in all_rows if float(row["time"]) <= end] or all_rows
        steady = [row for row in rows if float(row["time"]) >= start] or rows
        parts = []
        for column, unit in (
            ("rss_mb", "MB"),
            ("tcp_clients", ""),
            ("tcp_postgres", ""),
            ("tcp_redis", ""),
        ):
            values = [float(row[column] or 0) for row in rows]
            name = column.removeprefix("tcp_").removesuffix("_mb")
            parts.append(
                f"{name} {values[0]:.0f}->{values[-1]:.0f}{unit} (max {max(values):.0f}, "
                f"{_growth_per_10_min(steady, column):+.1f}/10min)"
            )
        lines.append(f"    pid {pid}: " + "; ".join(parts))
    return lines


def main() -> None:
    out = Path(sys.argv[1])
    resources = load_resources(out / "resources.csv")
    phases_path = out / "phases.json"
    report: dict[str, Any] = json.loads(phases_path.read_text()) if phases_path.exists() else {}
    csv_requests, logins = _aggregated_requests(out / "locust_stats.csv")
    box = resources.series["box"]
    start = report.get("start", box.times[0])
    end = report.get("end", box.times[-1])
    requests = report.get("overall", {}).get("requests", csv_requests)
    print(
        f"Whole run: {end - start:.0f} s, {requests} requests ({requests / (end - start):.1f}/s); "
        f"{logins} logins among them (argon2, in the workers' CPU)"
    )
    print("\n".join(cpu_table(resources, start, end, requests)))
    phases = report.get("phases", [])
    if phases:
        print("Measured phases:")
        print("\n".join(phase_table(resources, phases)))
    if report.get("scenario") == "stress":
        print(f"Knee (last step meeting the criteria): {report.get('knee_users')} users")
    # Memory and connection trends from the end of the ramp on.
    steady = [phase["start"] for phase in phases if phase["name"] != "ramp"]
    print("\n".join(worker_lines(resources, steady[0] if steady else start, end)))


if __name__ == "__main__":
    main()
