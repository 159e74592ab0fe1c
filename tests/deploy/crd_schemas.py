"""JSON schemas for the fields of the CRD objects the manifests use.

The operators' own CRD schemas are not installable offline, so these cover the required fields,
their types, and (through additionalProperties: false) typos in the fields we write, following
prometheus-operator's monitoring.coreos.com/v1, KEDA's keda.sh/v1alpha1 and KServe's
serving.kserve.io/v1beta1 references.
A field that the operator accepts but that is missing here fails the test: add it here.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

DURATION: Schema = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
STRING_MAP: Schema = {"type": "object", "additionalProperties": {"type": "string"}}
LABEL_SELECTOR: Schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"matchLabels": STRING_MAP, "matchExpressions": {"type": "array"}},
}


def _object(required: list[str], properties: dict[str, Schema]) -> Schema:
    return {"type": "object", "required": required, "additionalProperties": False, "properties": properties}


def _resource(api_version: str, kind: str, spec: Schema) -> Schema:
    metadata = {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string", "minLength": 1}, "namespace": {"type": "string"}},
    }
    return _object(
        ["apiVersion", "kind", "metadata", "spec"],
        {"apiVersion": {"const": api_version}, "kind": {"const": kind}, "metadata": metadata, "spec": spec},
    )


_SCRAPE_ENDPOINT = _object(
    [],
    {
        "port": {"type": "string"},
        "targetPort": {"type": ["string", "integer"]},
        "path": {"type": "string"},
        "scheme": {"enum": ["http", "https"]},
        "params": {"type": "object"},
        "interval": DURATION,
        "scrapeTimeout": DURATION,
        "honorLabels": {"type": "boolean"},
        "honorTimestamps": {"type": "boolean"},
        "relabelings": {"type": "array"},
        "metricRelabelings": {"type": "array"},
        "tlsConfig": {"type": "object"},
        "authorization": {"type": "object"},
        "followRedirects": {"type": "boolean"},
        "enableHttp2": {"type": "boolean"},
        "filterRunning": {"type": "boolean"},
    },
)

SERVICE_MONITOR = _resource(
    "monitoring.coreos.com/v1",
    "ServiceMonitor",
    _object(
        ["selector", "endpoints"],
        {
            "selector": LABEL_SELECTOR,
            "endpoints": {"type": "array", "minItems": 1, "items": _SCRAPE_ENDPOINT},
            "jobLabel": {"type": "string"},
            "targetLabels": {"type": "array", "items": {"type": "string"}},
            "podTargetLabels": {"type": "array", "items": {"type": "string"}},
            "namespaceSelector": {"type": "object"},
            "sampleLimit": {"type": "integer", "minimum": 0},
            "scrapeClass": {"type": "string"},
        },
    ),
)

_RULE = {
    **_object(
        ["expr"],
        {
            "alert": {"type": "string", "minLength": 1},
            "record": {"type": "string", "minLength": 1},
            "expr": {"type": ["string", "integer"]},
            "for": DURATION,
            "keep_firing_for": DURATION,
            "labels": STRING_MAP,
            "annotations": STRING_MAP,
        },
    ),
    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
}

PROMETHEUS_RULE = _resource(
    "monitoring.coreos.com/v1",
    "PrometheusRule",
    _object(
        ["groups"],
        {
            "groups": {
                "type": "array",
                "items": _object(
                    ["name"],
                    {
                        "name": {"type": "string", "minLength": 1},
                        "interval": DURATION,
                        "query_offset": DURATION,
                        "limit": {"type": "integer"},
                        "labels": STRING_MAP,
                        "partial_response_strategy": {"type": "string"},
                        "rules": {"type": "array", "items": _RULE},
                    },
                ),
            }
        },
    ),
)

_TRIGGER = _object(
    ["type", "metadata"],
    {
        "type": {"type": "string"},
        "name": {"type": "string"},
        # KEDA reads trigger metadata as strings only: `threshold: 4` (a number) is rejected.
        "metadata": STRING_MAP,
        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
        "authenticationRef": _object(["name"], {"name": {"type": "string"}, "kind": {"type": "string"}}),
        "useCachedMetrics": {"type": "boolean"},
    },
)

SCALED_OBJECT = _resource(
    "keda.sh/v1alpha1",
    "ScaledObject",
    _object(
        ["scaleTargetRef", "triggers"],
        {
            "scaleTargetRef": _object(
                ["name"],
                {
                    "name": {"type": "string", "minLength": 1},
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "envSourceContainerName": {"type": "string"},
                },
            ),
            "pollingInterval": {"type": "integer", "minimum": 1},
            "cooldownPeriod": {"type": "integer", "minimum": 0},
            "initialCooldownPeriod": {"type": "integer", "minimum": 0},
            "idleReplicaCount": {"type": "integer", "minimum": 0},
            "minReplicaCount": {"type": "integer", "minimum": 0},
            "maxReplicaCount": {"type": "integer", "minimum": 1},
            "fallback": _object(
                ["failureThreshold", "replicas"],
                {"failureThreshold": {"type": "integer"}, "replicas": {"type": "integer"}},
            ),
            "advanced": _object(
                [],
                {
                    "restoreToOriginalReplicaCount": {"type": "boolean"},
                    # behavior is Kubernetes' HorizontalPodAutoscalerBehavior: checked by kubernetes-validate.
                    "horizontalPodAutoscalerConfig": _object(
                        [], {"name": {"type": "string"}, "behavior": {"type": "object"}}
                    ),
                    "scalingModifiers": {"type": "object"},
                },
            ),
            "triggers": {"type": "array", "minItems": 1, "items": _TRIGGER},
        },
    ),
)

# KServe's ComponentExtensionSpec (pkg/apis/serving/v1beta1/component.go): the fields a custom predictor
# adds to the Kubernetes PodSpec it inlines. The rest of the predictor is checked as a PodSpec by
# kubernetes-validate (tests/deploy/test_kserve.py), so a typo fails one check or the other.
PREDICTOR_EXTENSIONS: dict[str, Schema] = {
    "minReplicas": {"type": "integer", "minimum": 0},
    "maxReplicas": {"type": "integer", "minimum": 0},
    "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
    "scaleTarget": {"type": "integer", "minimum": 1},
    "containerConcurrency": {"type": "integer", "minimum": 0},
    "timeout": {"type": "integer", "minimum": 1},
    "canaryTrafficPercent": {"type": "integer", "minimum": 0, "maximum": 100},
    "labels": STRING_MAP,
    "annotations": STRING_MAP,
    "deploymentStrategy": {"type": "object"},
}

INFERENCE_SERVICE = _resource(
    "serving.kserve.io/v1beta1",
    "InferenceService",
    _object(
        ["predictor"],
        {
            "predictor": {
                "type": "object",
                "required": ["containers"],
                "properties": {**PREDICTOR_EXTENSIONS, "containers": {"type": "array", "minItems": 1}},
            }
        },
    ),
)

# The CRD objects of every overlay under deploy/k8s/overlays (deploy/k8s/kserve: INFERENCE_SERVICE).
CRD_SCHEMAS: dict[str, Schema] = {
    "ServiceMonitor": SERVICE_MONITOR,
    "PrometheusRule": PROMETHEUS_RULE,
    "ScaledObject": SCALED_OBJECT,
}
