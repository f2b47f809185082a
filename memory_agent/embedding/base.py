"""What every embedder shares: the bundled model's name, row normalisation, offline settings, the factory.

Every embedder returns ``(n, dim)`` float32 rows, L2-normalised, so cosine similarity is an inner
product (the :class:`memory_agent.protocols.Embedder` seam). :func:`load_embedder` picks the backend the
config names: :mod:`memory_agent.embedding.sbert` (torch) or :mod:`memory_agent.embedding.onnx`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from memory_agent.errors import ConfigError

if TYPE_CHECKING:
    from memory_agent.config import EmbeddingConfig
    from memory_agent.protocols import Embedder

__all__ = ["DEFAULT_MODEL_NAME", "load_embedder", "normalize_rows"]

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"

# huggingface_hub reads these when first imported: set them before anything imports it, so nothing is
# fetched at run time (a value already in the environment wins).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# No progress bars from Hugging Face libraries ("Loading weights: 100%|...") in a daemon's log; the
# commands that show progress (reindex, import, export) draw their own.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# OpenMP threads (torch's, faiss's) sleep when idle instead of spinning, read once when the runtime
# loads: the model shares the cores with the event loop and nats-server (docs/benchmarks.md#design-threads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm as float32; all-zero rows stay zero."""
    out = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


def load_embedder(config: EmbeddingConfig, *, data_dir: Path) -> Embedder:
    """The embedder ``config`` describes: its ``model``, ``backend``, ``device`` and ``threads``.

    Blocking (loads the model; the first start with an ONNX backend also exports it, a few seconds,
    into ``embedding.models_dir``, by default ``<data_dir>/models/``). The result's ``name`` is the model
    name stored with each vector: the same for ``torch`` and ``onnx``, ``<name>+onnx-int8`` for int8 (see
    :mod:`memory_agent.embedding.onnx`). Raises ``ConfigError`` when the model or backend cannot load.
    """
    model = config.model or None
    if config.backend == "torch":
        from memory_agent.embedding.sbert import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder(model, device=config.device, threads=config.threads)
    from memory_agent.embedding.onnx import OnnxEmbedder

    if config.device != "cpu":
        raise ConfigError(
            f"embedding.device = {config.device!r}: the ONNX backends run on the CPU; "
            'set device = "cpu" or backend = "torch"',
            key="embedding.device",
        )
    models_dir = Path(config.models_dir) if config.models_dir else Path(data_dir) / "models"
    return OnnxEmbedder(model, backend=config.backend, models_dir=models_dir, threads=config.threads)
