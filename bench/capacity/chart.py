"""The stress run as a chart: users against req/s and against p95/p99, with the knee marked.

Usage: chart.py [OUT_DIR] [PNG]   (defaults: bench/capacity/out/stress, bench/capacity/capacity.png)
Reads OUT_DIR/locust_stats_history.csv (locust --csv-full-history: the Aggregated row each
second, with percentiles over its last 10 s) and, when present, OUT_DIR/phases.json
(tests/load_test.py: each step's exact figures over its measured window, and the knee). Without
phases.json the steps are the stretches of constant user count, measured after LOAD_SETTLE_SECONDS
(10) s: req/s from the request counter, p95/p99 the median of the 10 s windows (approximate).
"""

import csv
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

HERE = Path(__file__).resolve().parent
SETTLE_SECONDS = 10
MAX_P95_MS = 500
MAX_P99_MS = 2000


@dataclass
class Step:
    users: int
    rps: float
    p95_ms: float
    p99_ms: float
    passed: bool | None = None
    # Successful requests per second (None when the source has no error counts).
    good_rps: float | None = None


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def history_rows(path: Path) -> list[dict[str, str]]:
    """The Aggregated rows, one per second."""
    with path.open() as file:
        return [row for row in csv.DictReader(file) if row["Name"] == "Aggregated"]


def steps_from_history(rows: list[dict[str, str]]) -> list[Step]:
    """Stretches of constant user count, measured after the settle time."""
    groups: list[list[dict[str, str]]] = []
    for row in rows:
        if groups and groups[-1][0]["User Count"] == row["User Count"]:
            groups[-1].append(row)
        else:
            groups.append([row])
    steps = []
    for group in groups:
        settled = [
            row
            for row in group
            if int(row["Timestamp"]) >= int(group[0]["Timestamp"]) + SETTLE_SECONDS
        ]
        users = int(group[0]["User Count"])
        if len(settled) < 5 or users == 0:
            continue
        seconds = int(settled[-1]["Timestamp"]) - int(settled[0]["Timestamp"])
        requests = int(settled[-1]["Total Request Count"]) - int(settled[0]["Total Request Count"])
        p95 = [value for row in settled if (value := _number(row["95%"])) is not None]
        p99 = [value for row in settled if (value := _number(row["99%"])) is not None]
        steps.append(
            Step(
                users,
                requests / seconds if seconds else 0.0,
                statistics.median(p95) if p95 else 0.0,
                statistics.median(p99) if p99 else 0.0,
            )
        )
    return steps


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "out" / "stress"
    png = Path(sys.argv[2]) if len(sys.argv) > 2 else HERE / "capacity.png"
    rows = history_rows(out / "locust_stats_history.csv")
    phases_path = out / "phases.json"
    knee = None
    if phases_path.exists():
        report = json.loads(phases_path.read_text())
        steps = [
            Step(
                phase["users"],
                phase["rps"],
                phase["p95_ms"],
                phase["p99_ms"],
                phase["passed"],
                (phase["requests"] - phase["errors"]) / phase["seconds"],
            )
            for phase in report["phases"]
        ]
        knee = report.get("knee_users")
        source = "steps measured by tests/load_test.py (phases.json)"
    else:
        steps = steps_from_history(rows)
        source = "steps derived from locust_stats_history.csv"
    if not steps:
        raise SystemExit(f"no steps found in {out}")

    figure, left = plt.subplots(figsize=(10, 5.5))
    right = left.twinx()
    # Each second as locust saw it (faint), then each step's figures.
    raw = [(int(row["User Count"]), _number(row["Requests/s"])) for row in rows]
    left.scatter(
        [u for u, r in raw if r is not None],
        [r for _, r in raw if r is not None],
        s=4,
        color="tab:blue",
        alpha=0.15,
        label="req/s, each second",
    )
    users = [step.users for step in steps]
    left.plot(users, [step.rps for step in steps], "o-", color="tab:blue", label="req/s per step")
    good = [(step.users, step.good_rps) for step in steps if step.good_rps is not None]
    if good:
        # Past the knee the shedder's 503s are part of req/s: goodput shows what was served.
        left.plot(
            [u for u, _ in good],
            [g for _, g in good],
            "o--",
            color="tab:green",
            label="successful req/s per step",
        )
    right.plot(users, [step.p95_ms for step in steps], "s-", color="tab:orange", label="p95")
    right.plot(users, [step.p99_ms for step in steps], "^-", color="tab:red", label="p99")
    right.axhline(MAX_P95_MS, color="tab:orange", linestyle=":", linewidth=1)
    right.axhline(MAX_P99_MS, color="tab:red", linestyle=":", linewidth=1)
    right.set_yscale("log")
    if knee is not None:
        left.axvline(knee, color="green", linestyle="--", linewidth=1.2, alpha=0.7, zorder=0)
        left.text(
            knee,
            0.5,
            f" knee: {knee} users",
            color="green",
            rotation=90,
            ha="right",
            va="center",
            transform=left.get_xaxis_transform(),
        )
    # Steps that miss the criteria, shaded.
    half = 0.4 * (users[1] - users[0]) if len(users) > 1 else 1.0
    for step in steps:
        if step.passed is False:
            left.axvspan(step.users - half, step.users + half, color="red", alpha=0.06)
    left.set_xlabel("users")
    left.set_ylabel("requests per second")
    right.set_ylabel("response time, ms (log; dotted: the plan's p95 and p99 limits)")
    left.set_ylim(bottom=0)
    handles = left.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    labels = left.get_legend_handles_labels()[1] + right.get_legend_handles_labels()[1]
    left.legend(handles, labels, loc="upper left", fontsize=8)
    left.set_title(f"Stress run, one box (2 gunicorn workers): {source}", fontsize=9)
    figure.tight_layout()
    figure.savefig(png, dpi=120)
    print(f"chart: {png}")


if __name__ == "__main__":
    main()
