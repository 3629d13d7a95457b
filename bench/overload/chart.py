"""The overload bench's chart: latency and goodput over time for the three variants.

    chart.py OUT overload.png

One column per variant (a, b, c). Top: p99 (solid) and p50 (dashed) latency of successful
requests by the second they started in, per class, log scale. Bottom: goodput (successes per
second, counted in the second they were answered) per class, stacked, with the offered rate
(requests per second, by start) as a line. The surge is shaded.
"""

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from analyze import CLASSES, load

COLOURS = {"critical": "#d62728", "normal": "#1f77b4", "background": "#7f7f7f", "login": "#ff7f0e"}
TITLES = {
    "a": "(a) no shedding, unbounded hashing",
    "b": "(b) uvicorn limit_concurrency",
    "c": "(c) ours: adaptive limit + priorities",
}


def main() -> None:
    out, target = Path(sys.argv[1]), Path(sys.argv[2])
    variants = [name for name in ("a", "b", "c") if (out / name).exists()]
    figure, axes = plt.subplots(
        2, len(variants), figsize=(5 * len(variants), 7), sharex=True, sharey="row", squeeze=False
    )
    for column, name in enumerate(variants):
        run = load(out / name)
        shown = run.phase != "warmup"
        start = run.bounds("steady")[0]
        end = run.bounds("after")[1]
        surge = run.bounds("surge")
        seconds = np.arange(int(start), int(end))
        second = np.floor(run.t).astype(int)
        answered = np.floor(run.done).astype(int)
        top, bottom = axes[0][column], axes[1][column]
        stacked = []
        for cls in CLASSES:
            mask = shown & (run.cls == cls)
            ok = mask & run.ok
            p50, p99, good = [], [], []
            for s in seconds:
                window = run.latency[ok & (second == s)]
                p50.append(np.percentile(window, 50) if window.size else np.nan)
                p99.append(np.percentile(window, 99) if window.size else np.nan)
                good.append((ok & (answered == s)).sum())
            x = seconds - start
            top.plot(x, p99, color=COLOURS[cls], linewidth=1.2, label=f"{cls} p99")
            top.plot(x, p50, color=COLOURS[cls], linewidth=0.8, linestyle="--")
            stacked.append(good)
        x = seconds - start
        bottom.stackplot(x, *stacked, colors=[COLOURS[c] for c in CLASSES], labels=CLASSES)
        offered = [(shown & (second == s)).sum() for s in seconds]
        bottom.plot(x, offered, color="black", linewidth=0.8, label="offered")
        for axis in (top, bottom):
            axis.axvspan(
                surge[0] - start, surge[1] - start, color="#ffdd88", alpha=0.35, lw=0, zorder=0
            )
            axis.grid(alpha=0.3)
        top.set_yscale("log")
        top.set_ylim(1, 40_000)
        top.set_title(TITLES[name], fontsize=10)
        bottom.set_xlabel("seconds")
        if column == 0:
            top.set_ylabel("latency of successes, ms (p99 solid, p50 dashed)")
            bottom.set_ylabel("goodput, req/s (stacked by class)")
        if column == len(variants) - 1:
            top.legend(fontsize=7, loc="upper right")
            bottom.legend(fontsize=7, loc="upper right")
    figure.suptitle(
        "Assessment window with a surge to 3x capacity (shaded): 2 vCPU, 2 workers", fontsize=11
    )
    figure.tight_layout()
    figure.savefig(target, dpi=72)


if __name__ == "__main__":
    main()
