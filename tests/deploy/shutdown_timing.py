"""How a pod's shutdown and probe numbers must relate, for the Deployment and the KServe predictor alike.

On deletion the kubelet runs the preStop sleep (the endpoints drop the pod meanwhile), then sends SIGTERM:
the service answers readiness and new requests 503 and answers what it has for up to BentoML's
`--timeout-graceful-shutdown` (the image's ENTRYPOINT), then exits; SIGKILL follows
`terminationGracePeriodSeconds` after the start of the preStop sleep.
"""

from __future__ import annotations

import os
from typing import Any
from unittest import mock

from service.settings import ServiceSettings
from tests.deploy.tools import graceful_shutdown_seconds

# After the drain the worker stops and `bentoml serve` exits: 0.6-0.9 s measured
# (tests/service/test_shutdown_e2e.py).
EXIT_AFTER_DRAIN_S = 5
# A killed worker is replaced by `bentoml serve` once the new one has loaded its models: 8-21 s measured
# under load on a shared 2-core machine (tests/service/test_worker_crash_e2e.py).
WORKER_RESTART_S = 21
# Checked against this machine's cores by the settings; nothing to do with timing.
CORE_SETTINGS = ("CONVNET_WORKERS", "CONVNET_TORCH_THREADS")


def longest_request_s(env: dict[str, str]) -> float:
    """The longest a request is served with these `CONVNET_*` variables: its images wait in the queue at
    most the slowest model's max latency (then it is answered 503 overloaded), then one forward pass,
    which the batch sizes must keep within that latency too."""
    convnet = {k: v for k, v in env.items() if k.startswith("CONVNET_") and k not in CORE_SETTINGS}
    with mock.patch.dict(os.environ, convnet, clear=True):
        settings = ServiceSettings()
    return 2 * max(settings.latency_ms(name) for name in settings.models) / 1000


def window_s(probe: dict[str, Any], failures: int | None = None) -> int:
    """Seconds of consecutive failures before the kubelet acts on a probe."""
    return probe["periodSeconds"] * (probe["failureThreshold"] if failures is None else failures)


def timing_problems(pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
    """Every relation between the shutdown and probe numbers that does not hold; [] when all do."""
    grace = pod["terminationGracePeriodSeconds"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = graceful_shutdown_seconds()
    longest = longest_request_s({e["name"]: e.get("value", "") for e in container.get("env", [])})
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    checks = [
        (
            pre_stop >= 1,
            f"a preStop sleep ({pre_stop} s) keeps the pod serving while the endpoints drop it",
        ),
        (
            grace >= pre_stop + drain + EXIT_AFTER_DRAIN_S,
            f"terminationGracePeriodSeconds {grace} >= preStop {pre_stop} + drain {drain} "
            f"+ exit {EXIT_AFTER_DRAIN_S}",
        ),
        (drain >= longest, f"the drain ({drain} s) outlasts the longest request ({longest:g} s)"),
        (
            window_s(readiness) < window_s(liveness),
            f"readiness drops the pod ({window_s(readiness)} s) before liveness restarts it "
            f"({window_s(liveness)} s)",
        ),
        (
            window_s(liveness, liveness["failureThreshold"] - 1) > WORKER_RESTART_S,
            f"liveness outlasts a worker restart ({WORKER_RESTART_S} s): "
            f"{liveness['failureThreshold']} failures {liveness['periodSeconds']} s apart",
        ),
    ]
    return [relation for holds, relation in checks if not holds]
