"""CPU, memory and connections of a capacity run's processes, sampled into a CSV.

Every --interval seconds (10) it writes one row per category with the CPU seconds (user +
system) its processes used since the sampler started, exited processes included, and one row
per app worker with its RSS and established TCP connections (from clients, to PostgreSQL, to
Redis). Categories:
  workers   the gunicorn master's descendants (the app's workers)
  master    the gunicorn master
  postgres  the server's own processes and the backends of --database (other databases'
            backends belong to other work on the box)
  redis     the private redis-server
  locust    --locust-pid and its descendants (its --processes workers)
  sampler   this process
  box       the busy time of all CPUs (every process on the box, these and others)
CPU is read every second, so a process that lives between two rows (a recycled database
connection) still counts. --mark EPOCH adds rows at that moment (label "mark"); SIGTERM adds a
last one (label "final") and ends the sampler.

Usage: resources.py --out CSV --app-pid N --redis-pid N --database NAME --app-port N
       --redis-port N [--locust-pid N] [--interval 10] [--mark EPOCH ...]
"""

import argparse
import csv
import signal
import time
from dataclasses import dataclass, field
from types import FrameType

import psutil

COLUMNS = [
    "time",
    "elapsed_s",
    "label",
    "kind",
    "pid",
    "procs",
    "cpu_s",
    "rss_mb",
    "tcp_clients",
    "tcp_postgres",
    "tcp_redis",
]
POSTGRES_PORT = 5432
CPU_READ_SECONDS = 1.0
# A process, compared by pid and start time since boot (psutil's identity of a Process), so a
# reused pid is another process. Not the start time as a date: psutil adds the kernel's boot
# time, which can move by a second when the wall clock is adjusted; keyed on the date, a worker
# once counted its whole CPU time twice.
ProcessKey = psutil.Process


@dataclass
class Category:
    """The CPU seconds of one category's processes since the sampler started."""

    first: dict[ProcessKey, float] = field(default_factory=dict)
    last: dict[ProcessKey, float] = field(default_factory=dict)
    alive: int = 0

    def seen(self, key: ProcessKey, cpu: float, *, at_start: bool) -> None:
        # A process already running at the start counts from then; a later one from its birth.
        self.first.setdefault(key, cpu if at_start else 0.0)
        self.last[key] = cpu

    @property
    def cpu(self) -> float:
        return sum(self.last[key] - self.first[key] for key in self.last)


def cpu_seconds(process: psutil.Process) -> float:
    """User plus system CPU seconds of one process."""
    times = process.cpu_times()
    return float(times.user + times.system)


def box_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (everything but idle and I/O wait)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def find_postmaster() -> psutil.Process | None:
    """The PostgreSQL server's main process (owned by postgres, its parent is not postgres)."""
    for process in psutil.process_iter(["username", "name", "ppid"]):
        try:
            if process.info["username"] != "postgres" or "postgres" not in process.info["name"]:
                continue
            if psutil.Process(process.info["ppid"]).username() != "postgres":
                return process
        except psutil.Error:
            continue
    return None


def postgres_backend_database(cmdline: str) -> str | None:
    """The database of a backend ("postgres: 15/main: USER DB HOST(PORT) STATE"), else None."""
    parts = cmdline.split(": ", 2)
    if len(parts) < 3:
        return None
    words = parts[2].split()
    if len(words) >= 3 and ("(" in words[2] or words[2] == "[local]"):
        return words[1]
    return None


class Sampler:
    """Reads the processes' CPU every second and writes the CSV's rows."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.time()
        self.categories = {
            name: Category()
            for name in ("workers", "master", "postgres", "redis", "locust", "sampler")
        }
        self.box_start = box_busy_seconds()
        self.postmaster = find_postmaster()
        # Whether a backend serves --database, by process (a backend's database never changes).
        self.postgres_ours: dict[ProcessKey, bool] = {}
        self.workers: list[psutil.Process] = []
        self.read_cpu(at_start=True)

    def _tree(
        self, pid: int, *, itself: bool = True, children: bool = True
    ) -> list[psutil.Process]:
        if not pid:
            return []
        try:
            root = psutil.Process(pid)
            return ([root] if itself else []) + (root.children(recursive=True) if children else [])
        except psutil.Error:
            return []

    def _postgres(self) -> list[psutil.Process]:
        if self.postmaster is None:
            return []
        try:
            children = self.postmaster.children()
        except psutil.Error:
            return []
        ours = [self.postmaster]
        for child in children:
            try:
                if child not in self.postgres_ours:
                    database = postgres_backend_database(" ".join(child.cmdline()))
                    if database is not None:
                        self.postgres_ours[child] = database == self.args.database
                # The server's own processes (and a backend still starting) count as ours.
                if self.postgres_ours.get(child, True):
                    ours.append(child)
            except psutil.Error:
                continue
        return ours

    def read_cpu(self, *, at_start: bool = False) -> None:
        """One reading of every category's processes."""
        self.workers = self._tree(self.args.app_pid, itself=False)
        groups = {
            "workers": self.workers,
            "master": self._tree(self.args.app_pid, children=False),
            "postgres": self._postgres(),
            "redis": self._tree(self.args.redis_pid, children=False),
            "locust": self._tree(self.args.locust_pid),
            "sampler": [psutil.Process()],
        }
        for name, processes in groups.items():
            category = self.categories[name]
            category.alive = 0
            for process in processes:
                try:
                    category.seen(process, cpu_seconds(process), at_start=at_start)
                    category.alive += 1
                except psutil.Error:
                    continue

    def _connections(self) -> dict[int, dict[str, int]]:
        """Established TCP connections per worker pid: clients, postgres, redis."""
        counts = {
            process.pid: {"clients": 0, "postgres": 0, "redis": 0} for process in self.workers
        }
        for connection in psutil.net_connections(kind="tcp"):
            if connection.pid not in counts or connection.status != psutil.CONN_ESTABLISHED:
                continue
            if connection.laddr and connection.laddr.port == self.args.app_port:
                counts[connection.pid]["clients"] += 1
            elif connection.raddr and connection.raddr.port == POSTGRES_PORT:
                counts[connection.pid]["postgres"] += 1
            elif connection.raddr and connection.raddr.port == self.args.redis_port:
                counts[connection.pid]["redis"] += 1
        return counts

    def rows(self, label: str) -> list[list[object]]:
        """The CSV rows of this moment."""
        now = time.time()
        head = [f"{now:.3f}", f"{now - self.started:.1f}", label]
        rows: list[list[object]] = [
            [*head, name, "", category.alive, f"{category.cpu:.3f}", "", "", "", ""]
            for name, category in self.categories.items()
        ]
        box = box_busy_seconds() - self.box_start
        rows.append([*head, "box", "", psutil.cpu_count(), f"{box:.3f}", "", "", "", ""])
        connections = self._connections()
        for process in self.workers:
            try:
                rss = process.memory_info().rss / 2**20
            except psutil.Error:
                continue
            cpu = self.categories["workers"].last.get(process, 0.0)
            tcp = connections.get(process.pid, {})
            rows.append(
                [
                    *head,
                    "worker",
                    process.pid,
                    1,
                    f"{cpu - self.categories['workers'].first.get(process, 0.0):.3f}",
                    f"{rss:.1f}",
                    tcp.get("clients", 0),
                    tcp.get("postgres", 0),
                    tcp.get("redis", 0),
                ]
            )
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--app-pid", type=int, required=True)
    parser.add_argument("--redis-pid", type=int, required=True)
    parser.add_argument("--locust-pid", type=int, default=0)
    parser.add_argument("--database", required=True)
    parser.add_argument("--app-port", type=int, required=True)
    parser.add_argument("--redis-port", type=int, required=True)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--mark", type=float, action="append", default=[])
    args = parser.parse_args()

    stopping = False

    def stop(_signal: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sampler = Sampler(args)
    marks = sorted(mark for mark in args.mark if mark > time.time())
    with open(args.out, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(COLUMNS)
        writer.writerows(sampler.rows("start"))
        next_row = time.time() + args.interval
        while not stopping:
            now = time.time()
            wake = min([now + CPU_READ_SECONDS, next_row, *marks[:1]])
            time.sleep(max(0.0, wake - now))
            if stopping:
                break
            sampler.read_cpu()
            now = time.time()
            if marks and now >= marks[0]:
                marks.pop(0)
                writer.writerows(sampler.rows("mark"))
                file.flush()
            if now >= next_row:
                writer.writerows(sampler.rows(""))
                file.flush()
                next_row += args.interval
        sampler.read_cpu()
        writer.writerows(sampler.rows("final"))


if __name__ == "__main__":
    main()
