"""CPU per request of class_cost.sh's runs, and the ratio of the cached reads to the bare app.

Usage: class_report.py DIR...   (each DIR: one class run, with result.json and resources.csv)
For each run: the requests that finished between its two marks, and each category's CPU between
the same marks (resources.py), per request; SATURATED marks a run with more than 1% of its
requests refused (its figures are not the unloaded cost). With several runs of a class
(REPEAT) the table ends with each class's median, and the ratios of the app workers' µs per
request of cached_jobs and cached_read to bare's (issue 16's target: at most 1.3). `scripts`
is the Redis script calls (EVALSHA: a limiter decision, a lease call, a cache read) per request
over the same window (redis_commands.txt), the round trips that batching did not share.
"""

import csv
import json
import statistics
import sys
from pathlib import Path

from report import load_resources

TARGET_RATIO = 1.3
# Above this share of refused requests the run was saturated (by its load or other work on the
# box): its CPU per request is not the unloaded cost.
MAX_FAILED_SHARE = 0.01
SHOWN = ("workers", "master", "postgres", "redis", "locust")


def run_costs(directory: Path) -> dict[str, float] | None:
    """µs per request of each category in one run's window, with its req/s and latency."""
    result_path = directory / "result.json"
    if not result_path.exists():
        return None
    result = json.loads(result_path.read_text())
    with (directory / "resources.csv").open() as file:
        marks = sorted(
            {float(row["time"]) for row in csv.DictReader(file) if row["label"] == "mark"}
        )
    if len(marks) < 2 or not result["requests"]:
        return None
    resources = load_resources(directory / "resources.csv")
    start, end = marks[0], marks[-1]
    requests = result["requests"]
    costs = {
        name: (resources.series[name].at(end) - resources.series[name].at(start)) / requests * 1e6
        for name in (*SHOWN, "box")
    }
    failed = sum(n for status, n in result["statuses"].items() if not status.startswith("2"))
    costs |= {
        "scripts": script_calls(directory / "redis_commands.txt") / requests,
        "requests": requests,
        "rps": requests / (end - start),
        "failed": failed,
        "p50_ms": result["p50_ms"],
        "p95_ms": result["p95_ms"],
        "box_cores": (resources.series["box"].at(end) - resources.series["box"].at(start))
        / (end - start),
    }
    return costs


def script_calls(path: Path) -> float:
    """EVALSHA calls in Redis's `INFO commandstats` output (NaN when it was not taken)."""
    if not path.exists():
        return float("nan")
    for line in path.read_text().splitlines():
        if line.startswith("cmdstat_evalsha:"):
            return float(line.split("calls=")[1].split(",")[0])
    return 0.0


def main() -> None:
    by_class: dict[str, list[float]] = {}
    print(
        f"{'run':<18} {'req/s':>7} {'failed':>6} {'p50':>5} {'p95':>5}  "
        + " ".join(f"{name:>8}" for name in SHOWN)
        + f" {'box µs':>7} {'box cores':>9} {'scripts':>7}   (µs of CPU per request)"
    )
    for argument in sys.argv[1:]:
        directory = Path(argument)
        costs = run_costs(directory)
        if costs is None:
            print(f"{directory.name:<18} no measurement")
            continue
        name = json.loads((directory / "result.json").read_text())["class"]
        by_class.setdefault(name, []).append(costs["workers"])
        print(
            f"{directory.name:<18} {costs['rps']:>7.1f} {costs['failed']:>6.0f} "
            f"{costs['p50_ms']:>5.0f} {costs['p95_ms']:>5.0f}  "
            + " ".join(f"{costs[category]:>8.0f}" for category in SHOWN)
            + f" {costs['box']:>7.0f} {costs['box_cores']:>9.2f} {costs['scripts']:>7.2f}"
            + ("  SATURATED" if costs["failed"] > MAX_FAILED_SHARE * costs["requests"] else "")
        )
    medians = {name: statistics.median(values) for name, values in by_class.items()}
    if len(sys.argv) > 2:
        print(
            "median app-worker µs per request: "
            + ", ".join(f"{name} {value:.0f}" for name, value in medians.items())
        )
    if "bare" in medians:
        for name in ("cached_jobs", "cached_read"):
            if name in medians:
                ratio = medians[name] / medians["bare"]
                verdict = "meets" if ratio <= TARGET_RATIO else "misses"
                print(
                    f"{name} / bare: {ratio:.2f}x app-worker CPU per request "
                    f"({verdict} the target of {TARGET_RATIO}x)"
                )


if __name__ == "__main__":
    main()
