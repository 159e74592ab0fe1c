#!/usr/bin/env bash
# Build the image with podman and smoke-test it the way Kubernetes runs it (read-only root, no
# capabilities, uid 10001): wait for /readyz, classify a digit, scrape /metrics, then stop it with
# SIGTERM while a slow request is in flight and check that the request completes and the
# container exits by itself within the grace period.
#
# For machines without a Docker engine or a registry (run as root from the repository root):
#   - crun cannot start containers on some cgroup layouts: every podman call uses --runtime runc;
#   - the default ulimits are refused: nofile/nproc are set explicitly;
#   - no registry: the base image is Debian bookworm made with debootstrap and `podman import`;
#   - pip in the build uses the host's CA bundle, and optionally local wheel indexes
#     (PIP_LOCAL_INDEXES="/opt/pypi-more/simple /opt/pypi/simple": torch and its CUDA wheels).
# Needs: podman runc debootstrap curl (Debian packages), and a Python with Pillow for the digit.
#
#   bash deploy/scripts/podman-smoke.sh
set -euo pipefail

IMAGE=${IMAGE:-localhost/convnet-serve:smoke}
BASE_IMAGE=${BASE_IMAGE:-localhost/debian-bookworm-python:latest}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-}   # empty: PyPI's CUDA wheels, found in PIP_LOCAL_INDEXES here
PIP_LOCAL_INDEXES=${PIP_LOCAL_INDEXES:-}
PORT=${PORT:-3300}
PYTHON=${PYTHON:-.venv/bin/python}
READY_TIMEOUT=${READY_TIMEOUT:-300}
# terminationGracePeriodSeconds (40) minus the preStop sleep (5): what is left for the drain.
GRACE=${GRACE:-35}
SLOW_MS=1500
NAME=convnet-smoke
PODMAN=(podman --runtime runc)
LIMITS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
WORK=$(mktemp -d)

log() { printf '[smoke %s] %s\n' "$(date +%T)" "$*"; }
cleanup() {
    "${PODMAN[@]}" rm --force --ignore "$NAME" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

make_base_image() {
    if podman image exists "$BASE_IMAGE"; then
        return
    fi
    log "debootstrap bookworm -> $BASE_IMAGE"
    local root="$WORK/rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$root" >"$WORK/debootstrap.log"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
}

build_image() {
    local mounts=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
    local extra=""
    for index in $PIP_LOCAL_INDEXES; do
        local top
        top=$(dirname "$index")     # the index links to ../../files/*.whl beside simple/
        mounts+=(-v "$top:$top:ro")
        extra+=" file://$index"
    done
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\nextra-index-url =%s\n' "$extra" \
        >"$WORK/pip.conf"
    mounts+=(-v "$WORK/pip.conf:/etc/pip.conf:ro")
    log "build $IMAGE (BASE_IMAGE=$BASE_IMAGE TORCH_INDEX_URL=$TORCH_INDEX_URL)"
    "${PODMAN[@]}" build "${LIMITS[@]}" "${mounts[@]}" --format docker \
        --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg TORCH_INDEX_URL="$TORCH_INDEX_URL" \
        -f deploy/docker/Dockerfile -t "$IMAGE" .
}

write_digit() {
    # The first MNIST test image (a 7) when the data set is beside the project, else a drawn 7.
    "$PYTHON" - "$1" <<'EOF'
import gzip, sys
from pathlib import Path
from PIL import Image, ImageDraw
images = Path("../shared/data/mnist/t10k-images-idx3-ubyte.gz")
if images.is_file():
    with gzip.open(images) as f:
        f.read(16)
        digit = Image.frombytes("L", (28, 28), f.read(28 * 28))
else:
    digit = Image.new("L", (28, 28))
    ImageDraw.Draw(digit).line([(6, 6), (22, 6), (12, 24)], fill=255, width=3)
digit.save(sys.argv[1])
EOF
}

run_container() {
    log "run $IMAGE on 127.0.0.1:$PORT (read-only root, cap-drop ALL, uid 10001)"
    # --read-only mounts a tmpfs on /tmp; the Prometheus directory stands in for the emptyDir
    # (podman ignores tmpfs modes here, so a root-owned tmpfs would not be writable for uid 10001).
    # --no-healthcheck: podman runs HEALTHCHECK through systemd timers, absent here.
    mkdir -m 1777 "$WORK/prometheus"
    "${PODMAN[@]}" run -d --name "$NAME" "${LIMITS[@]}" -p "127.0.0.1:$PORT:3000" \
        --read-only -v "$WORK/prometheus:/home/app/bentoml/prometheus_multiproc_dir" \
        --cap-drop ALL --security-opt no-new-privileges --no-healthcheck \
        -e CONVNET_SIMULATED_LATENCY_MS="$SLOW_MS" "$IMAGE" >/dev/null
    local start=$SECONDS
    until curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do
        if ((SECONDS - start > READY_TIMEOUT)) || [[ $(podman inspect -f '{{.State.Running}}' "$NAME") != true ]]; then
            podman logs "$NAME" | tail -40
            log "FAIL: not ready after $((SECONDS - start)) s"
            return 1
        fi
        sleep 2
    done
    log "ready after $((SECONDS - start)) s"
}

classify() {
    curl -fsS -F "images=@$WORK/digit.png;type=image/png" "http://127.0.0.1:$PORT/classify/mnist"
}

main() {
    make_base_image
    build_image
    write_digit "$WORK/digit.png"
    run_container

    log "POST /classify/mnist -> $(classify)"

    local metrics
    metrics=$(curl -fsS "http://127.0.0.1:$PORT/metrics")
    for name in bentoml_service_request_total convnet_inference_seconds_count convnet_model_info; do
        grep -q "^$name" <<<"$metrics" || { log "FAIL: /metrics has no $name"; return 1; }
    done
    log "memory in use: $(podman stats --no-stream --format '{{.MemUsage}}' "$NAME")"
    log "/metrics: $(grep -c '^convnet_' <<<"$metrics") convnet_* samples; $(grep '^bentoml_service_request_total' <<<"$metrics" | grep classify | head -1)"

    log "SIGTERM with a ${SLOW_MS} ms request in flight (podman stop --time $GRACE)"
    classify >"$WORK/inflight.json" 2>"$WORK/inflight.err" &
    local client=$!
    sleep 0.5
    local start=$SECONDS
    "${PODMAN[@]}" stop --time "$GRACE" "$NAME" >/dev/null
    local took=$((SECONDS - start)) code
    code=$(podman inspect -f '{{.State.ExitCode}}' "$NAME")
    if wait "$client"; then
        log "in-flight request completed: $(cat "$WORK/inflight.json")"
    else
        log "FAIL: in-flight request dropped: $(cat "$WORK/inflight.err")"
        return 1
    fi
    podman logs "$NAME" 2>&1 | tail -5
    if ((code == 137)) || ((took >= GRACE)); then
        log "FAIL: killed after the grace period (exit $code after $took s)"
        return 1
    fi
    log "PASS: stopped in $took s (exit code $code, grace $GRACE s)"
}

main "$@"
