"""Gunicorn hooks for `python -m bench --profile`: cProfile each worker, dump it on exit.

Loaded with `gunicorn --config python:bench.gunicorn_profile`; the stats land in
$BENCH_PROFILE_DIR/worker-<pid>.prof and the harness prints the merged top functions.
Profiling slows the server down: the figures of a profiled run are not the budget's.
"""

import cProfile
import os
from typing import Any

_profiler: cProfile.Profile | None = None


def post_fork(server: Any, worker: Any) -> None:
    global _profiler
    _profiler = cProfile.Profile()
    _profiler.enable()


def worker_exit(server: Any, worker: Any) -> None:
    if _profiler is None:
        return
    _profiler.disable()
    directory = os.environ.get("BENCH_PROFILE_DIR", "var/bench/profiles")
    os.makedirs(directory, exist_ok=True)
    _profiler.dump_stats(os.path.join(directory, f"worker-{os.getpid()}.prof"))
