# @memory in a container: the daemon and its embedded nats-server (JetStream, port 4222). The bundled
# all-MiniLM-L6-v2 is exported to ONNX at build time and run by ONNX Runtime: no torch at run time.
#
#   docker build -t mesh-memory .                      (podman: podman build --format docker -t mesh-memory .)
#   docker run -p 4222:4222 -v memory-data:/data mesh-memory
#   docker compose up                                   (with a separate nats-server, see compose.yaml)
#
# Build arguments, all optional:
#   BASE_IMAGE          a Debian-like image with python3 (3.11+) and its venv module; both stages use it.
#                       bench/container.py builds a Debian bookworm one with mmdebstrap where no registry
#                       can be reached.
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, PIP_CERT
#                       pip's own settings for every install in the build; empty = pip's defaults. A local
#                       wheel directory or CA bundle must be mounted into the build (podman build -v).
#   TORCH_INDEX_URL     where the builder's CPU-only torch comes from; empty = the pip settings above
#                       (then give PIP_FIND_LINKS or an index holding a +cpu wheel: PyPI's pulls CUDA).
#   TORCH_VERSION       the torch release the builder exports with.
#   EMBEDDING_BACKEND   onnx (fp32: vectors interchangeable with torch's, runs on any CPU) or onnx-int8
#                       (int8 weights: faster, vectors of their own; quantised for the build machine's CPU
#                       kind, so build on a CPU without VNNI to run it everywhere; see docs/benchmarks.md).
ARG BASE_IMAGE=python:3.11-slim

# --- builder: two virtual environments; torch only in the one that exports -----------------------------
FROM ${BASE_IMAGE} AS builder
ARG PIP_INDEX_URL=
ARG PIP_EXTRA_INDEX_URL=
ARG PIP_FIND_LINKS=
ARG PIP_CERT=
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
ARG EMBEDDING_BACKEND=onnx
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    HF_HUB_OFFLINE=1 \
    HF_HUB_DISABLE_PROGRESS_BARS=1

# /opt/export: torch (CPU build) + sentence-transformers + onnx, used once to export the model.
RUN python3 -m venv /opt/export \
 && /opt/export/bin/pip install ${TORCH_INDEX_URL:+--index-url=$TORCH_INDEX_URL} "torch==${TORCH_VERSION}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY mesh ./mesh
COPY memory_agent ./memory_agent

# /opt/memory-agent: what the runtime stage copies: mesh-memory with [onnx-runtime] (onnxruntime and
# tokenizers, no torch) and, under models/, the self-contained export (model.onnx, tokenizer.json,
# export.json) that embedding.models_dir points at. pip and setuptools are not needed at run time.
RUN python3 -m venv /opt/memory-agent \
 && /opt/memory-agent/bin/pip install ".[onnx-runtime]" \
 && /opt/memory-agent/bin/pip check \
 && /opt/export/bin/pip install ".[onnx]" \
 && /opt/export/bin/memory-agent export-onnx --backend "${EMBEDDING_BACKEND}" --models-dir /opt/memory-agent/models \
 && /opt/memory-agent/bin/pip uninstall --yes --quiet pip setuptools \
 && if /opt/memory-agent/bin/python -c "import torch" 2>/dev/null; then echo "torch leaked into the runtime" >&2; exit 1; fi

# --- runtime ---------------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
ARG EMBEDDING_BACKEND=onnx
LABEL org.opencontainers.image.title="mesh-memory" \
      org.opencontainers.image.description="@memory: remembers what an agent mesh reports and answers questions about it" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/memory-agent/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    MEMORY_AGENT_DATA_DIR=/data \
    MEMORY_AGENT_EMBEDDED_NATS_HOST=0.0.0.0 \
    MEMORY_AGENT_EMBEDDING__BACKEND=${EMBEDDING_BACKEND} \
    MEMORY_AGENT_EMBEDDING__MODELS_DIR=/opt/memory-agent/models \
    MEMORY_AGENT_HTTP__LISTEN=0.0.0.0:9464

COPY --from=builder /opt/memory-agent /opt/memory-agent
RUN useradd --system --uid 10001 --no-create-home --home-dir /data --shell /usr/sbin/nologin memory \
 && mkdir -p /data && chown memory /data
USER memory
WORKDIR /data
VOLUME ["/data"]
# The embedded nats-server, used while MEMORY_AGENT_NATS_URL is empty (agents connect here).
EXPOSE 4222
# Metrics (/metrics) and health (/healthz, /readyz). Bound beyond loopback, the timeline page stays off
# unless MEMORY_AGENT_HTTP__TOKEN_FILE or MEMORY_AGENT_HTTP__TOKEN_ENV names a token.
EXPOSE 9464

# Exit 0 only if @memory is ready (/readyz: NATS connected, handle registered, store open, index loaded,
# embedder ready or degraded). Readiness never waits behind a backlog of reports.
HEALTHCHECK --interval=30s --timeout=15s --start-period=60s --retries=3 \
    CMD ["memory-agent", "check", "--timeout", "10"]

CMD ["memory-agent", "run"]
