"""Texts to vectors: the bundled MiniLM (torch in :mod:`.sbert`, ONNX Runtime in :mod:`.onnx`), a hashing
embedder for tests, and the batching front that keeps the model off the event loop. The torch and ONNX
backends are imported by :func:`load_embedder` only when configured."""

from memory_agent.embedding.base import DEFAULT_MODEL_NAME, load_embedder, normalize_rows
from memory_agent.embedding.batching import BatchingEmbedder
from memory_agent.embedding.hashing import HashingEmbedder

__all__ = ["DEFAULT_MODEL_NAME", "BatchingEmbedder", "HashingEmbedder", "load_embedder", "normalize_rows"]
