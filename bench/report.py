"""Results: budget checks, statistics, machine facts, the printed table and the JSON file."""

import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

PASS, FAIL, INFO, SKIP, ERROR = "PASS", "FAIL", "info", "SKIP", "ERROR"


@dataclass
class Check:
    """One measured figure and, when it has one, the budget it is held to."""

    name: str
    value: float | None
    unit: str
    limit: float | None = None
    at_most: bool = True  # the budget is a ceiling (latency, memory) or a floor (throughput)
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.limit is None:
            return INFO
        if self.value is None:
            return FAIL
        ok = self.value <= self.limit if self.at_most else self.value >= self.limit
        return PASS if ok else FAIL

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


@dataclass
class ScenarioResult:
    name: str
    issue: int
    status: str = "ran"  # ran | skipped | failed
    reason: str = ""
    checks: list[Check] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # lines printed under the table
    loadavg_before: list[float] = field(default_factory=list)
    loadavg_after: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def check(self, *args: Any, **kwargs: Any) -> Check:
        made = Check(*args, **kwargs)
        self.checks.append(made)
        return made

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["checks"] = [check.as_json() for check in self.checks]
        return data


def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile (share in 0..1); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * share // 1))  # ceil without floats drifting
    return ordered[int(rank) - 1]


def summary(values_ms: list[float]) -> dict[str, Any]:
    """Count, p50, p95, p99 and max of a list of milliseconds (rounded for reading)."""
    return {
        "n": len(values_ms),
        "p50": _round(percentile(values_ms, 0.50)),
        "p95": _round(percentile(values_ms, 0.95)),
        "p99": _round(percentile(values_ms, 0.99)),
        "max": _round(max(values_ms) if values_ms else None),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def loadavg() -> list[float]:
    with open("/proc/loadavg") as file:
        return [float(part) for part in file.read().split()[:3]]


def machine_facts(base_dir: Path, postgres_version: str) -> dict[str, Any]:
    """Where the numbers were taken: hardware, load, versions, commit."""
    model = ""
    with open("/proc/cpuinfo") as file:
        for line in file:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as file:
        mem_kb = int(next(line for line in file if line.startswith("MemTotal")).split()[1])
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "loadavg": loadavg(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "postgresql": postgres_version,
        "packages": {
            name: _version(name) for name in ("django", "gunicorn", "psycopg", "django-tasks-db")
        },
        "commit": _git(base_dir, "rev-parse", "--short", "HEAD"),
        "dirty": bool(_git(base_dir, "status", "--porcelain", "--untracked-files=no")),
    }


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "-"


def _git(base_dir: Path, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=base_dir, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()


def _figure(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else f"{value:.0f}"


def table(results: list[ScenarioResult]) -> str:
    """The results as a plain-text table, one line per check."""
    rows = [("scenario", "check", "measured", "budget", "verdict")]
    for result in results:
        if result.status != "ran":
            verdict = SKIP if result.status == "skipped" else ERROR
            rows.append((result.name, f"{result.status}: {result.reason}", "", "", verdict))
            continue
        for check in result.checks:
            measured = f"{_figure(check.value)} {check.unit}".strip()
            if check.limit is None:
                budget = ""
            else:
                sign = "≤" if check.at_most else "≥"
                budget = f"{sign} {_figure(check.limit)} {check.unit}".strip()
            name = check.name + (f"  ({check.note})" if check.note else "")
            rows.append((result.name, name, measured, budget, check.verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for index, row in enumerate(rows):
        cells = [row[i].ljust(widths[i]) if i != 2 else row[i].rjust(widths[i]) for i in range(4)]
        lines.append("  ".join([*cells, row[4]]).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in [*widths, 7]))
    return "\n".join(lines)


def write_json(path: Path, document: dict[str, Any]) -> list[Path]:
    """Write the results to `path` and to a timestamped copy beside it; return both paths."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    copy = path.with_name(f"{path.stem}-{stamp}{path.suffix}")
    text = json.dumps(document, indent=2, default=str)
    for target in (path, copy):
        target.write_text(text + "\n")
    return [path, copy]
