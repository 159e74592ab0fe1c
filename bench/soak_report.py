"""The soak benchmark's markdown report (bench/soak.py)."""

from __future__ import annotations

from bench.report import row, total_mib

MOMENTS = ("ready", "start", "end")


def markdown(results: dict) -> str:
    settings, capacity = results["settings"], results["capacity"]
    minutes = results["minutes"]
    errors = sum(sum(minute["errors"].values()) for minute in minutes)
    requests = sum(minute["requests"] for minute in minutes)
    p99 = [minute["latency_ms"]["p99"] for minute in minutes]
    totals = {moment: total_mib(results["memory"][moment], "rss") for moment in MOMENTS}
    lines = [
        "# Soak benchmark",
        "",
        f"{results['date']}; {results['machine']}",
        "",
        f"Command: `{results['command']}`; server `{settings['server']}`, service settings: "
        f"{settings['convnet_env'] or 'defaults'}; BentoML {settings['bentoml']}; {settings['wrk']}.",
        "",
        "## Summary",
        "",
        f"- capacity: {capacity['requests_per_s']} requests/s (wrk closed loop, concurrency "
        f"{capacity['concurrency']}, {capacity['seconds']} s: p99 {capacity['latency_ms']['p99']} ms, "
        f"errors {capacity['errors'] or 0}, wrk {capacity['client_cpu_cores']} cores)",
        f"- soak: {settings['minutes']} min at {results['rate_per_s']} requests/s ({settings['load']:g} × "
        f"capacity), one digit per request, {settings['connections']} connections: {requests} requests, "
        f"{errors} errors",
        f"- p99 per minute: {min(p99)} to {max(p99)} ms",
        f"- server RSS, all processes: {totals['start']:.0f} MiB at the start, {totals['end']:.0f} MiB at "
        f"the end ({totals['end'] / totals['start'] - 1:+.1%})",
        "",
        "## Per minute",
        "",
        *_minutes_table(minutes),
        "",
        "## Memory per process (MiB)",
        "",
        *_memory_table(results["memory"]),
        "",
        "## How each figure is measured",
        "",
        *(f"- {line}" for line in results["method"]),
        "",
    ]
    return "\n".join(lines)


def _minutes_table(minutes: list[dict]) -> list[str]:
    rows = [
        "| minute | requests | 2xx/s | errors | p50 ms | p99 ms | max ms | client CPU | server CPU "
        "| other CPU | server RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for minute in minutes:
        latency = minute["latency_ms"]
        errors = ", ".join(f"{kind}: {count}" for kind, count in minute["errors"].items()) or "0"
        cells = [
            minute["minute"], minute["requests"], minute["ok_per_s"], errors, latency["p50"], latency["p99"],
            latency["max"], minute["client_cpu_cores"], minute["server_cpu_cores"], minute["other_cpu_cores"],
            minute["server_rss_mib"],
        ]  # fmt: skip
        rows.append(row(cells))
    return rows


def _memory_table(memory: dict[str, list[dict]]) -> list[str]:
    rows = [
        "| pid | process | " + " | ".join(f"RSS {m}" for m in MOMENTS) + " | RSS growth | "
        + " | ".join(f"PSS {m}" for m in MOMENTS) + " |",
        "|---|---|" + "---|" * (2 * len(MOMENTS) + 1),
    ]  # fmt: skip
    snapshots = {moment: {p["pid"]: p for p in memory[moment]} for moment in MOMENTS}
    for pid in sorted(set().union(*snapshots.values())):
        seen = [snapshots[moment].get(pid, {}) for moment in MOMENTS]
        command = next(process["command"] for process in seen if process).replace("|", "/")
        start, end = seen[1].get("rss_mib"), seen[2].get("rss_mib")
        growth = f"{end / start - 1:+.1%}" if start and end else "–"
        rss = [process.get("rss_mib", "–") for process in seen]
        pss = [process.get("pss_mib", "–") for process in seen]
        rows.append(row([pid, f"`{command}`", *rss, growth, *pss]))
    rss_totals = [total_mib(memory[m], "rss") for m in MOMENTS]
    growth = f"**{rss_totals[2] / rss_totals[1] - 1:+.1%}**"
    rows.append(
        row(
            [
                "",
                "**all processes**",
                *(f"**{t:.0f}**" for t in rss_totals),
                growth,
                *(f"**{total_mib(memory[m], 'pss'):.0f}**" for m in MOMENTS),
            ]
        )
    )
    return rows
