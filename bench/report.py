"""Issue #9's targets computed from one run's results, and the markdown report."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable

GIB = 1024.0  # MiB
BUSY_MACHINE_CORES = 0.2  # CPU of other processes above which the report warns


COMPARE: dict[str, Callable[[float, float], bool]] = {
    "≥": operator.ge,
    "≤": operator.le,
    "<": operator.lt,
    "=": operator.eq,
}


def targets(results: dict) -> list[dict]:
    """Each target of issue #9 as {target, value, goal, pass, start_of_run}, from figures of this run only.

    A ratio or difference to the raw pipeline uses the level's paired reference (measured right before
    and after the level: `raw_pipeline.PairedReference`); `start_of_run` is the same figure against the
    sweep at the start of the run, for comparison.
    """
    service = {level["key"]: level for level in results["service"]["levels"]}
    ceiling = {model: _ceiling(results["raw"], model) for model in ("mnist", "photo")}

    def images(key: str) -> float:
        return service[key]["images_per_s"]

    def p50(key: str) -> float:
        return service[key]["latency_ms"]["p50"]

    def over_raw(key: str) -> tuple[float, float]:
        """images/s ÷ the raw images/s: paired, and the start-of-run best."""
        level = service[key]
        return images(key) / level["raw_reference"]["images_per_s"], images(key) / ceiling[level["model"]][0]

    def over_single(key: str) -> tuple[float, float]:
        """p50 − the raw single-image p50 (ms): paired, and the start-of-run sweep's."""
        level = service[key]
        return p50(key) - level["raw_reference"]["p50_ms"], p50(key) - ceiling[level["model"]][1]

    stock_c16 = {level["key"]: level for level in results["stock"]["levels"]}["mnist c=16"]["images_per_s"]
    errors = sum(sum(level["errors"].values()) for level in service.values())
    rss = {moment: total_mib(processes, "rss") for moment, processes in results["service"]["memory"].items()}
    checks = [
        ("MNIST c=16 images/s ÷ raw best", *over_raw("mnist c=16"), "≥", 0.33),
        ("MNIST c=16 p99 (ms)", service["mnist c=16"]["latency_ms"]["p99"], None, "≤", 25),
        ("MNIST c=16 images/s ÷ stock BentoML c=16", images("mnist c=16") / stock_c16, None, "≥", 4),
        ("MNIST c=64 images/s ÷ raw best", *over_raw("mnist c=64"), "≥", 0.4),
        ("errors, all service levels", errors, None, "=", 0),
        ("photo c=16 images/s ÷ raw best", *over_raw("photo c=16"), "≥", 0.9),
        ("photo c=64 images/s ÷ raw best", *over_raw("photo c=64"), "≥", 0.9),
        ("MNIST 64/request images/s ÷ raw best", *over_raw("mnist x64 c=4"), "≥", 0.8),
        ("MNIST c=1 p50 − raw single-image p50 (ms)", *over_single("mnist c=1"), "≤", 2),
        ("photo c=1 p50 − raw single-image p50 (ms)", *over_single("photo c=1"), "≤", 2),
        ("MNIST c=1 p50 after a burst ÷ c=1 p50", p50("mnist c=1 after burst") / p50("mnist c=1"), None, "≤",
         1.2),
        ("service RSS, all processes (GiB, largest snapshot)", max(rss.values()) / GIB, None, "≤", 1.5),
        ("service RSS growth over the run (end ÷ warm − 1)", rss["end"] / rss["warm"] - 1, None, "<", 0.05),
    ]  # fmt: skip
    return [
        {
            "target": name,
            "value": round(value, 3),
            "goal": f"{relation} {bound:g}",
            "pass": COMPARE[relation](value, bound),
            "start_of_run": None if start_of_run is None else round(start_of_run, 3),
        }
        for name, value, start_of_run, relation, bound in checks
    ]


def markdown(results: dict) -> str:
    """The report: targets, per-level figures of both servers, the raw sweep, memory, method."""
    settings = results["settings"]
    lines = [
        "# Serving benchmark (issue #9)",
        "",
        f"{results['date']}; {results['machine']}",
        "",
        f"Command: `{results['command']}`; {settings['seconds_per_level']} s per level, burst "
        f"{settings['burst_seconds']} s; {settings['wrk']}, 1 thread; service settings: "
        f"{settings['convnet_env'] or 'defaults'}; torch {settings['torch']}, BentoML {settings['bentoml']}.",
        "",
        "## Targets (ratios within this run)",
        "",
        *_background_warning(results),
        "Against the raw pipeline, 'measured' uses the level's paired reference (the raw pipeline "
        "measured right before and after the level: the 'raw reference' column below); the last column "
        "gives the same figure against the sweep at the start of the run.",
        "",
        "| target | measured | goal | pass | against the start-of-run sweep |",
        "|---|---|---|---|---|",
        *(_target_row(target) for target in results["targets"]),
        "",
        "## convnet-serve (`bash scripts/serve.sh`, defaults)",
        "",
        *_levels_table(results["service"]["levels"]),
        "",
        "## Stock BentoML reference (`bench/stock_service.py`)",
        "",
        *_levels_table(results["stock"]["levels"]),
        "",
        "## Raw in-process pipeline (no HTTP): images/s by batch size",
        "",
        *_raw_table(results["raw"]),
        "",
        "## Memory per process (MiB): after ready, after the warm-up, after the run",
        "",
        *_memory_table(results),
        "",
        "## How each figure is measured",
        "",
        *(f"- {line}" for line in results["method"]),
        "",
    ]
    return "\n".join(lines)


def _target_row(target: dict) -> str:
    start_of_run = "–" if target["start_of_run"] is None else f"{target['start_of_run']:g}"
    verdict = "pass" if target["pass"] else "FAIL"
    return row([target["target"], f"{target['value']:g}", target["goal"], verdict, start_of_run])


def _background_warning(results: dict) -> list[str]:
    """A note when other processes took a noticeable share of the 2 cores during any measurement."""
    figures = [
        *(level["other_cpu_cores"] for server in ("service", "stock") for level in results[server]["levels"]),
        *(result["other_cpu_cores"] for result in results["raw"].values()),
    ]
    if max(figures) < BUSY_MACHINE_CORES:
        return []
    return [
        f"**Other processes used up to {max(figures)} cores during the measurements (column 'other "
        "CPU'): the figures they overlap are lower than on a quiet machine, the raw pipeline's most "
        "(its torch threads wait for each other when a core is taken), so the ratios below are not "
        "meaningful: rerun on a quiet machine.**",
        "",
    ]


def _levels_table(levels: list[dict]) -> list[str]:
    rows = [
        "| level | requests | req/s | images/s | p50 ms | p90 ms | p99 ms | errors | server requests "
        "| server CPU | client CPU | other CPU | mean batch | raw reference |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for level in levels:
        latency = level["latency_ms"]
        errors = ", ".join(f"{kind}: {count}" for kind, count in level["errors"].items()) or "0"
        batch = "–" if level["mean_batch_size"] is None else level["mean_batch_size"]
        cells = [
            level["key"],
            level["requests"],
            level["requests_per_s"],
            level["images_per_s"],
            latency["p50"],
            latency["p90"],
            latency["p99"],
            errors,
            level["server_requests"],
            level["server_cpu_cores"],
            level["client_cpu_cores"],
            level["other_cpu_cores"],
            batch,
            _reference(level),
        ]
        rows.append(row(cells))
    return rows


def _reference(level: dict) -> str:
    """The level's paired raw reference as a table cell: single-image p50, or images/s at a batch size."""
    reference = level.get("raw_reference")
    if reference is None:
        return "–"
    if reference["batch_size"] == 1:
        return f"p50 {reference['p50_ms']} ms ({reference['backend']})"
    return f"{reference['images_per_s']} images/s ({reference['backend']}, batch {reference['batch_size']})"


def _ceiling(raw: dict, model: str) -> tuple[float, float]:
    """The raw pipeline's best images/s and lowest single-image p50 over the backends, for `model`."""
    results = [result for name, result in raw.items() if name.split()[0] == model]
    return (
        max(result["best_images_per_s"] for result in results),
        min(result["single_image_ms"]["p50"] for result in results),
    )


def _raw_table(raw: dict) -> list[str]:
    sizes = [point["batch_size"] for point in next(iter(raw.values()))["sweep"]]
    rows = [
        "| model | "
        + " | ".join(f"batch {size}" for size in sizes)
        + " | best | single image p50 ms | other CPU |",
        "|---|" + "---|" * (len(sizes) + 3),
    ]
    for name, result in raw.items():
        best = f"{result['best_images_per_s']} (batch {result['best_batch_size']})"
        speeds = [point["images_per_s"] for point in result["sweep"]]
        single = result["single_image_ms"]["p50"]
        rows.append(row([f"{name} ({result['model']})", *speeds, best, single, result["other_cpu_cores"]]))
    return rows


def _memory_table(results: dict) -> list[str]:
    moments = ("ready", "warm", "end")
    rows = [
        "| server | pid | process | " + " | ".join(f"RSS {m}" for m in moments) + " | "
        + " | ".join(f"PSS {m}" for m in moments) + " |",
        "|---|---|---|" + "---|" * 2 * len(moments),
    ]  # fmt: skip
    for server in ("service", "stock"):
        snapshots = {moment: {p["pid"]: p for p in results[server]["memory"][moment]} for moment in moments}
        for pid in sorted(set().union(*snapshots.values())):
            seen = [snapshots[moment].get(pid, {}) for moment in moments]
            command = next(process["command"] for process in seen if process).replace("|", "/")
            sizes = [process.get(f"{kind}_mib", "–") for kind in ("rss", "pss") for process in seen]
            rows.append(row([server, pid, f"`{command}`", *sizes]))
        totals = [
            f"**{total_mib(snapshots[m].values(), kind):.0f}**" for kind in ("rss", "pss") for m in moments
        ]
        rows.append(row([server, "", "**all processes**", *totals]))
    return rows


def total_mib(processes: Iterable[dict], kind: str) -> float:
    """The `rss` or `pss` of processes (as procstats.memory lists them) added up, in MiB."""
    return sum(process[f"{kind}_mib"] for process in processes)


def row(cells: list) -> str:
    """A markdown table row."""
    return "| " + " | ".join(str(cell) for cell in cells) + " |"
