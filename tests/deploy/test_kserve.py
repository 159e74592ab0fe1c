"""The KServe variant (deploy/k8s/kserve/{cpu,gpu}): one InferenceService whose custom predictor runs the
same image, speaks the Open Inference Protocol, and keeps the Deployment's probes, hardening and sizing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from service.v2 import PREFIX
from tests.deploy.crd_schemas import INFERENCE_SERVICE, PREDICTOR_EXTENSIONS
from tests.deploy.shutdown_timing import timing_problems
from tests.deploy.test_dockerfile import instructions
from tests.deploy.test_kustomize import K8S_VERSIONS, one
from tests.deploy.tools import DOCKERFILES, K8S, KSERVE_OVERLAYS, Docs

IMAGE_TAGS = {"cpu": "-cpu", "gpu": "-cuda"}


@pytest.fixture(params=KSERVE_OVERLAYS, ids=lambda name: f"kserve/{name}")
def variant(
    request: pytest.FixtureRequest, kustomize_build: Callable[[Path], Docs]
) -> tuple[str, dict[str, Any]]:
    """(overlay name, its one InferenceService)."""
    docs = kustomize_build(K8S / "kserve" / request.param)
    assert [d["kind"] for d in docs] == ["InferenceService"]
    return request.param, docs[0]


def predictor(service: dict[str, Any]) -> dict[str, Any]:
    return service["spec"]["predictor"]


def test_there_are_cpu_and_gpu_variants() -> None:
    assert KSERVE_OVERLAYS == sorted(IMAGE_TAGS)


def test_inference_service_matches_its_schema(variant: tuple[str, dict[str, Any]]) -> None:
    _, service = variant
    jsonschema.validate(service, INFERENCE_SERVICE)
    assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert 1 <= predictor(service)["minReplicas"] <= predictor(service)["maxReplicas"]


def test_predictor_is_a_valid_pod_spec(variant: tuple[str, dict[str, Any]]) -> None:
    _, service = variant
    spec = {key: value for key, value in predictor(service).items() if key not in PREDICTOR_EXTENSIONS}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}, "spec": spec}
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(pod, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"the predictor is no valid PodSpec for Kubernetes {version}: {e}")


def test_predictor_runs_the_image_and_speaks_v2(variant: tuple[str, dict[str, Any]]) -> None:
    name, service = variant
    (container,) = predictor(service)["containers"]
    assert container["name"] == "kserve-container"  # the container KServe treats as the model server
    assert container["image"].endswith(IMAGE_TAGS[name])
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["PROTOCOL"] == "v2"
    (port,) = container["ports"]
    assert str(port["containerPort"]) in instructions(DOCKERFILES[0], "EXPOSE")
    probes = {
        probe: container[probe]["httpGet"] for probe in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    assert all(get["port"] == port["name"] for get in probes.values())
    assert probes["startupProbe"]["path"] == probes["readinessProbe"]["path"] == f"{PREFIX}/health/ready"
    assert probes["livenessProbe"]["path"] == f"{PREFIX}/health/live"


def test_predictor_is_hardened_and_sized(variant: tuple[str, dict[str, Any]]) -> None:
    _, service = variant
    pod = predictor(service)
    (container,) = pod["containers"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {
        "/tmp",
        "/home/app/bentoml/prometheus_multiproc_dir",
    }
    env = {e["name"]: e["value"] for e in container["env"]}
    assert int(env["CONVNET_WORKERS"]) * int(env["CONVNET_TORCH_THREADS"]) <= float(
        container["resources"]["limits"]["cpu"]
    )
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()


def test_predictor_shutdown_and_probe_numbers_fit_together(variant: tuple[str, dict[str, Any]]) -> None:
    _, service = variant
    pod = predictor(service)
    assert timing_problems(pod, pod["containers"][0]) == []


def test_gpu_variant_requests_a_gpu(kustomize_build: Callable[[Path], Docs]) -> None:
    pod = predictor(one(kustomize_build(K8S / "kserve" / "gpu"), "InferenceService"))
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"name": "CONVNET_DEVICE", "value": "cuda"} in container["env"]
    assert pod["nodeSelector"] and pod["tolerations"]
