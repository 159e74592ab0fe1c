"""CPU time and memory of a server's whole process tree, and the machine's CPU time, read from /proc."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # recorded commands are relative to it

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    command: str  # the command line, shortened
    rss_bytes: int
    cpu_seconds: float  # utime + stime so far


def process_tree(root: int) -> list[ProcessInfo]:
    """`root` and all its descendants that are alive now, root first."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _read_stat(int(entry.name))
            if stat is not None:
                stats[int(entry.name)] = stat
    tree, frontier = [], [root]
    while frontier:
        pid = frontier.pop(0)
        if pid not in stats:
            continue
        tree.append(pid)
        frontier.extend(child for child, (ppid, _, _) in stats.items() if ppid == pid)
    return [ProcessInfo(pid, _command(pid), stats[pid][2], stats[pid][1]) for pid in tree]


def still_running(processes: list[ProcessInfo]) -> list[ProcessInfo]:
    """Those of `processes` that are alive now (same pid and same command line)."""
    return [process for process in processes if _command(process.pid) == process.command]


def cpu_cores(before: list[ProcessInfo], after: list[ProcessInfo], seconds: float) -> dict[int, float]:
    """Cores used per process between two snapshots (a process started in between counts from zero)."""
    start = {process.pid: process.cpu_seconds for process in before}
    return {
        process.pid: round((process.cpu_seconds - start.get(process.pid, 0.0)) / seconds, 3)
        for process in after
    }


def machine_busy_seconds() -> float:
    """CPU time spent by the whole machine outside idle and iowait since boot, all cores together."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(field) for field in fields)
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def memory(root: int) -> list[dict]:
    """pid, command, RSS and PSS (shared pages split between the processes that map them) in MiB,
    for every process of the tree."""
    return [
        {
            "pid": process.pid,
            "command": process.command,
            "rss_mib": round(process.rss_bytes / 2**20, 1),
            "pss_mib": round(_pss_bytes(process.pid) / 2**20, 1),
        }
        for process in process_tree(root)
    ]


def _pss_bytes(pid: int) -> int:
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    return next(int(line.split()[1]) * 1024 for line in rollup.splitlines() if line.startswith("Pss:"))


def _read_stat(pid: int) -> tuple[int, float, int] | None:
    """(parent pid, utime + stime in seconds, RSS in bytes), or None if the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    # After the name: state(3) ppid(4) ... utime(14) stime(15) ... rss(24), counted from field 3.
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS, int(fields[21]) * PAGE_SIZE


def _command(pid: int, width: int = 100) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    argv = [part.replace(f"{REPO}/", "") for part in raw.decode(errors="replace").split("\0") if part]
    if argv:
        argv[0] = Path(argv[0]).name
    command = " ".join(argv)
    return command if len(command) <= width else command[: width - 1] + "…"
