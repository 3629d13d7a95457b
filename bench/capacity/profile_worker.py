"""Record one app worker with py-spy, with each of its threads' CPU time over the same window.

Usage: profile_worker.py --app-pid N --out DIR [--delay S] [--seconds 30] [--rate 200]
       [--blocking]
After --delay seconds it picks the gunicorn master's first worker, notes the CPU seconds of each
of its threads (the kernel's count), runs `py-spy record --threads --format raw` on it for
--seconds into DIR/profile.txt (log: DIR/py-spy.log), notes the threads' CPU again and writes
DIR/profile.json: the worker's pid, the rate, the wall time and the CPU seconds per thread id.
profile_summary.py weighs each thread's samples by that thread's CPU time: py-spy counts a
thread as running while it is runnable, so on a busy box its samples overstate the CPU it got.
py-spy runs with --nonblocking unless --blocking: its blocking mode (pausing the worker for each
sample) counted idle threads as running on this box.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil


def thread_cpu(process: psutil.Process) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of a process, by native thread id."""
    return {thread.id: thread.user_time + thread.system_time for thread in process.threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app-pid", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--blocking", action="store_true")
    args = parser.parse_args()
    time.sleep(args.delay)
    workers = psutil.Process(args.app_pid).children()
    if not workers:
        sys.exit("no app worker to profile")
    worker = min(workers, key=lambda process: process.pid)
    command = [
        str(Path(sys.executable).parent / "py-spy"),
        "record",
        "--pid",
        str(worker.pid),
        "--rate",
        str(args.rate),
        "--duration",
        str(args.seconds),
        "--threads",
        "--format",
        "raw",
        "-o",
        str(args.out / "profile.txt"),
    ]
    if not args.blocking:
        command.append("--nonblocking")
    before, started = thread_cpu(worker), time.time()
    with (args.out / "py-spy.log").open("w") as log:
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True)
    after, ended = thread_cpu(worker), time.time()
    threads = {tid: cpu - before.get(tid, 0.0) for tid, cpu in after.items()}
    meta = {
        "pid": worker.pid,
        "rate": args.rate,
        "wall_seconds": ended - started,
        "cpu_seconds": sum(threads.values()),
        "thread_cpu_seconds": {str(tid): cpu for tid, cpu in threads.items()},
    }
    (args.out / "profile.json").write_text(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
