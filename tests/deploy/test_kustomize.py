"""Every overlay renders, validates (built-in kinds and CRDs), and its objects refer to each other."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from tests.deploy.crd_schemas import CRD_SCHEMAS
from tests.deploy.shutdown_timing import timing_problems
from tests.deploy.tools import K8S, Docs, find_tool

# An older release still common in clusters (the preStop `sleep` action needs 1.30+) and the newest
# release kubernetes-validate knows.
K8S_VERSIONS = ["1.32.0", kubernetes_validate.latest_version()]
CLUSTER_SCOPED = {"Namespace"}


def one(docs: Docs, kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def is_subset(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def promql_equal_matchers(query: str) -> dict[str, str]:
    """label="value" matchers of a PromQL query (not =~, != or !~)."""
    return dict(re.findall(r'(?<![!\w])(\w+)\s*=\s*"([^"]*)"', query))


def reference_problems(docs: Docs, *, check_query: bool = True) -> list[str]:
    """Every cross-object reference kustomize may have left stale; [] when all hold."""
    problems: list[str] = []
    deployment = one(docs, "Deployment")
    name = deployment["metadata"]["name"]
    namespace = deployment["metadata"].get("namespace")
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    container = pod["spec"]["containers"][0]
    port_names = {p["name"] for p in container["ports"]}

    namespaces = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
    if namespace not in namespaces:
        problems.append(f"the Namespace object is not the Deployment's namespace {namespace!r}")
    for doc in docs:
        if doc["kind"] not in CLUSTER_SCOPED and doc["metadata"].get("namespace") != namespace:
            problems.append(f"{doc['kind']} {doc['metadata']['name']} is not in namespace {namespace!r}")

    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    if pod["spec"].get("serviceAccountName") not in accounts:
        problems.append(f"serviceAccountName {pod['spec'].get('serviceAccountName')!r} not in {accounts}")

    if not deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items():
        problems.append("the Deployment's selector does not match its pod template")

    service = one(docs, "Service")
    if not is_subset(service["spec"]["selector"], pod_labels):
        problems.append("the Service's selector does not match the pod labels")
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    for port in service_ports.values():
        if port["targetPort"] not in port_names:
            problems.append(f"Service targetPort {port['targetPort']!r} is no container port name")

    if not is_subset(one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod_labels):
        problems.append("the PodDisruptionBudget's selector does not match the pod labels")
    policy = one(docs, "NetworkPolicy")
    if not is_subset(policy["spec"]["podSelector"]["matchLabels"], pod_labels):
        problems.append("the NetworkPolicy's podSelector does not match the pod labels")
    for rule in policy["spec"]["ingress"]:
        for port in rule["ports"]:
            if port["port"] not in port_names:
                problems.append(f"NetworkPolicy ingress port {port['port']!r} is no container port name")

    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        if container[probe]["httpGet"]["port"] not in port_names:
            problems.append(f"{probe} port is no container port name")

    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    for monitor in monitors:
        if not is_subset(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"]):
            problems.append("the ServiceMonitor's selector does not match the Service's labels")
        for endpoint in monitor["spec"]["endpoints"]:
            if endpoint["port"] not in service_ports:
                problems.append(f"ServiceMonitor port {endpoint['port']!r} is no Service port name")

    for scaled in (d for d in docs if d["kind"] == "ScaledObject"):
        target = scaled["spec"]["scaleTargetRef"]
        if (target.get("kind", "Deployment"), target["name"]) != ("Deployment", name):
            problems.append(f"ScaledObject targets {target}, not Deployment {name}")
        if "replicas" in deployment["spec"]:
            problems.append("the Deployment sets replicas although KEDA's HPA owns them")
        if check_query and monitors:
            job_label = monitors[0]["spec"].get("jobLabel")
            job = service["metadata"]["labels"].get(job_label, service["metadata"]["name"])
            expected = {"namespace": namespace, "job": job}
            for trigger in scaled["spec"]["triggers"]:
                matchers = promql_equal_matchers(trigger["metadata"]["query"])
                problems += [
                    f"ScaledObject query has {label}={matchers.get(label)!r}, not {value!r}"
                    for label, value in expected.items()
                    if matchers.get(label) != value
                ]
    return problems


def test_builtin_kinds_pass_kubernetes_validate_strict(rendered: Docs) -> None:
    for version in K8S_VERSIONS:
        for doc in rendered:
            if doc["kind"] in CRD_SCHEMAS:
                continue
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{doc['kind']} {doc['metadata']['name']} invalid for Kubernetes {version}: {e}")


def test_crd_objects_match_their_schemas(rendered: Docs) -> None:
    kinds = {d["kind"] for d in rendered}
    assert set(CRD_SCHEMAS) <= kinds, f"missing CRD objects: {set(CRD_SCHEMAS) - kinds}"
    for doc in rendered:
        if doc["kind"] in CRD_SCHEMAS:
            jsonschema.validate(doc, CRD_SCHEMAS[doc["kind"]])


def test_scaledobject_is_a_valid_hpa(rendered: Docs) -> None:
    """KEDA turns the ScaledObject into an HPA: its behavior and bounds must be valid there."""
    spec = one(rendered, "ScaledObject")["spec"]
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "keda-hpa"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "convnet-serve"},
            "minReplicas": spec["minReplicaCount"],
            "maxReplicas": spec["maxReplicaCount"],
            "behavior": spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"],
        },
    }
    kubernetes_validate.validate(hpa, K8S_VERSIONS[-1], strict=True)
    for trigger in spec["triggers"]:
        assert trigger["type"] == "prometheus"
        metadata = trigger["metadata"]
        assert {"serverAddress", "query", "threshold"} <= metadata.keys()
        assert float(metadata["threshold"]) > 0
        # A falling signal: a gauge or a rate/average, never a raw cumulative counter.
        query = metadata["query"]
        assert "_total" not in query or re.search(r"\b(rate|irate|increase)\(", query), query


def test_cross_references_hold(rendered: Docs) -> None:
    assert reference_problems(rendered) == []


def test_cross_references_survive_a_name_prefix(
    tmp_path: Path, kustomize_build: Callable[[Path], Docs]
) -> None:
    """kustomize renames references it knows; the components teach it the ScaledObject's target."""
    cpu = os.path.relpath(K8S / "overlays" / "cpu", tmp_path)  # kustomize refuses absolute paths
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"namePrefix: team-\nnameSuffix: -v2\nresources:\n  - {cpu}\n"
    )
    docs = kustomize_build(tmp_path)
    assert one(docs, "Deployment")["metadata"]["name"] == "team-convnet-serve-v2"
    # The PromQL query is a string kustomize cannot rewrite; job stays "convnet-serve" via jobLabel.
    assert reference_problems(docs, check_query=False) == []


def test_pods_are_hardened(rendered: Docs) -> None:
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for container in pod["containers"]:
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"]["drop"] == ["ALL"]
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
        assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
        assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/tmp", "/home/app/bentoml/prometheus_multiproc_dir"} <= mounts
    account = one(rendered, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False


def test_threads_fit_the_cpu_limit(rendered: Docs) -> None:
    container = one(rendered, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    threads = int(env["CONVNET_WORKERS"]) * int(env["CONVNET_TORCH_THREADS"])
    assert threads <= float(container["resources"]["limits"]["cpu"])


def test_shutdown_and_probe_numbers_fit_together(rendered: Docs) -> None:
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    assert timing_problems(pod, pod["containers"][0]) == []


def test_monitoring_keeps_bentoml_labels(rendered: Docs) -> None:
    """BentoML's `endpoint` label must survive the scrape: the rules and the autoscaler filter on it."""
    for endpoint in one(rendered, "ServiceMonitor")["spec"]["endpoints"]:
        assert endpoint["path"] == "/metrics"
        assert endpoint["honorLabels"] is True


def test_gpu_overlay_requests_a_gpu(kustomize_build: Callable[[Path], Docs]) -> None:
    pod = one(kustomize_build(K8S / "overlays" / "gpu"), "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"name": "CONVNET_DEVICE", "value": "cuda"} in container["env"]
    assert container["image"].endswith("-cuda")
    assert pod["nodeSelector"] and pod["tolerations"]


def test_kubectl_is_recent_enough() -> None:
    """`labels:` and components need kustomize v4+; Debian's kubernetes-client (1.20) has v2."""
    out = subprocess.run([find_tool("kubectl"), "version", "--client"], capture_output=True, text=True).stdout
    match = re.search(r"Kustomize Version: v(\d+)", out)
    assert match and int(match.group(1)) >= 5, out
