"""Custom Prometheus metrics (names and labels are in docs/contract.md).

Module-level `prometheus_client` objects: BentoML starts every worker with PROMETHEUS_MULTIPROC_DIR
set, so each process writes its own file and `/metrics` adds them up.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

batch_wait_seconds = Histogram(
    "convnet_batch_wait_seconds",
    "Time from the front handing an image to the model service until its batch starts",
    ["model"],
    buckets=SECONDS_BUCKETS,
)
preprocess_seconds = Histogram(
    "convnet_preprocess_seconds",
    "Decode + preprocess time of one request",
    ["model"],
    buckets=SECONDS_BUCKETS,
)
inference_seconds = Histogram(
    "convnet_inference_seconds",
    "Duration of one forward pass (one batch)",
    ["model"],
    buckets=SECONDS_BUCKETS,
)
batch_size = Histogram(
    "convnet_batch_size",
    "Images per forward pass actually run",
    ["model"],
    buckets=BATCH_SIZE_BUCKETS,
)
predictions_total = Counter(
    "convnet_predictions_total",
    "Top-1 predictions per class",
    ["model", "label"],
)
model_info = Gauge(
    "convnet_model_info",
    "The loaded model (value 1)",
    ["model", "name", "version", "arch", "device"],
    multiprocess_mode="livemax",
)
rejected_inputs_total = Counter(
    "convnet_rejected_inputs_total",
    "Requests refused, by reason",
    ["model", "reason"],
)
explanation_seconds = Histogram(
    "convnet_explanation_seconds",
    "Time to answer one explanation (kind gradcam or features), from joining the explanation queue",
    ["model", "kind"],
    buckets=SECONDS_BUCKETS,
)
