"""The training manifests (deploy/k8s/training): the GPU Job and the Kubeflow PyTorchJob render,
validate, refer to objects that exist, run hardened on a GPU, and run the repository's recipe."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.tools import K8S, REPO, Docs

TRAINING = K8S / "training"
VARIANTS = ["job", "pytorchjob"]
K8S_VERSIONS = ["1.32.0", kubernetes_validate.latest_version()]
NAMESPACE = "convnet-serve"

# The part of Kubeflow's PyTorchJob CRD (kubeflow.org/v1) these manifests use.
PYTORCHJOB_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "kubeflow.org/v1"},
        "spec": {
            "type": "object",
            "required": ["pytorchReplicaSpecs"],
            "properties": {
                "runPolicy": {
                    "type": "object",
                    "properties": {
                        "backoffLimit": {"type": "integer", "minimum": 0},
                        "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
                        "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
                        "cleanPodPolicy": {"enum": ["All", "Running", "None"]},
                    },
                    "additionalProperties": False,
                },
                "pytorchReplicaSpecs": {
                    "type": "object",
                    "required": ["Master"],
                    "propertyNames": {"enum": ["Master", "Worker"]},
                    "additionalProperties": {
                        "type": "object",
                        "required": ["replicas", "template"],
                        "properties": {
                            "replicas": {"type": "integer", "minimum": 1},
                            "restartPolicy": {"enum": ["Always", "OnFailure", "Never", "ExitCode"]},
                            "template": {"type": "object"},
                        },
                        "additionalProperties": False,
                    },
                },
            },
            "additionalProperties": False,
        },
    },
}


@pytest.fixture(params=VARIANTS, ids=lambda name: f"training/{name}")
def rendered(request: pytest.FixtureRequest, kustomize_build: Callable[[Path], Docs]) -> Docs:
    return kustomize_build(TRAINING / request.param)


def by_kind(docs: Docs, kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def pod_templates(docs: Docs) -> dict[str, dict[str, Any]]:
    """Role -> pod template: the Job's, or the PyTorchJob's Master and Worker."""
    templates = {d["metadata"]["name"]: d["spec"]["template"] for d in by_kind(docs, "Job")}
    for job in by_kind(docs, "PyTorchJob"):
        templates |= {role: spec["template"] for role, spec in job["spec"]["pytorchReplicaSpecs"].items()}
    assert templates, "no Job and no PyTorchJob"
    return templates


def script(template: dict[str, Any]) -> str:
    container = template["spec"]["containers"][0]
    return " ".join(container.get("command", []) + container.get("args", []))


def test_builtin_kinds_pass_kubernetes_validate_strict(rendered: Docs) -> None:
    for version in K8S_VERSIONS:
        for doc in rendered:
            if doc["kind"] == "PyTorchJob":
                continue
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{doc['kind']} {doc['metadata']['name']} invalid for Kubernetes {version}: {e}")


def test_the_pytorchjob_matches_its_crd_and_its_pods_are_valid(
    kustomize_build: Callable[[Path], Docs],
) -> None:
    (job,) = by_kind(kustomize_build(TRAINING / "pytorchjob"), "PyTorchJob")
    jsonschema.validate(job, PYTORCHJOB_SCHEMA)
    for role, template in pod_templates([job]).items():
        pod_template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": role},
            "template": template,
        }
        kubernetes_validate.validate(pod_template, K8S_VERSIONS[-1], strict=True)
        assert template["spec"]["containers"][0]["name"] == "pytorch"  # the operator's container name


def test_references_hold(rendered: Docs) -> None:
    for doc in rendered:
        assert doc["metadata"].get("namespace") == NAMESPACE, doc["metadata"]["name"]
    accounts = {d["metadata"]["name"] for d in by_kind(rendered, "ServiceAccount")}
    claims = {d["metadata"]["name"] for d in by_kind(rendered, "PersistentVolumeClaim")}
    maps = {d["metadata"]["name"] for d in by_kind(rendered, "ConfigMap")}
    for template in pod_templates(rendered).values():
        pod = template["spec"]
        assert pod["serviceAccountName"] in accounts
        volumes = {v["name"]: v for v in pod["volumes"]}
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
            if "configMap" in volume:
                assert volume["configMap"]["name"] in maps
        for mount in pod["containers"][0]["volumeMounts"]:
            assert mount["name"] in volumes


def test_pods_run_hardened_on_a_gpu(rendered: Docs) -> None:
    for template in pod_templates(rendered).values():
        pod = template["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"} and pod["tolerations"]
        container = pod["containers"][0]
        assert container["image"].endswith("-cuda")
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        security = container["securityContext"]
        assert (security["readOnlyRootFilesystem"], security["allowPrivilegeEscalation"]) == (True, False)
        assert security["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts["/data"]["readOnly"] is True and "/runs" in mounts and "/tmp" in mounts
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["BENTOML_HOME"].startswith("/runs/")  # export's store outlives the pod


def test_every_pod_resumes_and_rank_0_alone_exports(rendered: Docs) -> None:
    templates = pod_templates(rendered)
    for role, template in templates.items():
        commands = script(template)
        assert "python -m training train --config /recipe/recipe.yaml --out /runs/photo --resume" in commands
        exports = "python -m training export /runs/photo" in commands
        assert exports == (role != "Worker"), role
        if exports:
            assert "bentoml models export photo-classifier:latest /runs/exported/" in commands


def test_the_cluster_recipe_is_the_repository_recipe_on_the_volumes(
    kustomize_build: Callable[[Path], Docs],
) -> None:
    (recipe_map,) = by_kind(kustomize_build(TRAINING / "job"), "ConfigMap")
    cluster = yaml.safe_load(recipe_map["data"]["recipe.yaml"])
    repository = yaml.safe_load((REPO / "configs" / "hymenoptera_mobilenet_v2.yaml").read_text())
    paths = ("data_dir", "weights")
    assert {k: v for k, v in cluster.items() if k not in paths} == {
        k: v for k, v in repository.items() if k not in paths
    }
    assert cluster["data_dir"] == "/data/hymenoptera"
    assert cluster["weights"] == "/data/weights/" + Path(repository["weights"]).name

    from training.options import resolve
    from training.recipes import finetune

    assert resolve(finetune.Config, cluster, {}, "recipe.yaml").arch == "mobilenet_v2"
