"""The manifests agree with the service's bearer-token authentication (service/auth.py): probes and scrapes
use open paths, the auth overlay mounts the token Secret as the file its setting names, no manifest holds a
token."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from service.auth import OPEN_PATHS
from tests.deploy.test_kustomize import one
from tests.deploy.tools import K8S, KSERVE_OVERLAYS, Docs

PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def pod_of(docs: Docs) -> dict[str, Any]:
    return one(docs, "Deployment")["spec"]["template"]["spec"]


def test_probes_and_scrapes_need_no_token(rendered: Docs) -> None:
    for container in pod_of(rendered)["containers"]:
        assert {container[probe]["httpGet"]["path"] for probe in PROBES} <= OPEN_PATHS
    assert {
        endpoint["path"] for endpoint in one(rendered, "ServiceMonitor")["spec"]["endpoints"]
    } <= OPEN_PATHS


@pytest.mark.parametrize("variant", KSERVE_OVERLAYS, ids=lambda name: f"kserve/{name}")
def test_kserve_probes_need_no_token(variant: str, kustomize_build: Callable[[Path], Docs]) -> None:
    predictor = one(kustomize_build(K8S / "kserve" / variant), "InferenceService")["spec"]["predictor"]
    for container in predictor["containers"]:
        assert {container[probe]["httpGet"]["path"] for probe in PROBES} <= OPEN_PATHS


def test_no_manifest_holds_a_token(rendered: Docs) -> None:
    for container in pod_of(rendered)["containers"]:
        for variable in container["env"]:
            if variable["name"] == "CONVNET_API_TOKEN":
                assert "value" not in variable, "a token belongs in a Secret (valueFrom), not in the manifest"


def test_authentication_is_opt_in(kustomize_build: Callable[[Path], Docs]) -> None:
    for overlay in ("cpu", "gpu"):
        env = {e["name"] for e in pod_of(kustomize_build(K8S / "overlays" / overlay))["containers"][0]["env"]}
        assert not {"CONVNET_API_TOKEN", "CONVNET_API_TOKEN_FILE"} & env


def test_the_auth_overlay_mounts_the_token_secret_as_the_file_it_names(
    kustomize_build: Callable[[Path], Docs],
) -> None:
    pod = pod_of(kustomize_build(K8S / "overlays" / "cpu-auth"))
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    token_file = PurePosixPath(env["CONVNET_API_TOKEN_FILE"]["value"])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(token_file.parent)]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    secret = volume["secret"]
    assert secret["secretName"] and secret.get("optional", False) is False  # no Secret, no start
    assert [item["path"] for item in secret["items"]] == [token_file.name]
    # Readable through the group the service's uid runs in, by nobody else.
    assert secret["defaultMode"] & 0o040 and not secret["defaultMode"] & 0o007
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
