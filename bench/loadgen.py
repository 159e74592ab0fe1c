"""Closed-loop load with Debian's `wrk`: one thread, `concurrency` connections, prebuilt bodies in turn."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.workload import CONTENT_TYPE

LUA_SCRIPT = Path(__file__).with_name("cycle_bodies.lua")
RESULT_PREFIX = "WRK_RESULT "
WRK = "wrk"


@dataclass(frozen=True)
class WrkResult:
    requests: int  # completed responses, any status
    seconds: float
    statuses: dict[int, int]  # HTTP status -> responses
    socket_errors: dict[str, int]  # connect/read/write/timeout, as wrk counts them
    latency_ms: dict[str, float]  # p50, p90, p99, mean, max
    client_cpu_cores: float  # wrk's own user + system CPU time over the run, in cores

    @property
    def succeeded(self) -> int:
        return sum(count for status, count in self.statuses.items() if 200 <= status < 300)

    @property
    def errors(self) -> dict[str, int]:
        """Non-2xx responses by status, plus socket errors by kind; empty when every request succeeded."""
        failed = {str(status): count for status, count in self.statuses.items() if not 200 <= status < 300}
        failed.update({kind: count for kind, count in self.socket_errors.items() if count})
        return failed


def wrk_version() -> str:
    completed = subprocess.run([WRK, "--version"], capture_output=True, text=True)
    first_line = (completed.stdout + completed.stderr).splitlines()[0]
    return first_line.split(" Copyright")[0].strip()  # "wrk debian/4.1.0-3+b2 [epoll]"


def check_wrk() -> None:
    if shutil.which(WRK) is None:
        raise FileNotFoundError("wrk is not installed (Debian: apt-get install wrk)")


def run_wrk(url: str, bodies: Path, concurrency: int, seconds: float) -> WrkResult:
    """POST the bodies in `bodies` to `url` from `concurrency` connections for `seconds`."""
    command = [
        WRK,
        "--threads", "1",
        "--connections", str(concurrency),
        "--duration", f"{seconds:g}s",
        "--timeout", "120s",  # wrk's default of 2 s would count slow answers under overload as errors
        "--script", str(LUA_SCRIPT),
        url,
        "--", str(bodies), CONTENT_TYPE,
    ]  # fmt: skip
    # RUSAGE_CHILDREN grows only when a child is reaped: between these two calls, that is wrk alone.
    usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line for line in completed.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if not lines:
        raise RuntimeError(f"wrk printed no result line:\n{completed.stdout}\n{completed.stderr}")
    result = json.loads(lines[-1].removeprefix(RESULT_PREFIX))
    elapsed = result["duration_us"] / 1e6
    client_cpu = (usage_after.ru_utime - usage_before.ru_utime) + (
        usage_after.ru_stime - usage_before.ru_stime
    )
    return WrkResult(
        requests=result["requests"],
        seconds=elapsed,
        statuses={int(status): count for status, count in result["statuses"].items()},
        socket_errors=result["socket_errors"],
        latency_ms={key: round(value / 1000, 2) for key, value in result["latency_us"].items()},
        client_cpu_cores=round(client_cpu / elapsed, 3),
    )
