#!/usr/bin/env bash
# Entry point of the image under `docker run` / docker compose: a one-node Ray cluster
# serving $SERVE_CONFIG. KubeRay pods never run this: the operator starts Ray in each
# pod and deploys the RayService's serveConfigV2 itself.
set -euo pipefail
cd "$(dirname "$0")"

# Ray Serve's process settings (configs/ray.env) must be in the environment of
# `ray start`; a value the container was given wins over the file's.
while IFS='=' read -r name value; do
    if [[ -z "${!name+set}" ]]; then
        export "${name}=${value}"
    fi
done < <(sed -n 's/^export //p' configs/ray.env)

# RAY_NUM_CPUS: logical CPUs Ray may hand out (default: the container's). Replicas ask
# for logical CPUs (configs/*.yaml), so a small host can still start a larger profile.
# Ray's metrics agent answers on 8080 for Prometheus; the rest of Ray stays inside.
ray start --head --disable-usage-stats --port=6379 --dashboard-host=127.0.0.1 \
    --metrics-export-port=8080 ${RAY_NUM_CPUS:+"--num-cpus=${RAY_NUM_CPUS}"}

# `serve run` stays in the foreground as the container's main process; SIGINT (the
# image's STOPSIGNAL) makes it shut the application down gracefully.
exec serve run --address=127.0.0.1:6379 "${SERVE_CONFIG}"
