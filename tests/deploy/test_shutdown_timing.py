"""The shutdown and probe relations (shutdown_timing.py) hold for the base Deployment, and each one is
caught when a number breaks it."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.shutdown_timing import longest_request_s, timing_problems
from tests.deploy.test_kustomize import one
from tests.deploy.tools import K8S, Docs

Pod = dict[str, Any]


def set_grace(seconds: int) -> Callable[[Pod], None]:
    return lambda pod: pod.update(terminationGracePeriodSeconds=seconds)


def set_in_container(path: str, value: Any) -> Callable[[Pod], None]:
    def change(pod: Pod) -> None:
        *parents, key = path.split(".")
        node = pod["containers"][0]
        for parent in parents:
            node = node[parent]
        node[key] = value

    return change


def add_env(name: str, value: str) -> Callable[[Pod], None]:
    return lambda pod: pod["containers"][0]["env"].append({"name": name, "value": value})


@pytest.fixture
def pod(kustomize_build: Callable[[Path], Docs]) -> Pod:
    deployment = one(kustomize_build(K8S / "base"), "Deployment")
    return copy.deepcopy(deployment["spec"]["template"]["spec"])


def test_the_base_deployment_holds_every_relation(pod: Pod) -> None:
    assert timing_problems(pod, pod["containers"][0]) == []


@pytest.mark.parametrize(
    ("change", "broken"),
    [
        (set_grace(25), "terminationGracePeriodSeconds 25 >= preStop 5 + drain 20 + exit 5"),
        (set_in_container("lifecycle.preStop.sleep.seconds", 0), "a preStop sleep (0 s)"),
        (add_env("CONVNET_PHOTO_MAX_LATENCY_MS", "15000"), "outlasts the longest request (30 s)"),
        (set_in_container("readinessProbe.failureThreshold", 10), "readiness drops the pod (50 s)"),
        (set_in_container("livenessProbe.failureThreshold", 3), "liveness outlasts a worker restart"),
    ],
    ids=["grace", "pre-stop", "longest-request", "readiness", "liveness"],
)
def test_each_broken_relation_is_named(pod: Pod, change: Callable[[Pod], None], broken: str) -> None:
    change(pod)
    problems = timing_problems(pod, pod["containers"][0])
    assert len(problems) == 1 and broken in problems[0], problems


def test_the_longest_request_follows_the_slowest_model() -> None:
    assert longest_request_s({}) == 2.0  # 1000 ms queue limit for both default models
    assert longest_request_s({"CONVNET_MAX_LATENCY_MS": "3000"}) == 6.0
    assert longest_request_s({"CONVNET_PHOTO_MAX_LATENCY_MS": "4000"}) == 8.0
    table = '{"digits": {"tag": "mnist-convnet:latest", "max_latency_ms": 2500}}'
    assert longest_request_s({"CONVNET_MODELS": table}) == 5.0
