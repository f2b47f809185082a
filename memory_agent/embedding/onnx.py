"""ONNX Runtime embedders: a sentence-transformers model exported to ONNX once, optionally int8, and cached.

Backends (``[embedding] backend``):

- ``"onnx"``: the model's transformer exported to ONNX in fp32. Its vectors equal torch's up to float
  rounding (cosine > 0.9999), so they carry the same model name and mix freely with torch's.
- ``"onnx-int8"``: that export with its weights dynamically quantised to int8. Its vectors are close to
  fp32's (cosine about 0.99) but not equal, so they are stored under the model name ``<name>+onnx-int8``
  and a store holding the other kind must be re-embedded (``memory-agent reindex``).

The export (:mod:`memory_agent.embedding.onnx_export`) runs on the first start and is cached in
``<models_dir>/<name>-<backend>/``; later starts reuse it while its manifest still matches, and a
missing, partial, corrupt or outdated cache is rebuilt; the log says which and why. Where the source
model is not installed (an install without torch, such as the container image), a self-contained export
already in ``models_dir`` is run as it is (:func:`memory_agent.embedding.onnx_export.read_export`). Pooling and
normalisation follow the model's sentence-transformers modules (mean or CLS pooling, then L2
normalisation), computed in numpy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memory_agent.embedding.base import DEFAULT_MODEL_NAME, normalize_rows
from memory_agent.embedding.onnx_export import (
    MODEL_FILE,
    ONNX_BACKENDS,
    TOKENIZER_FILE,
    Quantization,
    SourceModel,
    cache_dir_for,
    cache_problem,
    cpu_quantization,
    expected_manifest,
    export_model,
    pad,
    pool,
    read_export,
    read_source,
    vector_model_name,
)
from memory_agent.errors import ConfigError

__all__ = [
    "ONNX_BACKENDS",
    "OnnxEmbedder",
    "Quantization",
    "SourceModel",
    "cache_dir_for",
    "cpu_quantization",
    "read_source",
    "vector_model_name",
]

log = logging.getLogger(__name__)


class OnnxEmbedder:
    """A sentence-transformers model run by ONNX Runtime on the CPU: fp32 (``"onnx"``) or int8 (``"onnx-int8"``).

    ``models_dir`` holds the cached export (``embedding.models_dir``, by default ``<data_dir>/models``, in
    the daemon); without the source model (``model`` not found, or the bundled one not installed) a
    self-contained export there is run as it is, never re-exported (``prebuilt`` is then True). ``threads`` is ONNX
    Runtime's intra-op thread count (0 = one per core). ``batch_size`` texts of similar length are run
    per inference call. After construction ``cache_status`` says whether the export was reused or
    built (and why), ``model_path`` where it lives. Raises ConfigError when onnxruntime/onnx are not
    installed (the ``onnx`` extra), the model is unsupported, or the export fails its check.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        backend: str = "onnx-int8",
        models_dir: Path,
        threads: int = 0,
        batch_size: int = 64,
    ) -> None:
        if backend not in ONNX_BACKENDS:
            raise ConfigError(f"embedding.backend {backend!r} is not an ONNX backend: use one of {ONNX_BACKENDS}", key="embedding.backend")
        if batch_size < 1:
            raise ConfigError(f"embedder batch_size must be >= 1, got {batch_size}")
        try:
            import onnxruntime
            import tokenizers
        except ImportError as exc:
            raise ConfigError(
                f"embedding.backend = {backend!r} needs onnxruntime and tokenizers: pip install "
                '"mesh-memory[onnx]" (or "mesh-memory[onnx-runtime]" to run an export made elsewhere), '
                'or set embedding.backend = "torch"',
                key="embedding.backend",
            ) from exc
        self.backend = backend
        self.batch_size = batch_size
        quantization = cpu_quantization() if backend == "onnx-int8" else None
        try:
            self.source = read_source(model)
            self.prebuilt = False
        except ConfigError as missing:
            name = model or DEFAULT_MODEL_NAME
            try:
                self.source, quantization = read_export(
                    cache_dir_for(models_dir, name, backend), name, backend, quantization
                )
            except ConfigError as unusable:
                raise ConfigError(f"{missing}; nor can an export made elsewhere be run instead: {unusable}") from missing
            self.prebuilt = True
        self.name = vector_model_name(self.source.name, backend)
        self.dim = self.source.dim
        self.quantization = quantization
        self.model_path = cache_dir_for(models_dir, self.source.name, backend) / MODEL_FILE
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        # Idle intra-op threads sleep instead of spinning: the daemon's event loop and nats-server share
        # the cores (docs/benchmarks.md#design-threads).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._options = options
        self._session: Any = None  # set by _load_cached
        self.cache_status = ""
        reason = self._load_cached()
        if reason is not None and self.prebuilt:
            raise ConfigError(
                f"the ONNX export in {self.model_path.parent} cannot be run ({reason}), and the source model "
                'to export it again is not installed (pip install "mesh-memory[onnx]")'
            )
        if self.prebuilt:
            self.cache_status = f"running the export in {self.model_path.parent} (source model not installed)"
        if reason is not None:
            started = time.perf_counter()
            try:
                check = export_model(self.source, backend, self.quantization, self.model_path.parent, options)
            except ConfigError:
                raise
            except Exception as exc:  # the exporter or the quantiser failed: the torch backend still works
                raise ConfigError(
                    f"exporting {self.source.name!r} to ONNX ({backend}) into {self.model_path.parent} failed "
                    f"({type(exc).__name__}: {exc}); set embedding.backend = \"torch\"",
                    key="embedding.model",
                ) from exc
            status = (
                f"{reason}: exported {self.source.name} to {self.model_path.parent} ({backend}) in "
                f"{time.perf_counter() - started:.1f} s, cosine to torch on probes >= {check:.4f}"
            )
            failed = self._load_cached()
            if failed is not None:
                raise ConfigError(f"the ONNX export at {self.model_path.parent} cannot be read back: {failed}", key="embedding.model")
            self.cache_status = status
        log.info("embedder %s: %s", self.name, self.cache_status)
        session: Any = self._session
        self._inputs = {i.name for i in session.get_inputs()}
        tokenizer = tokenizers.Tokenizer.from_file(str(self.source.path / TOKENIZER_FILE))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=self.source.max_seq_length)
        self._tokenizer = tokenizer
        #: Tokens the model reads of a text (the rest is cut by the tokenizer).
        self.max_tokens = int(self.source.max_seq_length)

    # --- cache --------------------------------------------------------------------------------

    def _load_cached(self) -> str | None:
        """Open the cached export if it matches; else return why it has to be (re)built."""
        import onnxruntime

        folder = self.model_path.parent
        problem = cache_problem(folder, expected_manifest(self.source, self.backend, self.quantization))
        if problem is not None:
            return problem
        try:
            self._session = onnxruntime.InferenceSession(
                str(self.model_path), self._options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ONNX Runtime rejects the graph
            return f"cached export corrupt ({type(exc).__name__})"
        self.cache_status = f"reused cached export {folder}"
        return None

    # --- encoding -----------------------------------------------------------------------------

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32, L2-normalised. Blocking (runs the model; releases the GIL).

        Texts are tokenised once, sorted by token count and run ``batch_size`` at a time, each batch
        padded only to its longest text (as sentence-transformers does).
        """
        n = len(texts)
        out = np.zeros((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        encodings = self._tokenizer.encode_batch(list(texts))
        order = sorted(range(n), key=lambda i: len(encodings[i].ids))
        for start in range(0, n, self.batch_size):
            rows = order[start : start + self.batch_size]
            batch = pad([encodings[i] for i in rows])
            hidden = self._session.run(None, {k: v for k, v in batch.items() if k in self._inputs})[0]
            out[rows] = pool(hidden, batch["attention_mask"], self.source.pooling)
        return normalize_rows(out)
