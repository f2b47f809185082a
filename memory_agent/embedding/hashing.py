"""A tiny deterministic embedder for tests and benchmarks of everything but the model: no torch."""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import numpy as np

from memory_agent.embedding.base import normalize_rows
from memory_agent.errors import ConfigError

__all__ = ["HashingEmbedder"]

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
