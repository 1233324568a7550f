"""The load generator, run as a process of its own: `python -m bench.loadgen SPEC OUT`.

SPEC is a JSON file: {"host", "port", "mode": "open" | "closed", "rate" (open: requests per
second), "concurrency" (closed: connections; open: most requests in flight), "duration"
(seconds, closed mode), "max_lag" (open: seconds behind schedule after which the rest is
abandoned, so an overloaded server ends the run), "requests": [{"id", "method", "path",
"headers", "body"}]}.

- open: request i is due at start + i / rate, whatever happened to the others (a constant arrival
  rate, as D1 delivers); its latency counts from when it was due, so a server that falls behind
  shows it (no coordinated omission).
- closed: `concurrency` threads send the requests one after another until `duration` is up.

OUT receives one row per request sent — [id, due, started, ended, status] in seconds from the
start — and the generator's own CPU seconds, so the report can say what the client cost.
Standard library only; the request bytes are built before the clock starts.
"""

import json
import os
import queue
import sys
import threading
import time
from typing import Any

from bench import http

_START_DELAY = 0.3  # seconds for the threads to be ready before the first request is due


def main(spec_path: str, out_path: str) -> None:
    with open(spec_path) as file:
        spec = json.load(file)
    address = (spec["host"], int(spec["port"]))
    host = f"{address[0]}:{address[1]}"
    prepared = [
        (
            str(item["id"]),
            http.encode(
                item["method"],
                item["path"],
                host=host,
                headers=item.get("headers"),
                body=item.get("body", "").encode(),
            ),
        )
        for item in spec["requests"]
    ]
    cpu_before, wall_before = os.times(), time.perf_counter()
    if spec["mode"] == "open":
        rows = _open_loop(
            address,
            prepared,
            float(spec["rate"]),
            int(spec["concurrency"]),
            float(spec.get("max_lag", 10.0)),
        )
    else:
        rows = _closed_loop(address, prepared, int(spec["concurrency"]), float(spec["duration"]))
    cpu_after, wall_after = os.times(), time.perf_counter()
    cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    errors = [row[5] for row in rows if len(row) > 5][:10]
    with open(out_path, "w") as file:
        json.dump(
            {
                "rows": [row[:5] for row in rows],
                "cpu_seconds": cpu,
                "wall_seconds": wall_after - wall_before,
                "errors": errors,
                "abandoned": len(prepared) - len(rows),
            },
            file,
        )


def _one(address: tuple[str, int], raw: bytes) -> tuple[int, str]:
    try:
        return http.send(address, raw, timeout=60.0, keep_body=False).status, ""
    except OSError as e:
        return 0, f"{e.__class__.__name__}: {e}"


def _open_loop(
    address: tuple[str, int],
    prepared: list[tuple[str, bytes]],
    rate: float,
    threads: int,
    max_lag: float,
) -> list[list[Any]]:
    due_queue: queue.SimpleQueue = queue.SimpleQueue()
    rows: list[list[Any]] = []
    lock = threading.Lock()
    overloaded = threading.Event()
    origin = time.perf_counter() + _START_DELAY

    def work() -> None:
        while (item := due_queue.get()) is not None:
            index, due = item
            bench_id, raw = prepared[index]
            started = time.perf_counter()
            if started - due > max_lag:
                overloaded.set()  # the server is that far behind: stop sending
                continue
            row = _timed(address, bench_id, raw, origin, due, started)
            with lock:
                rows.append(row)

    workers = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for index in range(len(prepared)):
        if overloaded.is_set():
            break
        due = origin + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        due_queue.put((index, due))
    for _ in workers:
        due_queue.put(None)
    for worker in workers:
        worker.join()
    return rows


def _timed(
    address: tuple[str, int], bench_id: str, raw: bytes, origin: float, due: float, started: float
) -> list[Any]:
    """POST one body; its row: id, when due, sent and answered (from origin), status[, error]."""
    status, error = _one(address, raw)
    ended = time.perf_counter()
    row = [bench_id, due - origin, started - origin, ended - origin, status]
    if error:
        row.append(error)
    return row


def _closed_loop(
    address: tuple[str, int], prepared: list[tuple[str, bytes]], threads: int, duration: float
) -> list[list[Any]]:
    rows: list[list[Any]] = []
    lock = threading.Lock()
    counter = iter(range(len(prepared)))
    origin = time.perf_counter() + _START_DELAY
    deadline = origin + duration

    def work() -> None:
        time.sleep(max(0.0, origin - time.perf_counter()))
        while time.perf_counter() < deadline:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            bench_id, raw = prepared[index]
            started = time.perf_counter()
            row = _timed(address, bench_id, raw, origin, started, started)
            with lock:
                rows.append(row)

    workers = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return rows


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
