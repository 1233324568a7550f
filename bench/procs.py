"""The processes a scenario runs: gunicorn with production settings, the D1 sandbox, db_worker.

Each child starts in a session of its own and is stopped by its own id (its process group: a
gunicorn master and its workers), never by name. Ports come from 18900-18999, loopback only.
"""

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import http
from d1sandbox import keys
from d1sandbox.remote import SandboxRemote

PORTS = range(18900, 19000)
HOST = "127.0.0.1"
NOTIFY_CLIENT_ID = "d1-bench"
NOTIFY_CLIENT_SECRET = "d1-bench-secret"
KID = "bench"
# One line per request in gunicorn's access log: what the server timed, and for which request
# (the load generator's X-Bench-Id). %(D)s runs from the parsed request line to the last byte
# written: the server's time, network and queueing left out.
ACCESS_FORMAT = "%({x-bench-id}i)s %(s)s %(D)s %(p)s %(m)s %(U)s"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Context:
    """What every scenario needs: where things go, the settings of this run, the processes."""

    base_dir: Path
    out_dir: Path
    python: str
    database_url: str
    quick: bool
    orders: int
    workers: int
    fresh_data: bool
    profile: bool
    log: Callable[[str], None]
    reconcile_workers: int | None = None
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(50))
    datasets: dict[str, Any] = field(default_factory=dict)  # prepared this run, by URL
    static_collected: bool = False
    _ports: set[int] = field(default_factory=set)

    @property
    def key_file(self) -> Path:
        return self.out_dir / "d1-bench-key.pem"

    def port(self) -> int:
        """A free loopback port in 18900-18999, not handed out before in this run."""
        for port in PORTS:
            if port in self._ports:
                continue
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((HOST, port))
                except OSError:
                    continue
            self._ports.add(port)
            return port
        raise RuntimeError("no free port in 18900-18999")

    def env(self, database_url: str, sandbox_url: str, **extra: str) -> dict[str, str]:
        """A production environment (DJANGO_DEBUG=0) for a server, worker or command."""
        public_pem, _ = keys.ensure_key_pair(self.key_file)
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("DJANGO_", "D1_", "DATABASE_", "TRACKER_", "REDIS_"))
        }
        env.update(
            DJANGO_SETTINGS_MODULE="tracker.settings",
            DJANGO_DEBUG="0",
            DJANGO_SECRET_KEY=self.secret_key,
            DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
            DJANGO_LOG_LEVEL="WARNING",
            DATABASE_URL=database_url,
            D1_BASE_URL=f"{sandbox_url}/banking/v1",
            D1_TOKEN_URL=f"{sandbox_url}/authz/v1/oauth2/token",
            D1_ISSUER_IDS=",".join(ISSUER_IDS),
            D1_JWT_PRIVATE_KEY_FILE=str(self.key_file),
            D1_JWT_KID=KID,
            D1_NOTIFY_AUTH="bearer",
            D1_NOTIFY_CLIENT_ID=NOTIFY_CLIENT_ID,
            D1_NOTIFY_CLIENT_SECRET=NOTIFY_CLIENT_SECRET,
        )
        env.update(extra)
        return env


# The generated orders' issuers, and one for the notification scenario's own cards.
ISSUER_IDS = ("ISS7K2M40Q", "ISSB3NCH02", "ISSB3NCHNT")


class Processes:
    """The children of this run; stop() ends each by its own process group."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen] = []

    def start(
        self, argv: list[str], env: Mapping[str, str], cwd: Path, log: Path
    ) -> subprocess.Popen:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as output:
            child = subprocess.Popen(
                argv,
                env=dict(env),
                cwd=cwd,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.children.append(child)
        return child

    def stop(self, child: subprocess.Popen, timeout: float = 15.0) -> None:
        if child.poll() is None:
            _signal_group(child, signal.SIGTERM)
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(child, signal.SIGKILL)
                child.wait(timeout)
        if child in self.children:
            self.children.remove(child)

    def stop_all(self) -> None:
        for child in reversed(list(self.children)):
            self.stop(child)


def _signal_group(child: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signum)  # the group this run created for the child


@dataclass
class Web:
    """A gunicorn serving Tracker, and its access log."""

    name: str
    port: int
    process: subprocess.Popen
    access_log: Path
    workers: int
    _offset: int = 0

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    def worker_pids(self) -> list[int]:
        return _children(self.process.pid)

    def pids(self) -> list[int]:
        return [self.process.pid, *self.worker_pids()]

    def access_entries(self) -> list[tuple[str, int, float, int, str, str]]:
        """Access-log lines written since the last call: (bench id, status, ms, pid, method,
        path)."""
        with open(self.access_log, "rb") as file:
            file.seek(self._offset)
            chunk = file.read()
        complete = chunk.rfind(b"\n") + 1
        self._offset += complete
        entries = []
        for line in chunk[:complete].decode("utf-8", "replace").splitlines():
            parts = line.split(" ", 5)
            if len(parts) < 6:
                continue
            bench_id, status, micros, pid, method, path = parts
            entries.append(
                (bench_id, int(status), int(micros) / 1000, int(pid.strip("<>")), method, path)
            )
        return entries

    def server_ms(self) -> dict[str, float]:
        """Server milliseconds by bench id, for the lines written since the last call."""
        return {entry[0]: entry[2] for entry in self.access_entries() if entry[0] != "-"}


def start_web(
    ctx: Context,
    processes: Processes,
    name: str,
    database_url: str,
    sandbox_url: str,
    *,
    workers: int | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> Web:
    """Start gunicorn (gthread workers, as deployed) and wait until /healthz answers."""
    if not ctx.static_collected:
        # DJANGO_DEBUG=0 serves hashed names from the manifest, which collectstatic writes.
        subprocess.run(
            [ctx.python, "manage.py", "collectstatic", "--noinput", "-v", "0"],
            cwd=ctx.base_dir,
            env=ctx.env(database_url, sandbox_url),
            check=True,
            timeout=300,
        )
        ctx.static_collected = True
    port = ctx.port()
    workers = workers or ctx.workers
    access_log = ctx.out_dir / "logs" / f"{name}-access.log"
    access_log.parent.mkdir(parents=True, exist_ok=True)
    access_log.write_bytes(b"")
    argv = [
        ctx.python, "-m", "gunicorn", "tracker.wsgi:application",
        "--workers", str(workers), "--worker-class", "gthread", "--threads", str(WEB_THREADS),
        "--bind", f"{HOST}:{port}", "--no-control-socket",
        "--access-logfile", str(access_log), "--access-logformat", ACCESS_FORMAT,
        "--log-level", "warning", "--timeout", "300", "--graceful-timeout", "5",
    ]  # fmt: skip
    if ctx.profile:
        argv += ["--config", f"python:{PROFILE_CONFIG}"]
    env = ctx.env(database_url, sandbox_url, **(extra_env or {}))
    if ctx.profile:
        env["BENCH_PROFILE_DIR"] = str(ctx.out_dir / "profiles")
    child = processes.start(argv, env, ctx.base_dir, ctx.out_dir / "logs" / f"{name}.log")
    web = Web(name, port, child, access_log, workers)
    _wait_until(lambda: _healthy(web), f"gunicorn {name}", child)
    web.access_entries()  # skip the health checks
    return web


PROFILE_CONFIG = "bench.gunicorn_profile"
# Threads per gunicorn worker: a live refresh waiting on a slow D1 holds a thread, not a worker,
# so the notification endpoint always finds one free.
WEB_THREADS = 8


def start_appliers(
    ctx: Context, processes: Processes, count: int, database_url: str, first: int = 0
) -> list[subprocess.Popen]:
    """`count` notification appliers (`manage.py apply_notifications`)."""
    env = ctx.env(database_url, "http://127.0.0.1:9")  # appliers never call D1
    argv = [ctx.python, "manage.py", "apply_notifications"]
    return [
        processes.start(argv, env, ctx.base_dir, ctx.out_dir / "logs" / f"applier-{n}.log")
        for n in range(first, first + count)
    ]


def kill(child: subprocess.Popen) -> None:
    """SIGKILL a child (and its group): no clean-up, as a crash or an OOM kill would."""
    if child.poll() is None:
        _signal_group(child, signal.SIGKILL)
        child.wait(15)


def _healthy(web: Web) -> bool:
    try:
        answer = http.request(web.address, "GET", "/healthz", timeout=5)
    except OSError:
        return False
    return answer.status == 200 and len(web.worker_pids()) >= web.workers


@dataclass
class Sandbox:
    url: str
    process: subprocess.Popen
    remote: SandboxRemote


def start_sandbox(ctx: Context, processes: Processes, name: str = "sandbox") -> Sandbox:
    """The D1 sandbox in its own process, trusting the bench's key; it pushes nothing."""
    public_pem, _ = keys.ensure_key_pair(ctx.key_file)
    public_file = ctx.key_file.with_suffix(".pub.pem")
    public_file.write_text(public_pem)
    port = ctx.port()
    url = f"http://{HOST}:{port}"
    argv = [
        ctx.python, "-m", "d1sandbox", "--host", HOST, "--port", str(port),
        "--public-key", str(public_file), "--kid", KID, "--seed", "7",
    ]  # fmt: skip
    env = ctx.env(ctx.database_url, url)  # the sandbox never opens it
    child = processes.start(argv, env, ctx.base_dir, ctx.out_dir / "logs" / f"{name}.log")
    remote = SandboxRemote(url, timeout=60)
    _wait_until(remote.healthy, "the D1 sandbox", child)
    return Sandbox(url, child, remote)


def start_workers(
    ctx: Context,
    processes: Processes,
    count: int,
    database_url: str,
    sandbox_url: str,
    extra_env: Mapping[str, str] | None = None,
) -> list[subprocess.Popen]:
    """`count` task workers (django-tasks-db), polling often so the queue never waits on them."""
    env = ctx.env(database_url, sandbox_url, **(extra_env or {}))
    argv = [
        ctx.python, "manage.py", "db_worker", "--no-reload", "--no-startup-delay",
        "--interval", "0.1",
    ]  # fmt: skip
    return [
        processes.start(argv, env, ctx.base_dir, ctx.out_dir / "logs" / f"worker-{n}.log")
        for n in range(count)
    ]


def _wait_until(ready: Callable[[], bool], what: str, child: subprocess.Popen) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"{what} exited with {child.returncode}; see var/bench/logs/")
        if ready():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up within 90 s; see var/bench/logs/")


def _children(pid: int) -> list[int]:
    found = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        for task in task_dir.iterdir():
            found += [int(child) for child in (task / "children").read_text().split()]
    except OSError:
        return []
    return sorted(set(found))


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds so far of each process (those that still exist)."""
    found = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[pid] = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return found


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two cpu_seconds() readings (processes born since count whole)."""
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as file:
        values = [int(value) for value in file.readline().split()[1:]]
    idle = values[3] + values[4]
    return float(sum(values) - idle), float(sum(values))


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident set since start or since reset_peak) of a process."""
    found = {}
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            if line.startswith(("VmRSS:", "VmHWM:")):
                found[line.split(":")[0]] = int(line.split()[1])
    return found


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux: clear_refs 5); False if refused."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as file:
            file.write("5")
    except OSError:
        return False
    return True


@contextmanager
def running(ctx: Context) -> Iterator[Processes]:
    """A Processes whose children are all stopped on the way out, whatever happened."""
    processes = Processes()
    try:
        yield processes
    finally:
        processes.stop_all()
